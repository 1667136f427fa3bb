"""One home per equation: the leaky-ReLU derivative (P2), BN 2.3, update-4, the sigmoid, softmax, dropout and
average pooling of the weightless Darknet layers are each computed by one NumPy function that every path calls,
and each numba kernel that mirrors one of them gives its numbers bit for bit.
Regression: nn.LeakyReLU(1.3) in float32 had the derivative 0.99999994 for positive inputs, not 1."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_numba
from deltaprop import nn
from deltaprop.darknet.activations import DarknetActivation
from deltaprop.functional import activation as A
from deltaprop.functional import norm as N

SLOPES = [0.01, 0.1, 0.5, 0.7, 1.0, 1.3, 2.0, -0.2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", SLOPES)
def test_leaky_relu_derivative_is_exactly_one_and_slope(dtype, slope):
    x = np.array([-2.5, -1e-3, 0.0, 1e-3, 0.75, 3.0], dtype=dtype)
    m = nn.LeakyReLU(slope)
    y = m(x)
    t = np.dtype(dtype).type
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.where(x > 0, x, t(slope) * x))
    d = m.backward(np.ones_like(x))
    np.testing.assert_array_equal(d, np.where(x > 0, t(1), t(slope)))


def test_leaky_relu_1_3_float32_regression():
    m = nn.LeakyReLU(1.3)
    x = np.linspace(0.1, 5.0, 50, dtype=np.float32)
    m(x)
    d = m.backward(np.ones_like(x))
    assert d.dtype == np.float32 and np.all(d == np.float32(1.0)), d[:3]


@pytest.mark.parametrize("slope", [0.1, 1.3])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("pool", [False, True], ids=["bn-act", "bn-act-pool"])
def test_fused_batchnorm_leaky_derivative_is_exactly_one_where_positive(numba_mode, slope, affine, pool, rng):
    """Fused BN + leaky (+ 2×2 pool), NumPy and numba paths: with dout 0 wherever the output is ≤ 0, σ' = 1
    exactly, so dx equals the same kernel's with a linear activation bit for bit."""
    x = rng.standard_normal((2, 3, 4, 36)).astype(np.float32)
    make = (lambda act: nn.BatchNormActPool2d(3, activation=act, negative_slope=slope, affine=affine)) if pool \
        else (lambda act: nn.BatchNormAct2d(3, activation=act, negative_slope=slope, affine=affine))
    leaky, linear = make("leaky"), make("linear")
    out = leaky(x)
    ref = linear(x)
    pos = out > 0
    dout = np.where(pos, rng.standard_normal(out.shape).astype(np.float32), np.float32(0))
    np.testing.assert_array_equal(out[pos], ref[pos])
    np.testing.assert_array_equal(leaky.backward(dout), linear.backward(dout))


