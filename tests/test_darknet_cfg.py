"""Darknet .cfg: every real cfg parses; errors name file, line and key; shapes and the layer table match
Darknet's; cfg → network → cfg → network round trips."""
from __future__ import annotations

import re

import numpy as np
import pytest

from darknet_testutil import CFG_DIR, seeded_weights
from deltaprop import cli, darknet
from deltaprop.errors import ConfigError

SUPPORTED = ["cifar", "darknet19", "darknet53", "extraction", "tiny", "yolov3-tiny", "yolov3"]


def cfg_path(name):
    return CFG_DIR / f"{name}.cfg"


@pytest.mark.parametrize("name", SUPPORTED + ["yolov2-tiny"])
def test_every_real_cfg_parses(name):
    secs = darknet.parse_cfg(cfg_path(name))
    assert secs[0].type == "net" and len(secs) > 5
    assert all(s.file.endswith(f"{name}.cfg") and s.line > 0 for s in secs)


def test_yolov2_tiny_fails_naming_region_and_line():
    path = cfg_path("yolov2-tiny")
    line = next(i for i, l in enumerate(open(path), 1) if l.strip() == "[region]")
    with pytest.raises(ConfigError, match=rf"yolov2-tiny\.cfg:{line}: section \[region\]"):
        darknet.load(path)


# (name, width override) -> expected output shapes of a few layers (c, h, w) and totals
EXPECTED = {
    "yolov3-tiny": {"layers": 24, "params": 8_858_734, 16: (255, 13, 13), 23: (255, 26, 26), 20: (384, 26, 26)},
    "yolov3": {"layers": 107, "params": 62_001_757, 82: (255, 19, 19), 94: (255, 38, 38), 106: (255, 76, 76),
               61: (512, 38, 38), 36: (256, 76, 76)},
    "darknet53": {"layers": 78, 74: (1024, 8, 8), 77: (1000, 1, 1)},
    "darknet19": {"layers": 26, 23: (1000, 8, 8), 24: (1000, 1, 1)},
    "tiny": {"layers": 22},
    "extraction": {"layers": 27},
    "cifar": {"layers": 17, 16: (10, 1, 1)},
}


@pytest.mark.parametrize("name", SUPPORTED)
def test_supported_cfgs_plan_with_darknet_shapes(name):
    plan = darknet.plan_cfg(cfg_path(name))
    exp = EXPECTED[name]
    assert len(plan.specs) == exp["layers"]
    if "params" in exp:  # = (size of Darknet's .weights − 20 bytes)/4
        assert plan.n_params == exp["params"]
    for i, shape in exp.items():
        if isinstance(i, int):
            assert plan.specs[i].out_shape == shape, (i, plan.specs[i].out_shape)


@pytest.mark.parametrize("name", ["cifar", "tiny", "darknet19", "yolov3-tiny"])
def test_supported_cfgs_build_and_run_small(name):
    size = 32 if name != "yolov3-tiny" else 64
    net = darknet.load(cfg_path(name), width=size, height=size, numerics="standard")
    x = np.random.default_rng(0).random((1,) + net.input_shape, dtype=np.float32)
    out = net.predict(x)
    outs = out if isinstance(out, list) else [out]
    assert all(np.isfinite(o).all() for o in outs)
    for spec, o in zip(net.plan.specs, net.layer_outputs):
        assert o.shape == (1,) + spec.out_shape


def test_yolov3_full_builds_at_128():
    net = darknet.load(cfg_path("yolov3"), width=128, height=128)
    assert [net.layers[i].out_shape for i in net.output_indices] == [(255, 4, 4), (255, 8, 8), (255, 16, 16)]
    assert net.num_parameters() + sum(b.size for _, b in net.named_buffers()) == 62_001_757


def summary_rows(capsys, *argv):
    assert cli.main(["summary", *map(str, argv)]) == 0
    return capsys.readouterr().out.splitlines()


