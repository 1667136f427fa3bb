"""Checkpoints: round trips without pickle, architecture rebuild, mismatches, corrupt files, atomic writes."""
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import io, models, nn
from deltaprop.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


class FakeOptimizer:
    """The optimizer state format: param_groups with int indices, per-index state with arrays."""

    def __init__(self):
        self.state = {0: {"step": 3, "momentum_buffer": np.arange(4.0, dtype=np.float32)},
                      1: {"step": 3, "exp_avg": np.ones((2, 2))}}
        self.groups = [{"lr": 0.1, "betas": (0.9, 0.999), "weight_decay": 0.0, "nesterov": False,
                        "params": [0, 1]}]

    def state_dict(self):
        return {"param_groups": self.groups, "state": self.state}

    def load_state_dict(self, sd):
        self.loaded = sd


def _equal_states(a, b):
    return list(a) == list(b) and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_round_trip_everything(tmp_path):
    dp.manual_seed(0)
    m = models.build("mlp", hidden=[16])
    opt = FakeOptimizer()
    hist = [{"epoch": 1, "train_loss": 0.5, "val_acc": None}]
    rng_before = dp.backend.get_rng_state()
    p = io.save_checkpoint(tmp_path / "c.npz", m, opt, epoch=4, step=40, history=hist,
                           extra={"preprocess": {"scale": 1 / 255}})
    dp.backend.rng().random(10)  # move the generator on
    opt2 = FakeOptimizer()
    ck = io.load_checkpoint(p, optimizer=opt2, restore_rng=True)
    assert dp.backend.get_rng_state() == rng_before
    assert ck.epoch == 4 and ck.step == 40 and ck.history == hist and ck.extra["preprocess"]["scale"] == 1 / 255
    assert _equal_states(m.state_dict(), ck.model.state_dict())
    assert ck.architecture["kind"] == "registry" and ck.architecture["kwargs"] == {"hidden": [16]}
    sd = opt2.loaded
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999) and sd["param_groups"][0]["params"] == [0, 1]
    assert set(sd["state"]) == {0, 1}  # integer keys survive JSON
    assert sd["state"][0]["momentum_buffer"].dtype == np.float32
    np.testing.assert_array_equal(sd["state"][1]["exp_avg"], np.ones((2, 2)))
    with np.load(p, allow_pickle=False) as z:  # a plain npz, readable without pickle
        assert "model/1.weight" in z.files


def test_generic_sequential_rebuilt_from_file_alone(tmp_path):
    s = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Sequential(nn.Linear(4, 2, bias=False), nn.Sigmoid(2.0)))
    s.double()
    io.save_model(tmp_path / "s.npz", s)
    s2 = io.load_model(tmp_path / "s.npz")
    assert repr(s2) == repr(s) and s2.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(s(x), s2(x))


def test_other_architecture_is_refused(tmp_path):
    io.save_model(tmp_path / "a.npz", models.build("mlp", hidden=[8]))
    with pytest.raises(CheckpointError, match=r"hidden|\[8\]"):
        io.load_checkpoint(tmp_path / "a.npz", model=models.build("mlp", hidden=[9]))
    other = nn.Sequential(nn.Linear(784, 8), nn.Tanh(), nn.Linear(8, 10))
    with pytest.raises(CheckpointError, match="does not fit"):
        io.load_checkpoint(tmp_path / "a.npz", model=other)
    io.save_model(tmp_path / "b.npz", nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    with pytest.raises(CheckpointError, match="Tanh.*ReLU|ReLU.*Tanh"):
        io.load_checkpoint(tmp_path / "b.npz", model=nn.Sequential(nn.Linear(3, 4), nn.Tanh()))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "no_meta"])