@pytest.mark.parametrize("name,slope", [("leaky", 0.1), ("relie", 0.01), ("relu", None)])
def test_darknet_leaky_is_the_engine_leaky(name, slope, rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    d, e = DarknetActivation(name), (nn.ReLU() if slope is None else nn.LeakyReLU(slope))
    np.testing.assert_array_equal(d(x), e(x))
    np.testing.assert_array_equal(d.backward(dout), e.backward(dout))


@pytest.mark.parametrize("name,engine", [("logistic", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_darknet_logistic_and_tanh_use_the_engine_derivative(name, engine, rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    d, e = DarknetActivation(name), engine()
    np.testing.assert_allclose(d(x), e(x), rtol=1e-6, atol=1e-7)
    y = d(x)
    e(x)
    np.testing.assert_array_equal(d.backward(dout), e.backward(dout) if name == "tanh" else
                                  dout * A.sigmoid_derivative(y))


@pytest.mark.parametrize("code,slope", [(0, 0.0), (1, 0.0), (2, 0.1), (2, 1.3), (2, -0.2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_sigma_mirrors_the_numpy_activation(code, slope, dtype, rng):
    """_norm_numba._act_map (σ and dout·σ' through ``_sigma``) equals activation.py's functions exactly."""
    require_numba()
    from deltaprop.fast import norm_numba as NB
    t = np.dtype(dtype).type
    xc = rng.standard_normal((2, 3, 50)).astype(dtype)
    xc[0, 0, :5] = 0.0
    scale, beta = rng.uniform(0.5, 2, 3).astype(dtype), rng.normal(0, 0.1, 3).astype(dtype)
    dout = rng.standard_normal(xc.shape).astype(dtype)
    y = xc * scale[:, None]
    y += beta[:, None]
    fwd, bwd = np.empty_like(xc), np.empty_like(xc)
    NB._act_map(xc, scale, beta, code, t(slope), None, fwd)
    NB._act_map(xc, scale, beta, code, t(slope), dout, bwd)
    if code == 0:
        want_f, want_b = y, dout
    elif code == 1:
        want_f, want_b = y * (y > 0), A.relu_backward(dout, (y > 0,))
    else:
        want_f = A.leaky_relu_into(y, slope, np.empty_like(y))
        want_b = A.leaky_relu_backward(dout, (y > 0, slope))
    np.testing.assert_array_equal(fwd, want_f)
    np.testing.assert_array_equal(bwd, want_b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_input_grad_mirrors_bn_input_grad(dtype, rng):
    """BN 2.3: _norm_numba._input_grad and norm.bn_input_grad give the same numbers bit for bit."""
    require_numba()
    from deltaprop.fast import norm_numba as NB
    dy = rng.standard_normal((3, 4, 33)).astype(dtype)
    xc = rng.standard_normal(dy.shape).astype(dtype)
    inv_std = rng.uniform(0.5, 2, 4).astype(dtype)
    k1 = rng.uniform(0.5, 2, 4).astype(dtype) * inv_std
    k2, k3 = N.bn_grad_coefs(k1, N.channel_dot(dy, xc) * inv_std, N.channel_sum(dy), 3 * 33, inv_std)
    want = N.bn_input_grad(dy, xc, k1, k2, k3)
    got = dy.copy()
    NB._input_grad(got, xc, k1, k2, k3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_center_mirrors_channel_center(dtype, rng):
    """BN forward's z − μ: _norm_numba._center (the fused numba path's) and norm.channel_center, bit for bit."""
    require_numba()
    from deltaprop.fast import norm_numba as NB
    x3 = rng.standard_normal((3, 4, 33)).astype(dtype)
    mean = rng.standard_normal(4).astype(dtype)
    np.testing.assert_array_equal(NB.center_numba(x3, mean), N.channel_center.reference(x3, mean))


def test_weight_decay_has_one_home():
    """update-4 in SGD and Adam is sgd.decayed_gradient (the fused kernel's equality: test_train_fused)."""
    from deltaprop import optim
    from deltaprop.optim.sgd import decayed_gradient
    w = np.array([1.0, -2.0, 0.5], np.float32)
    g = np.array([0.1, 0.2, -0.3], np.float32)
    np.testing.assert_array_equal(decayed_gradient(g, w, 0.01), g + np.float32(0.01) * w)
    for make in (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01),
                 lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.01)):
        p, q = nn.Parameter(w.copy()), nn.Parameter(w.copy())
        p.grad, q.grad = g.copy(), decayed_gradient(g, w, 0.01)
        a, b = make([p]), make([q])
        b.param_groups[0]["weight_decay"] = 0.0
        a.step()
        b.step()
        np.testing.assert_array_equal(p.data, q.data)


_WEIGHTLESS_CFG = """[net]
width=6
height=6
channels=3
[dropout]
probability=0.3
[logistic]
[upsample]
stride=2
[avgpool]
[softmax]
"""


def test_darknet_weightless_layers_are_the_engine_kernels(rng):
    """[dropout], [logistic], [upsample], [avgpool], [softmax] give the numbers of functional's kernels
    (shape.dropout_* and upsample_nearest_*, activation.sigmoid_* and softmax_*, pool.adaptive_avg_pool2d_*),
    forward and backward, bit for bit."""
    from deltaprop import backend, darknet
    from deltaprop.functional import pool as P
    from deltaprop.functional import shape as S
    net = darknet.load_cfg_text(_WEIGHTLESS_CFG, dtype=np.float32)
    net.train()
    drop, logi, up, avg, soft = net.layers
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    backend.manual_seed(3)
    a = drop(x)
    backend.manual_seed(3)
    a_want, dcache = S.dropout_forward(x, 0.3, backend.rng())
    b, (b_want, scache) = logi(a), A.sigmoid_forward(a_want)
    u, (u_want, ucache) = up(b), S.upsample_nearest_forward(b_want, 2)
    c, (c_want, pcache) = avg(u), P.adaptive_avg_pool2d_forward(u_want, 1)
    d, (d_want, xcache) = soft(c), A.softmax_forward(c_want.reshape(2, 1, 3), axis=-1)
    for got, want in ((a, a_want), (b, b_want), (u, u_want), (c, c_want), (d, d_want.reshape(d.shape))):
        np.testing.assert_array_equal(got, want)
    g = rng.standard_normal(d.shape).astype(np.float32)
    gc = A.softmax_backward(g.reshape(2, 1, 3), xcache).reshape(c.shape)
    gu = P.adaptive_avg_pool2d_backward(gc, pcache)
    gb = S.upsample_nearest_backward(gu, ucache)
    ga = A.sigmoid_backward(gb, scache)
    gx = S.dropout_backward(ga, dcache)
    for layer, dout, want in ((soft, g, gc), (avg, gc, gu), (up, gu, gb), (logi, gb, ga), (drop, ga, gx)):
        np.testing.assert_array_equal(layer.backward(dout), want)
