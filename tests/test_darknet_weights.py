"""Darknet .weights: header versions, per-layer order, transposed connected weights, byte-identical round
trips, truncated/oversized errors with sizes, partial files with upto, the reference tiny classifier."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from darknet_testutil import CFG_DIR, CLS_CFG, REFERENCE, seeded_weights, small_net
from deltaprop import darknet
from deltaprop.errors import ConfigError, WeightsError

def test_layer_order_and_header_by_hand():
    net = small_net()
    data = darknet.weights_to_bytes(net)
    assert struct.unpack_from("<iiiQ", data) == (0, 2, 0, 0)
    f = np.frombuffer(data, "<f4", offset=20)
    c0, c1, c3, c4 = (net.layers[i] for i in (0, 1, 3, 4))
    expected = np.concatenate([
        c0.bn.bias.data, c0.bn.weight.data, c0.bn.running_mean, c0.bn.running_var, c0.weight.data.ravel(),  # conv+BN
        c1.bias.data, c1.weight.data.ravel(),                                                               # conv
        c3.bias.data, c3.weight.data.ravel(),                                                               # connected
        c4.bn.bias.data, c4.weight.data.ravel(), c4.bn.weight.data, c4.bn.running_mean, c4.bn.running_var,  # conn+BN
    ])
    assert np.array_equal(f, expected)
    assert len(data) == 20 + 4 * darknet.weights.expected_floats(net)


@pytest.mark.parametrize("version", [(0, 1, 0), (0, 2, 0), (0, 2, 5), (1, 0, 0), (0, 1001, 0), (1002, 0, 0)])
def test_round_trip_byte_identical_keeping_version(tmp_path, version):
    src = small_net()
    src.seen = 12345
    data = darknet.weights_to_bytes(src, version=version)
    assert len(data) == darknet.weights.header_size(*version[:2]) + 4 * darknet.weights.expected_floats(src)
    (tmp_path / "a.weights").write_bytes(data)
    net = darknet.load_cfg_text(CLS_CFG)
    darknet.load_weights(net, tmp_path / "a.weights")
    assert net.weights_version == version and net.seen == 12345
    for k, v in src.state_dict().items():
        assert np.array_equal(net.state_dict()[k], v), k
    darknet.save_weights(net, tmp_path / "b.weights")
    assert (tmp_path / "b.weights").read_bytes() == data


def test_transposed_connected_weights():
    net = small_net()
    fc = net.layers[3]  # connected 2*2*2=8 -> 5
    plain = darknet.weights_to_bytes(net, version=(0, 2, 0))
    trans = darknet.weights_to_bytes(net, version=(0, 1001, 0))
    assert len(trans) == len(plain) - 4  # int32 seen
    # locate the connected weights: after conv layers and the connected biases
    off = sum(c for l in net.layers[:3] for _, c in l.weight_layout()) + fc.out_features
    a = np.frombuffer(plain, "<f4", offset=20)[off:off + fc.weight.data.size].reshape(5, 8)
    b = np.frombuffer(trans, "<f4", offset=16)[off:off + fc.weight.data.size].reshape(8, 5)
    assert np.array_equal(a, fc.weight.data) and np.array_equal(b, fc.weight.data.T)
    other = darknet.load_cfg_text(CLS_CFG)
    darknet.load_weights_bytes(other, trans)
    assert np.array_equal(other.layers[3].weight.data, fc.weight.data)


def test_default_version_is_0_2_0(tmp_path):
    net = small_net()
    darknet.save_weights(net, tmp_path / "w.weights")
    assert struct.unpack_from("<iii", (tmp_path / "w.weights").read_bytes()) == (0, 2, 0)
    assert not list(tmp_path.glob("*.tmp*"))


def test_truncated_and_oversized_state_sizes():
    net = small_net()
    data = darknet.weights_to_bytes(net)
    n = darknet.weights.expected_floats(net)
    # a size that ends inside a layer: another cfg's weights or a cut file, with the sizes the layers end at
    with pytest.raises(WeightsError, match=rf"holds {n - 1:,} float32 values after its 20-byte header "
                                           rf"\({len(data) - 4:,} bytes\): not the weights of <text>, which expected "
                                           rf"all 6 layers' {n:,} values .*its first 4 layers take 119 .*cut off "
                                           rf"inside layer 4"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), data[:-4])
    with pytest.raises(WeightsError, match=rf"holds {n + 2:,} float32 values .*more than the {n:,} expected for all "
                                           rf"6 layers of <text>: the weights of another, larger cfg"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), data + b"\0" * 8)
    with pytest.raises(WeightsError, match=r"not a whole number of float32"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), data + b"\0")
    with pytest.raises(WeightsError, match=r"truncated header: expected at least 12 bytes"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), data[:7])
    with pytest.raises(WeightsError, match=r"version 0.2.0 needs 20 bytes, got 16"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), data[:16])


def test_failed_load_changes_nothing():
    net = small_net(1)
    before = net.state_dict()
    bad = bytearray(darknet.weights_to_bytes(small_net(2)))
    bad[-4:] = struct.pack("<f", float("nan"))
    with pytest.raises(WeightsError, match=r"layer 4 \[connected\] rolling_variance: 1 NaN"):
        darknet.load_weights_bytes(net, bytes(bad))
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_partial_file_loads_its_layers_and_says_so(tmp_path):
    net = small_net()
    darknet.save_weights(net, tmp_path / "part.conv.2", upto=2)  # Darknet's `partial ... 2`, whatever the name
    fresh = darknet.load(_cfg_file(tmp_path), tmp_path / "part.conv.2")
    rep = fresh.weights_report
    # layers 0, 1 (conv) hold the file's values, 2 (maxpool) has none: 3 (connected) is the first that starts fresh
    assert (rep.layers, rep.total, rep.partial) == (3, 6, True)
    assert rep.message == f"loaded layers 0..2 of 6 from {tmp_path / 'part.conv.2'}; the rest start fresh"
    for i in (0, 1):
        assert np.array_equal(fresh.layers[i].weight.data, net.layers[i].weight.data)
    assert not np.array_equal(fresh.layers[3].weight.data, net.layers[3].weight.data)
    whole = darknet.load(_cfg_file(tmp_path), darknet_file(tmp_path, net))
    assert whole.weights_report.message is None and not whole.weights_report.partial
    # checkpoint bytes must be whole: the partial file is refused there, naming the upto that fits
    with pytest.raises(WeightsError, match=r"truncated file: .*holds exactly the first 2 layers: load it with upto=2"):
        darknet.load_weights_bytes(darknet.load_cfg_text(CLS_CFG), (tmp_path / "part.conv.2").read_bytes())


def darknet_file(tmp_path, net):
    """``net``'s whole .weights file in ``tmp_path``."""
    darknet.save_weights(net, tmp_path / "whole.weights")
    return tmp_path / "whole.weights"


