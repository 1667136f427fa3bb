"""Hostile checkpoints (issue 19): a crafted or hand-edited ``.npz`` gets CheckpointError naming the field,
never a Python error, and never builds more than the file can justify."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import io, models, nn, optim
from deltaprop.errors import CheckpointError

from hostile_testutil import raises_cheaply

ROOT = Path(__file__).resolve().parents[1]


def good(tmp_path, **kw):
    """A small real checkpoint: an mlp with an SGD optimizer, a StepLR scheduler and the RNG state."""
    m = models.build("mlp", in_features=4, hidden=[3], num_classes=2)
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2)
    x = np.ones((2, 4), np.float32)
    m.train()
    out = m(x)
    m.backward(np.ones_like(out))
    opt.step()
    sched.step()
    p = io.save_checkpoint(tmp_path / "good.npz", m, opt, sched, epoch=1, step=3, **kw)
    return p, m, opt, sched


def read_npz(p):
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    return meta, arrays


def write_npz(p, meta, arrays, raw_meta=None):
    raw = raw_meta if raw_meta is not None else json.dumps(meta).encode()
    np.savez(p, __meta__=np.frombuffer(raw, np.uint8), **arrays)
    return p


def edited(tmp_path, edit, name="bad.npz"):
    """A copy of the good checkpoint with ``edit(meta, arrays)`` applied (it may return new metadata)."""
    p, *_ = good(tmp_path)
    meta, arrays = read_npz(p)
    out = edit(meta, arrays)
    return write_npz(tmp_path / name, meta if out is None else out, arrays)


def set_path(meta, path, value):
    *head, last = path
    d = meta
    for k in head:
        d = d[k]
    d[last] = value


def test_good_checkpoint_still_loads(tmp_path):
    p, m, opt, sched = good(tmp_path)
    m2 = models.build("mlp", in_features=4, hidden=[3], num_classes=2)
    opt2 = optim.SGD(m2.parameters(), lr=0.5, momentum=0.9)
    sched2 = optim.lr_scheduler.StepLR(opt2, step_size=2)
    io.load_checkpoint(p, m2, opt2, sched2, restore_rng=True)
    assert sched2.state_dict() == sched.state_dict()
    ck = io.load_checkpoint(p)
    assert ck.epoch == 1 and ck.step == 3 and ck.model_bytes == sum(a.nbytes for a in ck.model_state.values())


# (name, meta path, value, field the message must name)
FIELD_EDITS = [
    ("version null", ["version"], None, "version"),
    ("version string", ["version"], "1", "version"),
    ("epoch NaN", ["epoch"], float("nan"), "epoch"),
    ("epoch Infinity", ["epoch"], float("inf"), "epoch"),
    ("epoch negative", ["epoch"], -1, "epoch"),
    ("step 5000 digits", ["step"], 10 ** 4000, "step"),
    ("unknown model kwarg", ["architecture", "kwargs", "bogus"], 1, "architecture.kwargs"),
    ("missing model", ["architecture", "model"], None, "architecture.model"),
    ("kind a number", ["architecture", "kind"], 3, "architecture.kind"),
    ("extra arch key", ["architecture", "extra_key"], 1, "architecture.extra_key"),
    ("architecture true", ["architecture"], True, "architecture"),
    ("unknown top-level key", ["surprise"], 1, "surprise"),
    ("rng bit generator", ["rng", "bit_generator"], "MT19937", "rng.bit_generator"),
    ("rng missing inc", ["rng", "state"], {"state": 5}, "rng.state"),
    ("rng negative", ["rng", "has_uint32"], -1, "rng.has_uint32"),
    ("scheduler base_lrs 5", ["scheduler", "base_lrs"], 5, "scheduler.base_lrs"),
    ("optimizer params Infinity", ["optimizer", "param_groups", 0, "params"], [float("inf")],
     "optimizer.param_groups[0].params[0]"),
    ("optimizer lr string", ["optimizer", "param_groups", 0, "lr"], "fast", "optimizer.param_groups[0].lr"),
    ("history not a list", ["history"], {"a": 1}, "history"),
    ("tuple marker of a number", ["optimizer", "param_groups", 0, "betas"], {"__tuple__": 3},
     "optimizer.param_groups[0].betas"),
    ("items marker malformed", ["extra"], {"__items__": [[1]]}, "extra[0]"),
    ("items marker list key", ["extra"], {"__items__": [[[1], 2]]}, "extra[0]"),
    ("array marker of a number", ["extra"], {"__array__": 5}, "extra"),
    ("array marker of a missing entry", ["extra"], {"__array__": "extra/nope"}, "extra"),
    ("model array referenced", ["extra"], {"__array__": "model/1.weight"}, "extra"),
]


@pytest.mark.parametrize("name,path,value,field", FIELD_EDITS, ids=[e[0] for e in FIELD_EDITS])
def test_crafted_field(tmp_path, name, path, value, field):
    p = edited(tmp_path, lambda meta, arrays: set_path(meta, path, value))
    m = models.build("mlp", in_features=4, hidden=[3], num_classes=2)
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2)
    if path[0] == "architecture":
        load = lambda: io.load_checkpoint(p)  # noqa: E731
    else:
        load = lambda: io.load_checkpoint(p, m, opt, sched, restore_rng=True)  # noqa: E731
    err = raises_cheaply(CheckpointError, load)
    assert f"'{field}" in str(err) and str(p) in str(err), str(err)


def test_missing_architecture_model(tmp_path):
    """The key absent, not null (a KeyError once)."""
    p = edited(tmp_path, lambda meta, arrays: meta["architecture"].pop("model") and None)
    err = raises_cheaply(CheckpointError, lambda: io.load_checkpoint(p))
    assert "'architecture.model" in str(err) and str(p) in str(err), str(err)


@pytest.mark.parametrize("field", ["step", "epoch"])
def test_integer_of_5000_digits_in_the_text(tmp_path, field):
    """Beyond Python's 4300-digit limit for int(str): ``json.loads`` itself raises ValueError on it."""
    p, *_ = good(tmp_path)
    meta, arrays = read_npz(p)
    text = json.dumps(meta)
    raw = text.replace(f'"{field}": {meta[field]}', f'"{field}": ' + "1" * 5000, 1)
    assert raw != text
    write_npz(p, None, arrays, raw_meta=raw.encode())
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="__meta__|" + field)


