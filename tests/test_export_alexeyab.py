"""An AlexeyAB-fork network (yolov4-tiny: [route] groups, scale_x_y, its batch norm with ε under the root) exports
to ONNX with its own numerics: ONNX Runtime equals deltaprop's eval forward; and a cfg whose only AlexeyAB keys are
[net] training options keeps pjreddie's numerics."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import darknet
from deltaprop.darknet.cfg import cfg_fork, parse_cfg_text
from deltaprop.export import to_onnx
from conftest import fixture_dir
from export_testutil import RTOL, run_onnx

V4 = fixture_dir("darknet", "reference", "yolov4_tiny_416", "net.cfg")


def _v4_net(size: int):
    dp.manual_seed(0)
    net = darknet.load(V4, width=size, height=size, batch=1)
    rng = np.random.default_rng(0)
    for layer in net.detection_heads + [l for l in net.layers if getattr(l, "bn", None) is not None]:
        if getattr(layer, "bn", None) is not None:       # running statistics away from (0, 1): ε's place shows
            c = layer.filters
            layer.set_darknet_array("rolling_mean", rng.normal(0, 0.1, c).astype(np.float32))
            layer.set_darknet_array("rolling_variance", rng.uniform(0.05, 1.5, c).astype(np.float32))
    return net.eval()


def test_yolov4_tiny_exports_with_alexeyabs_batch_norm(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime checks the export (test extra)")
    net = _v4_net(160)
    assert net.fork == "alexeyab"
    eps, outside = net.layers[0].bn.eval_eps()
    assert (eps, outside) == (1e-5, False)                  # AlexeyAB: (x − μ)/√(σ² + 1e-5)
    to_onnx(net, tmp_path / "v4.onnx")
    x = np.random.default_rng(1).random((1, 3, 160, 160), dtype=np.float32)
    got, want = run_onnx(tmp_path / "v4.onnx", x), net.predict(x)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert np.abs(g - w).max() / np.abs(w).max() <= RTOL


def test_net_section_options_do_not_choose_the_fork():
    text = "[net]\nwidth=32\nheight=32\nchannels=3\nflip=0\nmax_chart_loss=20\n[convolutional]\nfilters=4\nsize=3\npad=1\n" \
           "activation=leaky\n"
    assert cfg_fork(parse_cfg_text(text, "t.cfg")) == "pjreddie"
    assert cfg_fork(parse_cfg_text(text.replace("leaky", "mish"), "t.cfg")) == "alexeyab"