def test_corrupt_files(tmp_path, damage):
    p = io.save_model(tmp_path / "m.npz", models.build("mlp", hidden=[32]))
    raw = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        b = bytearray(raw)
        b[len(b) // 3] ^= 0xFF  # inside an array's data: caught by the CRC check
        p.write_bytes(bytes(b))
    elif damage == "garbage":
        p.write_bytes(os.urandom(1000))
    elif damage == "empty":
        p.write_bytes(b"")
    else:
        np.savez(p, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="m.npz"):
        io.load_model(p)


def test_pickled_member_is_refused(tmp_path):
    p = tmp_path / "evil.npz"
    np.savez(p, __meta__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError):
        io.load_model(p)


def test_darknet_hook(tmp_path, monkeypatch):
    """A model carrying a darknet_cfg architecture is planned, then rebuilt by deltaprop.darknet.load_cfg_text."""
    from deltaprop import darknet
    seen = {}
    real = darknet.load_cfg_text

    def load_cfg_text(text, **kw):
        seen["text"] = text
        return real(text, **kw)
    cfg = "[net]\nwidth=2\nheight=1\nchannels=1\n[connected]\noutput=2\nactivation=linear\n"
    m = darknet.load_cfg_text(cfg)
    io.save_model(tmp_path / "d.npz", m)
    monkeypatch.setattr(darknet, "load_cfg_text", load_cfg_text)
    m2 = io.load_model(tmp_path / "d.npz")
    assert seen["text"] == m.cfg_text()
    np.testing.assert_array_equal(m2.state_dict()["0.weight"], m.state_dict()["0.weight"])


_WRITER = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
from deltaprop import io, nn
m = nn.Sequential(nn.Linear(700, 700), nn.ReLU(), nn.Linear(700, 300))
v = 0
print("ready", flush=True)
while True:
    v += 1
    for p in m.parameters():
        p.data[...] = v
    io.save_checkpoint({path!r}, m, epoch=v, extra={{"version": v}})
"""


def test_kill_during_write_never_corrupts(tmp_path):
    path = tmp_path / "ck.npz"
    m = nn.Sequential(nn.Linear(700, 700), nn.ReLU(), nn.Linear(700, 300))
    for p in m.parameters():
        p.data[...] = 0
    io.save_checkpoint(path, m, epoch=0, extra={"version": 0})
    r = random.Random(1234)
    seen = set()
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(root=str(ROOT), path=str(path))],
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(r.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        ck = io.read_checkpoint(path)          # never raises: old or new file, whole
        v = ck.extra["version"]
        assert ck.epoch == v
        for k, a in ck.model_state.items():
            assert (a == v).all(), f"round {round_}: {k} mixes versions"
        seen.add(v)
    # leftover temporaries are hidden files beside the checkpoint, never the checkpoint itself
    leftovers = [f.name for f in tmp_path.iterdir() if f.name != "ck.npz"]
    assert all(n.startswith(".ck.npz.") and n.endswith(".tmp") for n in leftovers)
    assert leftovers, "no kill landed during a write: the test did not test anything"
    assert len(seen) >= 2  # the writer did get through several versions


def test_darknet_cfg_model_round_trip(tmp_path):
    darknet = pytest.importorskip("deltaprop.darknet")
    cfg = ROOT / "deltaprop" / "cfg" / "mnist-tiny.cfg"
    if not cfg.is_file():
        pytest.skip("no shipped mnist-tiny.cfg")
    net = darknet.load(str(cfg))
    io.save_model(tmp_path / "dn.npz", net)
    back = io.load_model(tmp_path / "dn.npz")
    assert type(back) is type(net) and back.numerics == net.numerics
    x = np.random.default_rng(0).random((2,) + tuple(net.input_shape)).astype(net.dtype)
    net.eval()
    back.eval()
    np.testing.assert_array_equal(net(x), back(x))


def test_loading_a_layer_model_imports_no_darknet_and_a_cfg_model_registers_it(tmp_path):
    """io and checkpoint_schema never import darknet (the layer order): a Sequential model loads without it;
    a darknet_cfg model file makes the schema import its one provider module, which registers the kind."""
    import subprocess
    import sys
    from pathlib import Path
    from deltaprop import darknet
    nn_file = io.save_model(tmp_path / "s.npz", nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
    cfg_file = io.save_model(tmp_path / "d.npz", darknet.load_cfg_text(
        "[net]\nwidth=2\nheight=1\nchannels=1\n[connected]\noutput=2\nactivation=linear\n"))
    code = ("import sys; from deltaprop import io; io.load_model(sys.argv[1]); "
            "d = sorted(m for m in sys.modules if m.startswith('deltaprop.darknet')); "
            "io.load_model(sys.argv[2]); "
            "print(d, 'deltaprop.darknet.model_file' in sys.modules)")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, str(nn_file), str(cfg_file)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": root})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] True"
