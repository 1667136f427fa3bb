"""safetensors files of a model's ``state_dict`` (``deltaprop.safetensors_io``) and ``deltaprop convert`` between
``.weights``, ``.npz`` and ``.safetensors``: a file written here loads into the PyTorch twin of the model with
``safetensors.torch.load_file`` + ``load_state_dict`` and gives its outputs, and one PyTorch writes loads back; the
Darknet round trip is byte-identical; crafted headers are refused naming the field."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import deltaprop as dp
from cli_testutil import cli, leftovers
from darknet_testutil import CLS_CFG, small_net
from deltaprop import darknet, io, models
from deltaprop.errors import CheckpointError
from deltaprop.safetensors_io import load_safetensors, read_safetensors, save_safetensors, to_bytes

st_torch = pytest.importorskip("safetensors.torch", reason="the safetensors package reads the files for PyTorch")


def torch_twin(torch, name):
    """PyTorch's module of the same layers, so that the state-dict keys are the same ("0.weight", ...)."""
    tnn = torch.nn
    if name == "lenet":
        return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(6, 16, 5),
                              tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(),
                              tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))
    return tnn.Sequential(tnn.Conv2d(1, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Conv2d(16, 32, 3, padding=1, bias=False), tnn.BatchNorm2d(32),
                          tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(32 * 7 * 7, 10))


def deltaprop_model(name):
    return models.build("lenet") if name == "lenet" else models.build("convnet", fused=False)


@pytest.mark.parametrize("name", ["lenet", "convbn"])
def test_loads_into_the_pytorch_twin_and_back(torch_ref, tmp_path, name):
    torch = torch_ref
    dp.manual_seed(0)
    model = deltaprop_model(name).eval()
    if name != "lenet":                              # statistics away from 0 and 1, a count PyTorch keeps
        for k, bn in ((1, model[1]), (5, model[5])):
            bn.running_mean[...] = np.linspace(-0.5, 0.5, bn.num_features)
            bn.running_var[...] = np.linspace(0.5, 2.0, bn.num_features)
            bn.num_batches_tracked[...] = 7 + k
    save_safetensors(model, tmp_path / "m.safetensors")
    twin = torch_twin(torch, name)
    twin.load_state_dict(st_torch.load_file(str(tmp_path / "m.safetensors")), strict=True)
    twin.eval()
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    with dp.no_grad():
        mine = model(x)
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), mine, rtol=1e-4, atol=1e-5)
        for p in twin.parameters():                 # PyTorch changes every parameter, then writes the file
            p.mul_(0.5).add_(0.01)
        theirs = twin(torch.from_numpy(x)).numpy()
    st_torch.save_file(twin.state_dict(), str(tmp_path / "t.safetensors"))
    assert load_safetensors(model, tmp_path / "t.safetensors") == {}
    with dp.no_grad():
        np.testing.assert_allclose(model(x), theirs, rtol=1e-4, atol=1e-5)
    for k, v in twin.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v.numpy())