def test_partial_file_with_upto(tmp_path):
    net = small_net()
    darknet.save_weights(net, tmp_path / "part.weights", upto=2)  # Darknet's `partial ... 2`
    other = darknet.load(_cfg_file(tmp_path), tmp_path / "part.weights", upto=2)
    for i in (0, 1):
        assert np.array_equal(other.layers[i].weight.data, net.layers[i].weight.data)
    assert not np.array_equal(other.layers[3].weight.data, net.layers[3].weight.data)
    darknet.save_weights(other, tmp_path / "again.weights", upto=2)
    assert (tmp_path / "again.weights").read_bytes() == (tmp_path / "part.weights").read_bytes()
    # a full file, or one of the first M ≥ N whole layers, also serves upto=N (its first N layers, as Darknet
    # reads them); a wrong-length file does not
    darknet.save_weights(net, tmp_path / "full.weights")
    darknet.load(_cfg_file(tmp_path), tmp_path / "full.weights", upto=2)
    darknet.save_weights(net, tmp_path / "four.weights", upto=4)                # conv, conv, maxpool, connected
    first2 = darknet.load(_cfg_file(tmp_path), tmp_path / "four.weights", upto=2)
    for i in (0, 1):
        assert np.array_equal(first2.layers[i].weight.data, net.layers[i].weight.data)
    assert not np.array_equal(first2.layers[3].weight.data, net.layers[3].weight.data)
    cut = (tmp_path / "four.weights").read_bytes()[:-4]                     # not a whole-layer boundary
    (tmp_path / "cut.weights").write_bytes(cut)
    with pytest.raises(WeightsError, match=r"not the weights of .*first 3 layers take 74 and its first 4 take 119\): "
                                           r"the weights of another cfg, or a file cut off inside layer 3"):
        darknet.load(_cfg_file(tmp_path), tmp_path / "cut.weights", upto=2)
    with pytest.raises(WeightsError, match=r"truncated file: .*expected .* for the first 4 layers.*holds only the "
                                           r"first 2 layers"):
        darknet.load(_cfg_file(tmp_path), tmp_path / "part.weights", upto=4)


def test_another_cfgs_weights_are_named_as_such(tmp_path):
    small = tmp_path / "small.weights"
    darknet.save_weights(darknet.load("mnist-tiny"), small)
    with pytest.raises(WeightsError, match=r"small\.weights holds 61,402 float32 values .*not the weights of "
                                           r"yolov3-tiny\.cfg, which expected all 24 layers' 8,858,734 values"):
        darknet.load("yolov3-tiny", small)
    big = tmp_path / "yolov3-tiny.conv.15"
    darknet.save_weights(darknet.load("yolov3-tiny"), big, upto=15)
    with pytest.raises(WeightsError, match=r"expected at most .* for mnist-tiny\.cfg \(9 layers\).*not the weights"):
        darknet.load("mnist-tiny", big)


def _cfg_file(tmp_path):
    p = tmp_path / "cls.cfg"
    p.write_text(CLS_CFG)
    return p