def test_metadata_a_list(tmp_path):
    p = edited(tmp_path, lambda meta, arrays: [meta])
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="__meta__")


def test_deeply_nested_metadata(tmp_path):
    p, *_ = good(tmp_path)
    meta, arrays = read_npz(p)
    raw = json.dumps(meta).encode()[:-1] + b', "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    write_npz(p, None, arrays, raw_meta=raw)
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="nested deeper")
    meta["extra"] = {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    write_npz(p, meta, arrays)
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="nested deeper")


def test_array_referenced_twice(tmp_path):
    def edit(meta, arrays):
        arrays["extra/big"] = np.zeros(10, np.float32)
        meta["extra"] = {"copies": [{"__array__": "extra/big"}] * 1000}
    p = edited(tmp_path, edit)
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="referenced twice")


def test_unknown_entry_and_string_buffer(tmp_path):
    p = edited(tmp_path, lambda meta, arrays: arrays.update({"surprise": np.zeros(2)}))
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p), match="'surprise'")
    model_bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    q = io.save_model(tmp_path / "bn.npz", model_bn)
    meta, arrays = read_npz(q)
    arrays["model/1.running_mean"] = np.array(["a", "b"])
    write_npz(q, meta, arrays)
    raises_cheaply(CheckpointError, lambda: io.load_model(q), match="model/1.running_mean")


# (entry, value) that would change on the way into the model: the campaign's NaN batch count loaded as −2⁶³
CAST_EDITS = [("model/1.num_batches_tracked", np.array(np.nan, np.float32)),
              ("model/1.num_batches_tracked", np.array(2.5)),
              ("model/1.num_batches_tracked", np.array(2 ** 64 - 1, np.uint64)),
              ("model/1.running_mean", np.full(2, 1e300)),
              ("model/0.weight", np.full((2, 2), -1e300)),
              ("model/1.running_var", np.ones(2, np.complex64))]