def test_summary_matches_darknet_table(capsys):
    lines = summary_rows(capsys, cfg_path("yolov3-tiny"))
    rows = {int(l.split()[0]): l for l in lines[1:-1]}
    norm = lambda s: re.sub(r"\s+", " ", s).strip()
    assert norm(rows[0]) == "0 conv 16 3 x 3 / 1 416 x 416 x 3 -> 416 x 416 x 16 0.150 BFLOPs"
    assert norm(rows[11]) == "11 max 2 x 2 / 1 13 x 13 x 512 -> 13 x 13 x 512"
    assert norm(rows[12]).startswith("12 conv 1024 3 x 3 / 1") and norm(rows[12]).endswith("1.595 BFLOPs")
    assert norm(rows[20]) == "20 route 19 8"
    assert norm(rows[21]) == "21 conv 256 3 x 3 / 1 26 x 26 x 384 -> 26 x 26 x 256 1.196 BFLOPs"
    assert norm(rows[16]) == "16 yolo" and norm(rows[17]) == "17 route 13"
    # the per-layer BFLOPs of Darknet's own printout for this cfg
    darknet_bflops = [0.150, 0.399, 0.399, 0.399, 0.399, 0.399, 1.595, 0.089, 0.399, 0.044, 0.011, 1.196, 0.088]
    ours = [float(l.split()[-2]) for l in lines[1:-1] if l.endswith("BFLOPs")]
    assert ours == darknet_bflops
    total = float(re.search(r"total ([\d.]+) BFLOPs", lines[-1]).group(1))
    assert abs(total - 5.565) <= 0.01


def test_summary_shipped_cfgs_and_size_override(capsys):
    lines = summary_rows(capsys, "yolov3-tiny", "--width", 320, "--height", 320)
    assert "320 x 320 x   3" in lines[1]
    tiny = darknet.plan_cfg("mnist-tiny")
    assert tiny.input_shape == (1, 28, 28) and tiny.bflops * 1e3 <= 20  # ≤ 20 MFLOPs/sample
    assert tiny.specs[-1].type == "softmax" and tiny.specs[-1].out_shape == (10, 1, 1)
    ours = darknet.plan_cfg("yolov3-tiny")
    theirs = darknet.plan_cfg(cfg_path("yolov3-tiny"))
    assert [s.table for s in ours.specs] == [s.table for s in theirs.specs]


# --- errors ---------------------------------------------------------------------------------------

BASE = "[net]\nwidth=8\nheight=8\nchannels=3\n\n"


