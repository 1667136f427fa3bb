"""The Darknet trainer (darknet/trainer.py): subdivisions, seen and the policy's batch number,
checkpoints, --clear, history, and the CLI on a tiny image folder."""
import argparse
import json

import numpy as np
import pytest

import deltaprop as dp
import deltaprop.darknet as dn
from conftest import rel_err
from deltaprop.darknet.trainer import DarknetTrainer, one_hot
from deltaprop.errors import ConfigError

NO_BN = """[net]
batch=8
subdivisions={sub}
width=6
height=6
channels=2
learning_rate=0.05
momentum=0.9
decay=0.001
policy=steps
steps=2,3
scales=.5,.1
burn_in=2
max_batches=6

[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky
{bn}
[maxpool]
size=2
stride=2

[connected]
output=3
activation=linear
learning_rate=0.5

[softmax]
"""


def _net(sub, bn=False, dtype=np.float64):
    dp.manual_seed(5)
    return dn.load_cfg_text(NO_BN.format(sub=sub, bn="batch_normalize=1" if bn else ""), dtype=dtype)


def _data(n=8, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 2, 6, 6)), one_hot(r.integers(0, 3, n), 3, np.float64)


def test_subdivisions_1_vs_4_same_update():
    a, b = _net(1), _net(4)
    b.load_state_dict(a.state_dict())
    ta, tb = DarknetTrainer(a), DarknetTrainer(b)
    assert (tb.batch, tb.mini_batch, tb.subdivisions) == (8, 2, 4)
    for step in range(3):
        X, T = _data(seed=step)
        ra, rb = ta.train_step(X, T), tb.train_step(X, T)
        assert ra.lr == rb.lr and ra.batch_num == rb.batch_num == step + 1
        assert ra.loss == pytest.approx(rb.loss, rel=1e-12)
        assert a.seen == b.seen == 8 * (step + 1)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert rel_err(p.data, q.data) < 1e-12, n


def test_update_rule_and_schedule_by_hand():
    """Two steps re-derived from Darknet's rules (docs/equations.md §10): lr of batch n (burn_in 2, power 4, then steps), decay·B on
    weights only, momentum on the summed update, lr/B, and the layer's learning_rate scale (0.5)."""
    net = _net(1)
    tr = DarknetTrainer(net)
    W = {n: p.data.copy() for n, p in net.named_parameters()}
    U = {n: np.zeros_like(v) for n, v in W.items()}
    for step in range(4):
        X, T = _data(seed=10 + step)
        ref = _net(1)
        ref.load_state_dict({**net.state_dict()})
        ref.train()
        ref(X)
        from deltaprop.darknet.train_loss import network_loss
        network_loss(ref, X, T)
        grads = {n: p.grad for n, p in ref.named_parameters()}
        res = tr.train_step(X, T)
        nb = step + 1
        lr = 0.05 * (nb / 2) ** 4 if nb < 2 else 0.05 * (0.5 if nb >= 2 else 1) * (0.1 if nb >= 3 else 1)
        assert res.lr == pytest.approx(lr, rel=1e-6)
        for n in W:
            scale = 0.5 if n.startswith("2.") else 1.0
            U[n] += -grads[n]
            if W[n].ndim >= 2:
                U[n] += -0.001 * 8 * W[n]
            W[n] = W[n] + (res.lr * scale / 8) * U[n]
            U[n] *= 0.9
        for n, p in net.named_parameters():
            assert rel_err(p.data, W[n]) < 1e-12, (step, n)


def test_bn_subdivisions_update_rolling_stats_per_sub_batch():
    """With subdivisions, batch norm normalises each sub-batch with its own statistics and the rolling
    statistics move once per sub-batch (as in Darknet): 4 sub-batches, 4 updates 0.99·r + 0.01·stat."""
    from deltaprop.functional.conv import conv2d_forward
    net = _net(4, bn=True)
    tr = DarknetTrainer(net)
    X, T = _data()
    W0 = net.layers[0].weight.data.copy()
    tr.train_step(X, T)
    rm, rv = np.zeros(4), np.zeros(4)
    for s in range(4):
        z = conv2d_forward(X[2 * s:2 * s + 2], W0, None, stride=1, padding=1)[0]
        zs = z.transpose(1, 0, 2, 3).reshape(4, -1)
        rm = 0.99 * rm + 0.01 * zs.mean(1)
        rv = 0.99 * rv + 0.01 * zs.var(1, ddof=1)
    bn = net.layers[0].bn
    assert rel_err(bn.running_mean, rm) < 1e-12 and rel_err(bn.running_var, rv) < 1e-12