@pytest.mark.parametrize("entry,value", CAST_EDITS, ids=[f"{e}={v.dtype}" for e, v in CAST_EDITS])
def test_state_that_the_cast_would_change(tmp_path, entry, value):
    """An array whose values its entry's dtype cannot hold (a NaN or 2.5 for an integer count, 2⁶⁴−1 for int64,
    1e300 for float32, a complex number) is refused naming the entry, not cast into another value."""
    q = io.save_model(tmp_path / "bn.npz", nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    meta, arrays = read_npz(q)
    arrays[entry] = value
    write_npz(q, meta, arrays)
    err = raises_cheaply(CheckpointError, lambda: io.load_model(q))
    assert entry.split("/", 1)[1] in str(err), str(err)  # the state-dict key


def test_state_of_other_representable_dtypes_loads(tmp_path):
    """What the cast keeps intact still loads: a float64 weight, an int32 count, NaN in a running variance."""
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    q = io.save_model(tmp_path / "bn.npz", m)
    meta, arrays = read_npz(q)
    arrays["model/0.weight"] = arrays["model/0.weight"].astype(np.float64)
    arrays["model/1.num_batches_tracked"] = np.array(7, np.int32)
    arrays["model/1.running_var"] = np.array([np.nan, 2.0], np.float32)
    write_npz(q, meta, arrays)
    m2 = io.load_model(q)
    state = m2.state_dict()
    assert state["1.num_batches_tracked"] == 7 and state["1.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(state["0.weight"], m.state_dict()["0.weight"])
    assert np.isnan(state["1.running_var"][0]) and state["1.running_var"][1] == 2.0


def architecture_refused(tmp_path, p, edit, field):
    """A copy of checkpoint ``p`` whose architecture ``edit`` changed: load_model names ``field``."""
    meta, arrays = read_npz(p)
    edit(meta["architecture"])
    write_npz(tmp_path / "b.npz", meta, arrays)
    err = raises_cheaply(CheckpointError, lambda: io.load_model(tmp_path / "b.npz"))
    assert field in str(err), str(err)


def test_sequential_layer_arguments(tmp_path):
    m = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    p = io.save_model(tmp_path / "s.npz", m)
    for edit, field in [(lambda a: a["layers"][0]["config"].update(bogus=1), "architecture.layers[0].config"),
                        (lambda a: a["layers"][0].pop("class"), "architecture.layers[0].class"),
                        (lambda a: a["layers"][0].update(**{"class": "Popen", "module": "subprocess"}),
                         "architecture.layers[0].class"),
                        (lambda a: a["layers"][0]["config"].update(in_features=2.5e300), "in_features"),
                        (lambda a: a["layers"][0]["config"].update(in_features=[0]), "architecture.layers[0]")]:
        architecture_refused(tmp_path, p, edit, field)


def test_missing_cfg_and_extra_darknet_key(tmp_path):
    from deltaprop import darknet
    m = darknet.load_cfg_text("[net]\nwidth=2\nheight=1\nchannels=1\n[connected]\noutput=2\nactivation=linear\n")
    p = io.save_model(tmp_path / "d.npz", m)
    for edit, field in [(lambda a: a.pop("cfg"), "architecture.cfg"), (lambda a: a.update(width=3), "architecture.width"),
                        (lambda a: a.update(numerics=3), "architecture.numerics"),
                        (lambda a: a.update(cfg="[net]\nwidth=x\n"), "architecture.cfg")]:
        architecture_refused(tmp_path, p, edit, field)


def test_zip_declaring_more_than_the_limit(tmp_path):
    p, *_ = good(tmp_path)
    raises_cheaply(CheckpointError, lambda: io.read_checkpoint(p, max_bytes=100), match="more than the limit")


_PEAK = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from deltaprop import io
from deltaprop.errors import CheckpointError
with np.load({path!r}) as z:
    arrays = {{k: z[k] for k in z.files}}
meta = json.loads(arrays.pop("__meta__").tobytes())
io.load_model({path!r})  # warm: every import done before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for arch in json.loads({archs!r}):
    meta["architecture"] = arch
    np.savez({out!r}, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    t = time.perf_counter()
    try:
        io.load_model({out!r})
        print("LOADED", arch)
    except CheckpointError as e:
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print("ERR", time.perf_counter() - t, grew, "architecture" in str(e), str(e).replace(chr(10), " "))
"""

ARCHS = {
    "in_features 1e9": {"kind": "registry", "model": "mlp",
                        "kwargs": {"in_features": 10 ** 9, "hidden": [3], "num_classes": 2}},
    "hidden 2^31": {"kind": "registry", "model": "mlp",
                    "kwargs": {"in_features": 4, "hidden": [2 ** 31 - 1], "num_classes": 2}},
    "30000x30000": {"kind": "registry", "model": "mlp",
                    "kwargs": {"in_features": 30000, "hidden": [30000], "num_classes": 2}},
    "hidden 0": {"kind": "registry", "model": "mlp", "kwargs": {"in_features": 4, "hidden": [0], "num_classes": 2}},
    "sequential 1e9": {"kind": "sequential", "layers": [{"name": "0", "class": "Linear", "module": "deltaprop.nn",
                                                         "config": {"in_features": 10 ** 9, "out_features": 1}}]},
    "darknet 1e9 weights": {"kind": "darknet_cfg",
                            "cfg": "[net]\nwidth=1000000\nheight=1\nchannels=1\n[connected]\noutput=1000\n"},
    "darknet wide input": {"kind": "darknet_cfg",
                           "cfg": "[net]\nwidth=1000000\nheight=1000\nchannels=3\n[convolutional]\nfilters=2\n"
                                  "size=3\nstride=1\npad=1\n[avgpool]\n"},
}


def test_architecture_within_the_file_budget(tmp_path):
    """Rebuilt models are refused before their parameters are filled: each under 1 s and 100 MB of peak
    resident memory, measured in a fresh process (np.empty of a refused array only reserves address space,
    which tracemalloc would count)."""
    p, *_ = good(tmp_path)
    code = _PEAK.format(root=str(ROOT), path=str(p), out=str(tmp_path / "b.npz"),
                        archs=json.dumps(list(ARCHS.values())))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert len(lines) == len(ARCHS), out.stdout + out.stderr
    for name, line in zip(ARCHS, lines):
        assert line.startswith("ERR"), (name, line)
        _, seconds, kib, named, msg = line.split(" ", 4)
        assert float(seconds) < 1.0 and int(kib) < 100 * 1024 and named == "True", (name, line)