@pytest.mark.parametrize("text,pattern", [
    (BASE + "[convolutional]\nfilters=4\nsize 3\n", r"<t>:8: malformed line 'size 3'"),
    (BASE + "[convolutional]\nfilters=4\nkernel=3\n", r"<t>:8: \[convolutional\] unknown key 'kernel'"),
    (BASE + "[convolutional]\nfilters=four\n", r"<t>:7: \[convolutional\] key 'filters': expected an integer"),
    (BASE + "[convolutional]\nfilters=0\n", r"<t>:7: \[convolutional\] key 'filters': must be ≥ 1"),
    (BASE + "[convolutional]\nactivation=softsign\n", r"<t>:7: .*'activation': unknown activation 'softsign'"),
    (BASE + "[convolutional]\nfilters=4\nfilters=5\n", r"<t>:8: .*'filters' repeated \(first on line 7\)"),
    (BASE + "[region]\nclasses=2\n", r"<t>:6: section \[region\] is not supported"),
    (BASE + "[bogus]\n", r"<t>:6: section \[bogus\] is not a Darknet section"),
    ("filters=3\n[net]\n", r"<t>:1: key 'filters' appears before any section"),
    ("[convolutional]\n", r"<t>:1: the first section must be \[net\]"),
    (BASE + "[route]\nlayers=-2\n", r"<t>:7: \[route\] key 'layers': index -2 refers to layer -2, .* no earlier"),
    (BASE + "[convolutional]\n[route]\nlayers=1\n", r"<t>:8: \[route\] key 'layers': index 1 refers to layer 1"),
    (BASE + "[convolutional]\nsize=11\n", r"<t>:7: \[convolutional\] key 'size'"),
    (BASE + "[maxpool]\nsize=2\npadding=9\n", r"<t>:8: \[maxpool\] key 'padding'"),
    (BASE + "[convolutional]\nfilters=8\n[yolo]\nclasses=2\nmask=0\nnum=1\n", r"<t>:8: \[yolo\]: expects 7 input channels .* outputs 8"),
    (BASE + "[convolutional]\n[yolo]\nnum=1\nmask=3\n", r"<t>:9: \[yolo\] key 'mask': anchor index 3"),
    (BASE + "[net]\n", r"<t>:6: \[net\] must be the first section"),
    (BASE + "[convolutional]\nfilters=\n", r"<t>:7: .*'filters' has no value"),
    (BASE + "[convolutional]\n[shortcut]\nfrom=-1\nactivation=linear\n[convolutional]\nfilters=2\n"
     "[shortcut]\nfrom=-3\n", r"<t>:13: \[shortcut\] key 'from': layer 0 outputs 8×8×1"),
    ("[net]\nbatch=1\n[convolutional]\n", r"<t>:1: \[net\]: no input size"),
])
def test_errors_name_file_line_key(text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        darknet.load_cfg_text(text, name="<t>")


def test_parse_error_from_file_names_path(tmp_path):
    p = tmp_path / "bad.cfg"
    p.write_text(BASE + "[maxpool]\nsize=2\nstrides=2\n")
    with pytest.raises(ConfigError, match=r"bad\.cfg:8: \[maxpool\] unknown key 'strides'"):
        darknet.load(p)
    with pytest.raises(ConfigError, match=r"nope\.cfg: no such cfg file, and no shipped cfg of that name \(shipped: "):
        darknet.load(tmp_path / "nope.cfg")


def test_memory_budget_refuses_before_allocating():
    text = BASE.replace("width=8", "width=100000").replace("height=8", "height=100000") + \
        "[convolutional]\nfilters=64\nsize=3\npad=1\n"
    with pytest.raises(ConfigError, match=r"needs about .* MiB .* more than the memory budget"):
        darknet.load_cfg_text(text)
    with pytest.raises(ConfigError, match="memory budget of 1.0 MiB"):
        darknet.load(cfg_path("yolov3-tiny"), budget=2 ** 20)


# --- round trips ----------------------------------------------------------------------------------

def same_network(a, b):
    assert [l.kind for l in a.layers] == [l.kind for l in b.layers]
    assert [l.out_shape for l in a.layers] == [l.out_shape for l in b.layers]
    assert [l.inputs for l in a.layers] == [l.inputs for l in b.layers]
    assert [dict(l.options) for l in a.layers] == [dict(l.options) for l in b.layers]
    assert a.net_options == b.net_options
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["yolov3-tiny", "tiny", "cifar"])
def test_cfg_round_trip(tmp_path, name):
    net1 = darknet.load(cfg_path(name), width=64, height=64)
    seeded_weights(net1)
    w = darknet.weights_to_bytes(net1)
    darknet.save_cfg(net1, tmp_path / "a.cfg")
    net2 = darknet.load(tmp_path / "a.cfg")
    darknet.load_weights_bytes(net2, w)
    darknet.save_cfg(net2, tmp_path / "b.cfg")
    assert (tmp_path / "a.cfg").read_text() == (tmp_path / "b.cfg").read_text()
    same_network(net1, net2)
    net3 = darknet.load_cfg_text((tmp_path / "b.cfg").read_text(), w)
    same_network(net1, net3)
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporary file


def test_net_options_exposed_and_written_back():
    net = darknet.load(cfg_path("yolov3-tiny"))
    o = net.net_options
    assert (o["batch"], o["subdivisions"], o["width"], o["height"], o["channels"]) == (1, 1, 416, 416, 3)
    assert (o["learning_rate"], o["momentum"], o["decay"], o["burn_in"]) == (0.001, 0.9, 0.0005, 1000)
    assert (o["policy"], o["steps"], o["scales"], o["max_batches"], o["power"]) == \
        ("steps", [400000, 450000], [0.1, 0.1], 500200, 4.0)
    o["batch"] = 64
    o["power"] = 2.0  # not in the original file: written because it changed
    text = net.cfg_text()
    assert "batch=64" in text and "power=2.0" in text
    assert darknet.load_cfg_text(text).net_options["batch"] == 64
