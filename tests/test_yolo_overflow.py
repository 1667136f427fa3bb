"""An untrained network's raw [yolo] outputs can be huge (hundreds): the box sizes ``e^t·anchor`` are capped at
``MAX_LOG_SIZE`` instead of overflowing to infinity (NumPy warnings, NaN IoUs), the logistic of x, y, objectness
and classes never overflows, and Darknet's training decisions (masks, targets, scales) stay those of a huge
but finite box."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop
from darknet_testutil import yolo_section
from deltaprop import darknet
from deltaprop.detect.boxes import yolo_decode
from deltaprop.geometry.boxes import MAX_LOG_SIZE, yolo_grid_boxes
from deltaprop.functional.yolo_loss import darknet_truths, yolo_assign

ANCHORS = [(10.0, 14.0), (23.0, 27.0)]
LOUD = dict(over="raise", invalid="raise", divide="raise")   # overflow or NaN arithmetic fails the test


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_box_sizes_below_the_cap_are_exact_and_above_it_capped(dtype):
    t = np.array([-1000.0, -5.0, 0.0, 1.5, 29.5, 30.0, 31.0, 88.0, 100.0, 1000.0], dtype=dtype)
    raw = np.zeros((2, 4, 1, t.size), dtype=dtype)
    raw[:, 2, 0] = t
    raw[:, 3, 0] = -t
    with np.errstate(**LOUD, under="ignore"):
        boxes = yolo_grid_boxes(raw, ANCHORS, 320, 256)
    assert boxes.dtype == dtype and np.isfinite(boxes).all()
    t64 = t.astype(np.float64)
    for a, (aw, ah) in enumerate(ANCHORS):
        for got, sign, net in ((boxes[a, 0, :, 2], 1, 320), (boxes[a, 0, :, 3], -1, 256)):
            size = ah if sign < 0 else aw
            for k, tk in enumerate(sign * t64):
                want = np.exp(tk) * size / net if tk <= 30 else np.exp(30.0) * size / net
                assert got[k] == dtype(want), (a, sign, tk)
    assert MAX_LOG_SIZE == 30.0
    assert boxes[0, 0, -1, 2] == boxes[0, 0, 5, 2] > 1e11                    # 1000 and 30 give the same width


def test_nan_stays_nan():
    raw = np.zeros((1, 4, 1, 1))
    raw[0, 2] = np.nan
    assert np.isnan(yolo_grid_boxes(raw, ANCHORS[:1], 32, 32)[0, 0, 0, 2])


def test_decode_of_huge_outputs_is_finite_and_warning_free():
    a, k = 2, 3
    out = np.full((a * (k + 5), 4, 4), 0.9, np.float32)
    v = out.reshape(a, k + 5, 4, 4)
    v[:, 2] = 800.0                 # decoding is in float64: e^800 overflows it without the cap
    v[:, 3] = -800.0
    with np.errstate(**LOUD, under="ignore"):
        d = yolo_decode(out, ANCHORS, k, 64, 64, thresh=0.5)
    assert len(d) == a * 16 and np.isfinite(d.boxes).all()


def _assign(out, truths):
    return yolo_assign(out, [truths], ANCHORS + [(60.0, 50.0)], [0, 1], 2, 64, 64, 0.5, 1.0)


def test_training_decisions_for_huge_outputs_equal_those_of_a_huge_finite_box():
    """A prediction with raw w, h = 300 lies on a truth (and in the truth's cell and best anchor, so its IoU
    enters the statistics). Without the cap its width overflowed (warnings; NaN IoU with h underflowing); with
    it, masks, targets and scales equal those of w, h = 25 (e^25 ≈ 7·10^10, finite in every dtype and below
    the cap, i.e. Darknet's own arithmetic) and every statistic is finite."""
    rng = np.random.default_rng(0)
    out = rng.uniform(0.05, 0.95, (1, 2 * 7, 4, 4)).astype(np.float32)
    v = out.reshape(1, 2, 7, 4, 4)
    v[:, :, 2:4] = rng.normal(0, 0.5, (1, 2, 2, 4, 4))
    truths, _ = darknet_truths(np.array([[1, 0.40, 0.40, 0.20, 0.25], [0, 0.80, 0.70, 0.15, 0.15]]), 90, 2)
    huge, finite = out.copy(), out.copy()
    for o, w, h in ((huge, 300.0, 300.0), (finite, 25.0, 25.0)):
        ov = o.reshape(1, 2, 7, 4, 4)
        ov[0, 0, 2, 1, 1], ov[0, 0, 3, 1, 1] = w, h        # anchor 0 at the first truth's cell
        ov[0, 1, 2, 2, 3], ov[0, 1, 3, 2, 3] = w, -h       # a wide, flat box at the second one's
    with np.errstate(**LOUD, under="ignore"):
        got = _assign(huge, truths)
    ref = _assign(finite, truths)
    assert np.array_equal(got.mask, ref.mask)
    assert np.array_equal(got.target, ref.target) and np.array_equal(got.scale, ref.scale)
    assert got.stats.count == ref.stats.count == 2
    assert all(np.isfinite(val) for val in got.stats.as_dict().values())
    assert got.mask[0, 0, 4, 1, 1] and got.target[0, 0, 4, 1, 1] == 1        # still the first truth's cell
    assert np.isfinite(got.delta(huge)).all()


CFG = """[net]
batch=2
width=32
height=32
channels=3

[convolutional]
filters=14
size=1
stride=1
activation=linear

""" + yolo_section([0, 1], "10,14, 23,27, 60,50", classes=2)


@pytest.mark.parametrize("numerics,dtype", [("darknet", np.float32), ("darknet", np.float64),
                                            ("standard", np.float32), ("standard", np.float64)])
def test_yolo_layer_forward_and_loss_on_huge_inputs(numerics, dtype):
    deltaprop.manual_seed(0)
    net = darknet.load_cfg_text(CFG, numerics=numerics, dtype=dtype)
    layer = net.layers[-1]
    x = np.random.default_rng(1).choice([-1000.0, -100.0, 0.0, 100.0, 1000.0], (2, 14, 32, 32)).astype(dtype)
    with np.errstate(**LOUD, under="ignore"):
        out = layer.forward(x)
        res = layer.loss(x, out, [np.array([[1, 0.3, 0.3, 0.2, 0.2]]), np.zeros((0, 5))])
    assert np.isfinite(out).all() and np.isfinite(res.cost)
    v = out.reshape(2, 2, 7, 32, 32)
    assert v[:, :, [0, 1, 4, 5, 6]].min() >= 0 and v[:, :, [0, 1, 4, 5, 6]].max() <= 1