def test_fit_checkpoints_history_and_clear(tmp_path):
    net = _net(2, dtype=np.float32)
    tr = DarknetTrainer(net)
    r = np.random.default_rng(1)
    X = r.standard_normal((40, 2, 6, 6)).astype(np.float32)
    y = r.integers(0, 3, 40)
    hist = tr.fit(X, y, 3, out_dir=tmp_path, base="tiny", save_every=2, log_every=1, progress=False,
                  log=lambda s: None)
    assert [h["batch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert [h["seen"] for h in hist] == [8 * k for k in range(1, 7)]
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(hist))
    assert sorted(p.name for p in tmp_path.glob("*.weights")) == ["tiny_2.weights", "tiny_4.weights",
                                                                   "tiny_final.weights", "tiny_last.weights"]
    back = dn.load_cfg_text(NO_BN.format(sub=2, bn=""), (tmp_path / "tiny_final.weights").read_bytes())
    assert back.seen == 48
    for p, q in zip(net.parameters(), back.parameters()):
        assert np.array_equal(p.data, q.data)
    # resuming from the batch-4 checkpoint continues at batch 5 (seen in the header); --clear restarts at 0
    mid = dn.load_cfg_text(NO_BN.format(sub=2, bn=""), (tmp_path / "tiny_4.weights").read_bytes())
    assert DarknetTrainer(mid).current_batch == 4
    h2 = DarknetTrainer(mid).fit(X, y, 3, progress=False, log=lambda s: None, log_every=1)
    assert [h["batch"] for h in h2] == [5, 6]
    object.__setattr__(mid, "seen", 0)
    assert DarknetTrainer(mid).current_batch == 0


def test_no_loss_layer_or_max_batches_is_an_error():
    text = NO_BN.format(sub=1, bn="").replace("[softmax]\n", "")
    with pytest.raises(ConfigError, match="no loss layer"):
        DarknetTrainer(dn.load_cfg_text(text))
    tr = DarknetTrainer(_net(1), max_batches=0)
    with pytest.raises(ConfigError, match="max_batches"):
        tr.fit(*_data(), 3, progress=False)


def test_cli_on_an_image_folder(tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image
    from deltaprop.cli import main
    r = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for k, name in enumerate(["a", "b", "c"]):
            d = tmp_path / "imgs" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(r.normal(60 + 70 * k, 20, (9, 9)), 0, 255).astype(np.uint8)
                Image.fromarray(np.stack([img, img], -1)[..., 0]).save(d / f"{i}.png")
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(NO_BN.format(sub=2, bn="batch_normalize=1").replace("channels=2", "channels=1"))
    rc = main(["train", "--cfg", str(cfg), "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"),
               "--no-progress", "--epochs", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "image folder" in out and "test accuracy" in out
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["batches"] == 9 and res["seen"] == 72          # ⌈2·36/8⌉ batches
    assert (tmp_path / "run" / "tiny_final.weights").is_file()
    # --weights with --clear starts counting again
    rc = main(["train", "--cfg", str(cfg), "--weights", str(tmp_path / "run" / "tiny_final.weights"), "--clear",
               "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run2"), "--no-progress", "--epochs", "1"])
    assert rc == 0 and json.loads((tmp_path / "run2" / "result.json").read_text())["seen"] == 40   # ⌈36/8⌉ = 5


def test_fit_evaluates_keeps_the_best_and_resumes_exactly(tmp_path):
    """eval_data every 2 batches (records, `_best`), then a run stopped at batch 3 by Ctrl-C and resumed from
    its `_last` ends with the uninterrupted run's weights, byte for byte."""
    import signal
    from deltaprop.training import TrainingInterrupted
    r = np.random.default_rng(2)
    X = r.standard_normal((40, 2, 6, 6)).astype(np.float32)
    y = r.integers(0, 3, 40)
    kw = dict(base="tiny", save_every=2, log_every=1, eval_data=(X[:8], y[:8]), eval_every=2, progress=False,
              log=lambda s: None)
    hist = DarknetTrainer(_net(2, dtype=np.float32)).fit(X, y, 3, out_dir=tmp_path / "a", **kw)
    evals = [h for h in hist if "eval_acc" in h]
    assert [h["batch"] for h in evals] == [2, 4, 6] and all(0 <= h["eval_acc"] <= 1 for h in evals)
    assert (tmp_path / "a" / "tiny_best.weights").is_file() and (tmp_path / "a" / "tiny_best.state.npz").is_file()
    tr = DarknetTrainer(_net(2, dtype=np.float32))
    step, calls = tr.optimizer.step, [0]

    def interrupting(*a, **k):
        step(*a, **k)
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGINT)
    object.__setattr__(tr.optimizer, "step", interrupting)
    with pytest.raises(TrainingInterrupted) as e:
        tr.fit(X, y, 3, out_dir=tmp_path / "b", **kw)
    assert e.value.checkpoint == tmp_path / "b" / "tiny_last.state.npz" and e.value.batch == 3
    again = DarknetTrainer(_net(2, dtype=np.float32))           # a fresh process: other momentum, seen 0
    again.fit(X, y, 3, out_dir=tmp_path / "b", resume=tmp_path / "b" / "tiny_last.weights", **kw)
    for name in ("tiny_final.weights", "tiny_4.weights", "tiny_best.weights"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    untimed = [{k: v for k, v in h.items() if k not in ("images_per_s", "elapsed_s")} for h in hist]
    lines = [json.loads(s) for s in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in h.items() if k not in ("images_per_s", "elapsed_s")} for h in lines] == untimed
