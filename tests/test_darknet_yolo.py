"""yolov3-tiny at 416×416 in float32 from seeded weights: the two [yolo] outputs, their value ranges, the
layer numbering of layer_outputs, decoding of a few cells by hand."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop
from darknet_testutil import seeded_weights
from deltaprop import darknet
from deltaprop.detect import yolo_decode


@pytest.fixture(scope="module")
def tiny_run():
    deltaprop.manual_seed(0)
    net = darknet.load("yolov3-tiny")  # the shipped cfg
    seeded_weights(net, 0)
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    outs = net.predict(x)
    return net, x, outs


def test_two_yolo_outputs_shapes_and_ranges(tiny_run):
    net, _, outs = tiny_run
    assert isinstance(outs, list) and [o.shape for o in outs] == [(1, 255, 13, 13), (1, 255, 26, 26)]
    assert net.output_indices == [16, 23]
    for o in outs:
        assert o.dtype == np.float32 and np.isfinite(o).all()
        v = o.reshape(1, 3, 85, *o.shape[2:])
        sig = np.concatenate([v[:, :, 0:2].ravel(), v[:, :, 4:].ravel()])
        assert sig.min() > 0 and sig.max() < 1                       # x, y, obj, classes in (0, 1)
        assert v[:, :, 2:4].min() < 0 < v[:, :, 2:4].max()            # w, h raw (linear)


def test_layer_outputs_follow_darknet_numbering(tiny_run):
    net, x, outs = tiny_run
    lo = net.layer_outputs
    assert len(lo) == 24
    shapes = {0: (16, 416, 416), 1: (16, 208, 208), 11: (512, 13, 13), 13: (256, 13, 13), 17: (256, 13, 13),
              19: (128, 26, 26), 20: (384, 26, 26)}
    for i, s in shapes.items():
        assert lo[i].shape == (1,) + s
    assert lo[17] is lo[13]                                           # route 13 is layer 13's output
    assert np.array_equal(lo[20][:, :128], lo[19]) and np.array_equal(lo[20][:, 128:], lo[8])
    assert np.array_equal(lo[19], lo[18].repeat(2, axis=2).repeat(2, axis=3))
    assert lo[16] is outs[0] and lo[23] is outs[1]
    # yolo = logistic on x, y, obj, classes of the linear conv before it
    raw = lo[15].reshape(3, 85, 13, 13)
    v = lo[16].reshape(3, 85, 13, 13)
    assert np.allclose(v[:, 4], 1 / (1 + np.exp(-raw[:, 4])), atol=1e-6)
    assert np.array_equal(v[:, 2:4], raw[:, 2:4])
    # layer 11: Darknet's 2×2/1 max pool with one cell of −∞ padding right and bottom
    a = lo[10][0]
    assert np.array_equal(lo[11][0, :, :12, :12], np.maximum.reduce([a[:, :12, :12], a[:, 1:, :12], a[:, :12, 1:],
                                                                     a[:, 1:, 1:]]))
    assert np.array_equal(lo[11][0, :, 12, 12], a[:, 12, 12])


def test_decode_hand_computed_cells(tiny_run):
    net, _, outs = tiny_run
    layer = net.layers[16]
    assert layer.masked_anchors == [(81, 82), (135, 169), (344, 319)]
    d = yolo_decode(outs[0][0], layer.masked_anchors, 80, 416, 416, thresh=0.0)
    assert len(d) == 13 * 13 * 3
    v = outs[0][0].reshape(3, 85, 13, 13).astype(np.float64)
    for (row, col, n) in [(0, 0, 0), (5, 7, 2), (12, 3, 1)]:
        k = (row * 13 + col) * 3 + n                                   # Darknet's order: cell-major, anchor-minor
        tx, ty, tw, th, obj = v[n, 0:5, row, col]
        aw, ah = layer.masked_anchors[n]
        expect = [(col + tx) / 13, (row + ty) / 13, np.exp(tw) * aw / 416, np.exp(th) * ah / 416]
        assert np.allclose(d.boxes[k], expect, rtol=1e-12)
        assert d.objectness[k] == pytest.approx(obj)
        assert np.allclose(d.probs[k], obj * v[n, 5:, row, col])


def test_float64_matches_float32(tiny_run):
    net, x, outs = tiny_run
    net64 = darknet.load("yolov3-tiny", dtype=np.float64, width=416, height=416)
    darknet.load_weights_bytes(net64, darknet.weights_to_bytes(net))
    out64 = net64.predict(x.astype(np.float64))
    for a, b in zip(outs, out64):
        assert np.abs(a - b).max() < 1e-3