def test_dontload_dontsave_skip_layers():
    text = CLS_CFG.replace("[connected]\noutput=5", "[connected]\ndontload=1\ndontsave=1\noutput=5")
    net = darknet.load_cfg_text(text)
    seeded_weights(net)
    data = darknet.weights_to_bytes(net)
    assert len(data) == 20 + 4 * (darknet.weights.expected_floats(net))
    assert darknet.weights.expected_floats(net) == darknet.weights.expected_floats(small_net()) - 5 * 8 - 5
    darknet.load_weights_bytes(darknet.load_cfg_text(text), data)


def test_yolov3_tiny_file_size_and_float64_round_trip():
    net = darknet.load(CFG_DIR / "yolov3-tiny.cfg", width=64, height=64, dtype=np.float64)
    seeded_weights(net)
    data = darknet.weights_to_bytes(net)
    assert len(data) == 35_434_956  # the size of Darknet's yolov3-tiny.weights
    net2 = darknet.load_cfg_text((CFG_DIR / "yolov3-tiny.cfg").read_text(), data, dtype=np.float64)
    assert net2.layers[0].weight.data.dtype == np.float64
    assert darknet.weights_to_bytes(net2) == data


def test_reference_tiny_cls_loads_and_matches_manifest():
    man = json.loads((REFERENCE / "step" / "manifest.json").read_text())
    net = darknet.load(REFERENCE / "tiny_cls.cfg", REFERENCE / "step" / "init.weights")
    assert net.net_options["batch"] == man["batch"] and net.input_shape == (man["c"], man["h"], man["w"])
    assert net.net_options["learning_rate"] == pytest.approx(man["learning_rate"])
    for meta, layer in zip(man["layers"], net.layers):
        assert layer.kind == meta["type"]
        assert layer.in_shape[0] * layer.in_shape[1] * layer.in_shape[2] == meta["inputs"]
        assert layer.out_shape[0] * layer.out_shape[1] * layer.out_shape[2] == meta["outputs"]
        if meta["type"] in ("convolutional", "maxpool"):
            assert layer.out_shape == (meta["out_c"], meta["out_h"], meta["out_w"])
        if meta["type"] == "maxpool":
            assert layer.padding == meta["pad"] and layer.size == meta["size"]
    read = lambda p: np.fromfile(REFERENCE / "step" / p, dtype="<f4")
    conv, fc = net.layers[0], net.layers[2]
    assert np.array_equal(conv.weight.data.ravel(), read("params_before/L00_weights.f32"))
    assert np.array_equal(conv.bn.bias.data, read("params_before/L00_biases.f32"))
    assert np.array_equal(conv.bn.running_var, read("params_before/L00_rolling_variance.f32"))
    assert np.array_equal(fc.weight.data.ravel(), read("params_before/L02_weights.f32"))
    assert darknet.weights_to_bytes(net) == (REFERENCE / "step" / "init.weights").read_bytes()
    # Darknet's saved after-step file also round-trips byte for byte
    after = darknet.load(REFERENCE / "tiny_cls.cfg", REFERENCE / "step" / "after.weights")
    assert after.seen == 2 and darknet.weights_to_bytes(after) == (REFERENCE / "step" / "after.weights").read_bytes()


def test_reference_tiny_cls_training_forward_matches_darknet():
    """Darknet's forward pass in training mode (batch statistics), layer by layer (L00..L03)."""
    net = darknet.load(REFERENCE / "tiny_cls.cfg", REFERENCE / "step" / "init.weights")
    read = lambda p: np.fromfile(REFERENCE / "step" / p, dtype="<f4")
    net.train()
    net(read("forward/input.f32").reshape(2, 3, 8, 8))
    for i in range(4):
        ref = read(f"forward/L{i:02d}_output.f32")
        assert np.abs(net.layer_outputs[i].ravel() - ref).max() <= 2e-6 * max(1.0, np.abs(ref).max()), i
    assert np.allclose(net.layers[0].bn.running_mean, read("forward/L00_rolling_mean.f32"), atol=1e-7)
    assert np.allclose(net.layers[0].bn.running_var, read("forward/L00_rolling_variance.f32"), atol=1e-7)


def test_checkpoint_npz_rebuilds_cfg_network(tmp_path):
    from deltaprop import io
    net = small_net(3)
    io.save_model(tmp_path / "m.npz", net)
    back = io.load_model(tmp_path / "m.npz")
    assert isinstance(back, darknet.DarknetNet) and back.cfg_text() == net.cfg_text()
    assert darknet.weights_to_bytes(back) == darknet.weights_to_bytes(net)


def test_summary_method_and_budget_setting(capsys):
    net = small_net()
    lines = net.summary()
    assert capsys.readouterr().out.splitlines() == lines
    assert lines[1].split()[:3] == ["0", "conv", "3"] and lines[-1].startswith("total ")
    old = darknet.get_memory_budget()
    try:
        darknet.set_memory_budget(1000)
        with pytest.raises(ConfigError, match="memory budget of 0.0 MiB"):
            darknet.load_cfg_text(CLS_CFG)
    finally:
        darknet.set_memory_budget(old)
    assert darknet.get_memory_budget() == old
