"""Darknet's batch norm (functional/norm_darknet.py) against a float64 re-derivation from docs/equations.md §10,
its naive twin, and the exact derivative in inference mode."""
import numpy as np
import pytest

from conftest import rel_err
from deltaprop.functional import norm_darknet as nd
from deltaprop.gradcheck import numerical_gradient


def derive(x, gamma, beta, rm, rv, dy):
    """docs/equations.md §10 (Darknet batch norm), written out independently (float64)."""
    c = x.shape[1]
    xs = np.moveaxis(x, 1, 0).reshape(c, -1)          # (C, m)
    dys = np.moveaxis(dy, 1, 0).reshape(c, -1)
    m = xs.shape[1]
    mu = xs.sum(1) / m
    var = ((xs - mu[:, None]) ** 2).sum(1) / (m - 1)    # unbiased
    xn = (xs - mu[:, None]) / (np.sqrt(var)[:, None] + 1e-6)   # epsilon outside the root
    y = gamma[:, None] * xn + beta[:, None]
    new_rm, new_rv = 0.99 * rm + 0.01 * mu, 0.99 * rv + 0.01 * var
    dxh = dys * gamma[:, None]
    s = np.sqrt(var + 1e-5)[:, None]                   # backward: epsilon under the root
    dmu = -(dxh / s).sum(1)
    dvar = (dxh * (xs - mu[:, None])).sum(1) * -0.5 * (var + 1e-5) ** -1.5
    dx = dxh / s + dvar[:, None] * 2 * (xs - mu[:, None]) / m + dmu[:, None] / m
    back = lambda a: np.moveaxis(a.reshape((c, x.shape[0]) + x.shape[2:]), 0, 1)
    return back(y), back(dx), (dys * xn).sum(1), dys.sum(1), new_rm, new_rv, dmu, dvar


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (7, 5), (2, 3, 1, 1)])
def test_training_matches_derivation(rng, shape):
    x = rng.normal(1.0, 2.0, shape)
    c = shape[1]
    g, b = rng.normal(size=c), rng.normal(size=c)
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, c)
    dy = rng.normal(size=shape)
    y, cache, (nrm, nrv) = nd.batchnorm_darknet_forward(x, g, b, rm, rv, training=True)
    dx, dg, db = nd.batchnorm_darknet_backward(dy, cache)
    ey, edx, edg, edb, erm, erv, emd, evd = derive(x, g, b, rm, rv, dy)
    for a, e in [(y, ey), (dx, edx), (dg, edg), (db, edb), (nrm, erm), (nrv, erv)]:
        assert rel_err(a, e) < 1e-12
    md, vd = nd.darknet_bn_intermediates(dy, cache)
    assert rel_err(md, emd) < 1e-12 and rel_err(vd, evd) < 1e-12
    # the inputs are not modified
    assert rm is not nrm


@pytest.mark.parametrize("training", [True, False])
def test_fast_matches_naive(rng, training):
    x = rng.normal(size=(3, 4, 3, 5))
    g, b, rm, rv = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.2, 3, 4)
    dy = rng.normal(size=x.shape)
    y, c, (r1, r2) = nd.batchnorm_darknet_forward(x, g, b, rm, rv, training)
    yn, cn, (n1, n2) = nd.batchnorm_darknet_forward_naive(x, g, b, rm, rv, training)
    assert rel_err(y, yn) < 1e-12 and rel_err(r1, n1) < 1e-12 and rel_err(r2, n2) < 1e-12
    for a, e in zip(nd.batchnorm_darknet_backward(dy, c), nd.batchnorm_darknet_backward_naive(dy, cn)):
        assert rel_err(a, e) < 1e-12


def test_inference_uses_rolling_stats_and_exact_derivative(rng):
    x = rng.normal(size=(2, 3, 4, 4))
    g, b, rm, rv = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)
    y, cache, (r1, r2) = nd.batchnorm_darknet_forward(x, g, b, rm, rv, training=False)
    e = (x - rm[None, :, None, None]) / (np.sqrt(rv)[None, :, None, None] + 1e-6) * g[None, :, None, None] \
        + b[None, :, None, None]
    assert rel_err(y, e) < 1e-13 and r1 is rm and r2 is rv
    R = rng.normal(size=x.shape)
    dx, dg, db = nd.batchnorm_darknet_backward(R, cache)
    xx = x.copy()
    f = lambda: float((nd.batchnorm_darknet_forward(xx, g, b, rm, rv, training=False)[0] * R).sum())
    num, _ = numerical_gradient(f, xx)
    assert rel_err(dx, num) < 1e-7


def test_training_backward_is_not_the_exact_derivative(rng):
    """Darknet's backward differs from the derivative of its own forward (unbiased variance, m in
    normalize_delta, epsilon placement): the difference is small but real, and it is what Darknet does."""
    x = rng.normal(size=(2, 2, 3, 3))
    g, b = np.ones(2), np.zeros(2)
    R = rng.normal(size=x.shape)
    _, cache, _ = nd.batchnorm_darknet_forward(x, g, b, np.zeros(2), np.ones(2))
    dx, _, _ = nd.batchnorm_darknet_backward(R, cache)
    xx = x.copy()
    f = lambda: float((nd.batchnorm_darknet_forward(xx, g, b, np.zeros(2), np.ones(2))[0] * R).sum())
    num, _ = numerical_gradient(f, xx)
    assert 1e-4 < rel_err(dx, num) < 0.2


def test_float32_stays_float32_and_rolling_constants(rng):
    x = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    p = [np.ones(3, np.float32), np.zeros(3, np.float32), np.full(3, 2, np.float32), np.full(3, 4, np.float32)]
    y, cache, (rm, rv) = nd.batchnorm_darknet_forward(x, *p)
    dx, dg, db = nd.batchnorm_darknet_backward(np.ones_like(x), cache)
    assert {a.dtype for a in (y, rm, rv, dx, dg, db)} == {np.dtype(np.float32)}
    mu = x.mean(axis=(0, 2, 3))
    # scal_cpu(.99f) then axpy_cpu(.01f) in float32
    assert np.array_equal(rm, np.float32(2) * np.float32(0.99) + np.float32(0.01) * mu)


def test_needs_two_values_per_channel():
    with pytest.raises(ValueError, match="m = 1"):
        nd.batchnorm_darknet_forward(np.ones((1, 2)), np.ones(2), np.zeros(2), np.zeros(2), np.ones(2))