def test_format_details(tmp_path):
    """8-byte length, JSON header padded to 8 bytes, widest dtype first, 0-d kept, metadata, little-endian data."""
    state = {"a": np.arange(3, dtype=np.float32), "n": np.array(5, dtype=np.int64), "b": np.ones((2, 2))}
    raw = to_bytes(state, {"note": "x"})
    n = struct.unpack("<Q", raw[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == {"format": "pt", "note": "x"}
    assert header["n"] == {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "F64", "shape": [2, 2], "data_offsets": [8, 40]}
    assert header["a"] == {"dtype": "F32", "shape": [3], "data_offsets": [40, 52]}
    assert raw[8 + n + 40:] == np.arange(3, dtype="<f4").tobytes()
    save_safetensors(state, tmp_path / "s.safetensors")
    back, meta = read_safetensors(tmp_path / "s.safetensors")
    assert meta == {"format": "pt"} and list(back) == ["n", "b", "a"]
    for k in state:
        assert back[k].dtype == state[k].dtype and back[k].shape == state[k].shape
        np.testing.assert_array_equal(back[k], state[k])
    assert to_bytes(state) == to_bytes(dict(state))                    # deterministic
    with pytest.raises(CheckpointError, match="cannot store 'o'"):
        to_bytes({"o": np.array(["x"], dtype=object)})
    with pytest.raises(CheckpointError, match="metadata holds strings only"):
        to_bytes(state, {"k": 1})


def _file(header: dict, data: bytes = b"", pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


F32 = lambda shape, a, b: {"dtype": "F32", "shape": shape, "data_offsets": [a, b]}     # noqa: E731
HOSTILE = [
    (b"\x01\x02", "shorter than its 8-byte header length"),
    (struct.pack("<Q", 2 ** 63) + b"{}", "header claims"),
    (struct.pack("<Q", 50) + b"{}", "header claims"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "header is not JSON"),
    (struct.pack("<Q", 2) + b"[]", "a JSON list, not an object"),
    (struct.pack("<Q", 2) + b"{}" + b"\x00" * 4, "the tensors end at byte 0 of 4"),
    (struct.pack("<Q", 40) + b'{"a": {}, "a": {}}'.ljust(40), "names 'a' twice"),
    (_file({"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0\0"), "dtype 'BF16'"),
    (_file({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), "shape \\[-1\\]"),
    (_file({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
    (_file({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "expected {dtype, shape, data_offsets}"),
    (_file({"w": F32([1], 0, 8)}, b"\0" * 4), "data_offsets \\[0, 8\\]"),
    (_file({"w": F32([2], 0, 4)}, b"\0" * 4), "needs 8 bytes, its offsets hold 4"),
    (_file({"w": F32([1], 4, 8)}, b"\0" * 8), "starts at byte 4 of the data, not at 0"),
    (_file({"w": F32([1], 0, 4), "v": F32([1], 0, 4)}, b"\0" * 4), "starts at byte 0 of the data, not at 4"),
    (_file({"w": F32([1], 0, 4)}, b"\0" * 8), "end at byte 4 of 8"),
    (_file({"__metadata__": {"k": 3}, "w": F32([1], 0, 4)}, b"\0" * 4), "__metadata__ must map strings"),
    (_file({"w": F32([10 ** 30, 10 ** 30], 0, 4)}, b"\0" * 4), "needs"),
]


@pytest.mark.parametrize("raw,msg", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_crafted_files_are_refused(tmp_path, raw, msg):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=msg):
        read_safetensors(path)
    rc, out, err = cli("convert", path, tmp_path / "out.npz")
    assert rc == 1 and "Traceback" not in err and err.startswith("deltaprop convert: error: ")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out.npz").exists()


def test_a_file_of_another_model_is_refused(tmp_path):
    save_safetensors(models.build("mlp"), tmp_path / "mlp.safetensors")
    with pytest.raises(CheckpointError, match=r"mlp.safetensors: does not fit the model \(Sequential\).*missing keys"):
        load_safetensors(models.build("lenet"), tmp_path / "mlp.safetensors")


# --- deltaprop convert ---------------------------------------------------------------------------------

def test_convert_darknet_weights_through_safetensors_and_npz_byte_identical(tmp_path):
    cfg = tmp_path / "cls.cfg"
    cfg.write_text(CLS_CFG)
    net = small_net(3)
    object.__setattr__(net, "seen", 1234)
    darknet.save_weights(net, tmp_path / "a.weights", version=(0, 2, 0))
    steps = [("--cfg", cfg, "a.weights", "b.safetensors"), ("b.safetensors", "c.npz"), ("c.npz", "d.safetensors"),
             ("d.safetensors", "e.weights")]
    for step in steps:
        args = [tmp_path / a if str(a).endswith(("weights", "npz", "safetensors")) else a for a in step]
        rc, out, err = cli("convert", *args)
        assert rc == 0, err
    assert "version 0.2.0" in out and (tmp_path / "e.weights").read_bytes() == (tmp_path / "a.weights").read_bytes()
    meta = read_safetensors(tmp_path / "b.safetensors")[1]
    assert json.loads(meta["deltaprop.architecture"])["kind"] == "darknet_cfg"
    assert json.loads(meta["deltaprop.darknet"]) == {"seen": 1234, "version": [0, 2, 0]}
    state = net.state_dict()
    back = read_safetensors(tmp_path / "d.safetensors")[0]
    assert set(back) == set(state) and all(np.array_equal(back[k], state[k]) for k in state)
    rc, out, err = cli("convert", "--cfg", cfg, tmp_path / "a.weights", tmp_path / "p.safetensors", "--upto", "1")
    assert rc == 0 and "the first 1 of" in out and "keep their initial values" in out, err


def test_convert_nn_model_and_pytorch_files(tmp_path):
    dp.manual_seed(2)
    io.save_model(tmp_path / "m.npz", models.build("lenet"))
    assert cli("convert", tmp_path / "m.npz", tmp_path / "m.safetensors")[0] == 0
    assert cli("convert", tmp_path / "m.safetensors", tmp_path / "n.npz")[0] == 0
    a, b = io.load_model(tmp_path / "m.npz").state_dict(), io.load_model(tmp_path / "n.npz").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    save_safetensors(a, tmp_path / "plain.safetensors")                 # as PyTorch writes it: no architecture
    for argv, words in (
            (["plain.safetensors", "x.npz"], ["stores no architecture", "--cfg"]),
            (["m.safetensors", "x.weights"], ["holds a Sequential", "not a Darknet"]),
            (["m.safetensors", "x.safetensors"], ["expected IN/OUT"]),
            (["m.npz", "x.npz"], ["expected IN/OUT"]),
            (["m.safetensors", "x.npz", "--upto", "2"], ["--upto 2", "holds a Sequential"]),
            (["m.npz", "m2.safetensors", "--cfg", "mnist-tiny"], ["does not fit"])):
        args = [tmp_path / a if a.endswith(("npz", "safetensors", "weights")) else a for a in argv]
        rc, out, err = cli("convert", *args)
        assert rc == 1 and all(w in err for w in words), (argv, err)
        assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.weights").exists()
    (tmp_path / "wrong.safetensors").write_bytes((tmp_path / "m.npz").read_bytes())
    rc, out, err = cli("convert", tmp_path / "wrong.safetensors", tmp_path / "x.npz")
    assert rc == 1 and "this is a deltaprop .npz file, not safetensors" in err
    assert not leftovers(tmp_path)
