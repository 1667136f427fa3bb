"""Darknet's loss layers (functional/darknet_loss.py) against docs/equations.md §10, written out in float64."""
import numpy as np
import pytest

from conftest import rel_err
from deltaprop.functional import darknet_loss as dl
from deltaprop.errors import ShapeError


def test_softmax_temperature_groups_and_loss(rng):
    x = rng.normal(size=(3, 12)) * 3
    p = dl.darknet_softmax(x, temperature=2.0, groups=3)
    for n in range(3):
        for g in range(3):
            z = x[n, 4 * g:4 * g + 4] / 2.0
            e = np.exp(z - z.max())
            assert rel_err(p[n, 4 * g:4 * g + 4], e / e.sum()) < 1e-14
    t = np.zeros((3, 12))
    t[0, 1] = t[1, 5] = 1
    t[2, 7] = 0.5                                # a nonzero truth counts as −log p whatever its value
    cost, grad = dl.darknet_softmax_loss(p, t)
    assert cost == pytest.approx(-np.log(p[0, 1]) - np.log(p[1, 5]) - np.log(p[2, 7]), rel=1e-14)
    assert np.array_equal(grad, p - t)           # engine sign: −(t − p)


def test_cost_after_softmax_double_counts(rng):
    x = rng.normal(size=(2, 5))
    t = np.eye(5)[[1, 3]]
    p = dl.darknet_softmax(x)
    _, own = dl.darknet_softmax_loss(p, t)
    cost, err, g_cost = dl.darknet_cost(p, t, "sse", scale=0.5)
    g_logits = dl.darknet_softmax_backward(g_cost, own)
    assert rel_err(g_logits, 1.5 * (p - t)) < 1e-14    # (1 + scale)(t − p), negated
    assert cost == pytest.approx(((t - p) ** 2).sum(), rel=1e-14)   # unscaled


def test_cost_types():
    p = np.array([[0.0, 0.5, 3.0, -2.0, 1.0]])
    t = np.array([[0.5, 0.5, 0.0, 0.0, dl.SECRET_NUM]])
    d = t - p
    c, e, g = dl.darknet_cost(p, t, "sse", scale=2.0)
    assert np.array_equal(e, d ** 2) and np.array_equal(g, -2.0 * d) and c == pytest.approx((d ** 2).sum())
    c, e, g = dl.darknet_cost(p, t, "L1")
    assert np.array_equal(e, np.abs(d)) and np.array_equal(g, -np.where(d > 0, 1.0, -1.0))
    c, e, g = dl.darknet_cost(p, t, "smooth")
    small = np.abs(d) < 1
    assert np.array_equal(e, np.where(small, d ** 2, 2 * np.abs(d) - 1))
    # pjreddie's smooth_l1_cpu: delta = (diff < 0) ? 1 : −1 where |diff| ≥ 1
    assert np.array_equal(g, -np.where(small, d, np.where(d < 0, 1.0, -1.0)))
    c, e, g = dl.darknet_cost(p, t, "masked")
    assert e[0, 4] == 0 and g[0, 4] == 0 and e[0, 2] == 9.0
    with pytest.raises(ValueError, match="hinge"):
        dl.darknet_cost(p, t, "hinge")
    with pytest.raises(ShapeError, match="truth"):
        dl.darknet_cost(p, t[:, :3])


def test_logistic_bce(rng):
    x = rng.normal(size=(4, 3)) * 4
    t = (rng.random((4, 3)) > 0.5).astype(float)
    p, cost, g = dl.darknet_logistic(x, t)
    s = 1 / (1 + np.exp(-x))
    assert rel_err(p, s) < 1e-14 and rel_err(g, s - t) < 1e-14
    assert cost == pytest.approx((-t * np.log(s) - (1 - t) * np.log(1 - s)).sum(), rel=1e-12)


def test_reported_loss():
    # the real program's numbers (darknet/reference/tiny_cls/step/cost.txt)
    assert dl.darknet_reported_loss([4.23694134, 1.77289724], 2) == pytest.approx(1.50245965, rel=1e-8)
    assert dl.darknet_reported_loss([], 4) == 0.0
