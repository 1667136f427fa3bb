"""The fit loop: learning, history, checkpoints, early stopping, exact resume, and the guards."""
import json
import math

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import io, models, nn, optim
from deltaprop.data import DataLoader
from deltaprop.errors import CheckpointError, DivergenceError, NonFiniteError
from deltaprop.train import diagnose_nonfinite, evaluate, fit


def _blobs(n=240, d=8, c=3, seed=0):
    """Linearly separable-ish clusters: a tiny classification task."""
    g = np.random.default_rng(seed)
    centres = g.standard_normal((c, d)) * 3
    y = g.integers(0, c, size=n)
    X = (centres[y] + g.standard_normal((n, d))).astype(np.float32)
    return X, y.astype(np.int64)


def _net(seed=0, dropout=0.0):
    dp.manual_seed(seed)
    layers = [nn.Linear(8, 16), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(16, 3))


def test_fit_learns_and_writes_history(tmp_path):
    X, y = _blobs()
    m = _net()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    hist = fit(m, nn.CrossEntropyLoss(), opt, (X[:200], y[:200]), (X[200:], y[200:]), epochs=4,
               batch_size=32, out_dir=tmp_path, progress=False, log=None)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] and hist[-1]["val_acc"] > 0.9
    assert hist[-1]["step"] == 4 * 7
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert lines == hist
    for name in ("last.npz", "best.npz"):
        ck = io.read_checkpoint(tmp_path / name)
        assert ck.optimizer_state is not None and ck.rng_state is not None
    assert io.read_checkpoint(tmp_path / "last.npz").epoch == 4
    loss, acc = evaluate(m, (X[200:], y[200:]), loss=nn.CrossEntropyLoss())
    assert loss == hist[-1]["val_loss"] and acc == hist[-1]["val_acc"]
    ce, _ = evaluate(m, (X[200:], y[200:]))  # the default: cross-entropy of the logits in float64
    assert math.isclose(ce, loss, rel_tol=1e-2, abs_tol=1e-6)


def _strip_times(hist):
    return [{k: v for k, v in h.items() if k not in ("train_time_s", "samples_per_s")} for h in hist]


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_resume_is_bit_identical(tmp_path, opt_name):
    X, y = _blobs()
    loader_args = dict(batch_size=16, shuffle=True, seed=5)

    def run(out, epochs, resume=None, init_seed=0):
        m = _net(init_seed, dropout=0.2)  # dropout: the RNG state must be restored too
        if opt_name == "sgd":
            opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        else:
            opt = optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.01)
        steps = len(DataLoader(X[:200], y[:200], **loader_args))
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3 * steps)
        h = fit(m, nn.CrossEntropyLoss(), opt, DataLoader(X[:200], y[:200], **loader_args), (X[200:], y[200:]),
                epochs=epochs, scheduler=sched, scheduler_interval="step", out_dir=out, resume=resume,
                progress=False, log=None)
        return m, opt, h

    full, opt_full, h_full = run(tmp_path / "full", 3)
    run(tmp_path / "part", 2)
    # a fresh process would build the model with other weights: the checkpoint must overwrite everything
    resumed, opt_res, h_res = run(tmp_path / "part", 3, resume=tmp_path / "part" / "last.npz", init_seed=99)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert np.array_equal(a, b), k
    sa, sb = opt_full.state_dict(), opt_res.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for key, v in sa["state"][i].items():
            assert np.array_equal(v, sb["state"][i][key]), (i, key)
    assert _strip_times(h_full) == _strip_times(h_res)
    lines = (tmp_path / "part" / "history.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]


def test_resume_into_other_architecture(tmp_path):
    X, y = _blobs()
    m = _net()
    fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), (X, y), epochs=1, out_dir=tmp_path,
        progress=False, log=None)
    other = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    with pytest.raises(CheckpointError, match="does not fit|another architecture"):
        fit(other, nn.CrossEntropyLoss(), optim.SGD(other.parameters(), lr=0.1), (X, y), epochs=2,
            resume=tmp_path / "last.npz", progress=False, log=None)


def test_nan_batch_is_named():
    X, y = _blobs(64)
    X[37, 2] = np.nan
    m = _net()
    with pytest.raises(NonFiniteError, match=r"batch 2 of epoch 1 \(step 3\)"):
        fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), DataLoader(X, y, batch_size=16),
            epochs=1, progress=False, log=None)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_divergence_names_step_and_layer():
    X, y = _blobs()
    m = _net()
    opt = optim.SGD(m.parameters(), lr=1e18)
    with pytest.raises(DivergenceError) as e:
        fit(m, nn.CrossEntropyLoss(), opt, (X, y), epochs=5, batch_size=32, progress=False, log=None)
    err = e.value
    assert err.step >= 2 and f"step {err.step}" in str(err)
    assert err.layer in {"0", "1", "2"} and f"layer '{err.layer}'" in str(err)
    assert "lower the learning rate (now 1e+18)" in str(err)


def test_diagnose_finds_first_bad_layer():
    m = _net()
    x, y = _blobs(8)
    m[2].weight.data[0, 0] = np.inf            # the last Linear's weight is broken
    rep = diagnose_nonfinite(m, nn.CrossEntropyLoss(), x, y)
    assert rep["bad_params"] == ["2.weight"] and rep["forward"] == ("2", "Linear")
    m = _net()
    m[0].bias.data[:] = np.nan
    rep = diagnose_nonfinite(m, nn.CrossEntropyLoss(), x, y)
    assert rep["forward"] == ("0", "Linear")
    assert m[0].bias.grad is None  # the diagnosis leaves gradients as they were


def test_early_stopping_and_best(tmp_path):
    X, y = _blobs()
    m = _net()
    opt = optim.SGD(m.parameters(), lr=0.0)   # nothing improves after the first epoch
    hist = fit(m, nn.CrossEntropyLoss(), opt, (X[:200], y[:200]), (X[200:], y[200:]), epochs=10, patience=2,
               out_dir=tmp_path, progress=False, log=None)
    assert len(hist) == 3
    assert io.read_checkpoint(tmp_path / "best.npz").epoch == 1
    assert io.read_checkpoint(tmp_path / "last.npz").epoch == 3


def test_evaluate_in_eval_mode_without_caches():
    X, y = _blobs(50)
    m = _net(dropout=0.5)
    m.train()
    l1, a1 = evaluate(m, (X, y), batch_size=7)
    l2, a2 = evaluate(m, DataLoader(X, y, batch_size=50))
    assert m.training and all(mod._cache is None for mod in m.modules())
    assert math.isclose(l1, l2, rel_tol=1e-6) and a1 == a2  # dropout off: deterministic
    m.eval()
    logits = m(X).astype(np.float64)
    assert a1 == np.mean(logits.argmax(1) == y)


def test_progress_bar_runs(capsys):
    X, y = _blobs(64)
    m = _net()
    fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), (X, y), epochs=1, progress=True)
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "samples/s" in captured.out


def test_mlp_skips_the_input_gradient():
    """The first Linear (after the Flatten) computes no input gradient; every parameter still gets one."""
    from deltaprop.errors import BackwardError
    m = models.build("mlp", hidden=[6])
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    out = m(x)
    assert m.backward(np.ones_like(out)) is None
    assert all(p.grad is not None for p in m.parameters())
    bad = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    bad[2].needs_input_grad = False
    bad(np.ones((2, 4), np.float32))
    with pytest.raises(BackwardError, match="layer '0' before it has trainable parameters"):
        bad.backward(np.ones((2, 2), np.float32))
