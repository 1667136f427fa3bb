"""Darknet's summation order (``functional.darknet_sums``): each sum against a transcription of its C loop, the
batch norm of both forks against the formulas (and pjreddie's against ``functional.norm_darknet``), the
Darknet-order convolution against the engine's, and the network switch ``sums=``/``fork=``."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop.darknet as dn
from deltaprop.darknet.layers import bn_order
from deltaprop.functional import darknet_sums as ds
from deltaprop.functional import norm_darknet
from deltaprop.functional.conv import conv2d_backward, conv2d_forward

RS = np.random.default_rng(0)


def c_float_sum(values) -> np.float32:
    """``float s = 0; for (...) s += v;``"""
    s = np.float32(0)
    for v in values:
        s = np.float32(s + np.float32(v))
    return s


def test_sequential_sums_are_the_c_loops():
    x = (RS.standard_normal((2, 3, 50)) * 3 + 100).astype(np.float32)   # a large mean: the order shows
    loops = np.array([c_float_sum(x[:, c].ravel()) for c in range(3)])
    assert np.array_equal(ds.sequential_sum.reference(x), loops)
    mean = (loops * np.float32(1 / 100)).astype(np.float32)
    v = np.zeros(3, np.float32)
    for c in range(3):
        for val in x[:, c].ravel():                        # v = (float)((double)v + pow(x − μ, 2))
            v[c] = np.float32(np.float64(v[c]) + np.float64(np.float32(val - mean[c])) ** 2)
    assert np.array_equal(ds.sequential_square_sum.reference(x, mean), v)
    assert np.array_equal(ds.sequential_square_sum(x, mean), v)          # the fast variant when there is one
    per_image = np.float32(c_float_sum(x[0, 1]) + c_float_sum(x[1, 1]))
    assert ds.per_image_sum(x)[1] == per_image
    a, b = RS.standard_normal((3, 40)).astype(np.float32), RS.standard_normal((40, 5)).astype(np.float32)
    gemm = np.array([[c_float_sum(np.float32(a[i, k] * b[k, j]) for k in range(40)) for j in range(5)]
                     for i in range(3)])
    assert np.array_equal(ds.sequential_gemm.reference(a, b), gemm)
    assert np.array_equal(ds.sequential_dot_nt.reference(a, b.T.copy()), gemm)


def test_the_order_matters_for_a_long_float32_sum():
    x = (RS.standard_normal((2, 1, 40000)) * 0.01 + 1.0).astype(np.float32)
    seq = ds.sequential_sum(x)[0]
    exact = float(x.astype(np.float64).sum())
    assert seq != np.float32(exact) and abs(seq - exact) / exact > 1e-6


def _bn_args(c=4):
    return (RS.uniform(0.5, 1.5, c).astype(np.float32), RS.normal(0, 0.1, c).astype(np.float32),
            RS.normal(0, 0.1, c).astype(np.float32), RS.uniform(0.5, 1.5, c).astype(np.float32))


def test_pjreddie_batchnorm_pairwise_is_norm_darknet():
    x = (RS.standard_normal((2, 4, 6, 5)) * 2 + 0.5).astype(np.float32)
    g, b, rm, rv = _bn_args()
    y, cache, (nrm, nrv) = ds.batchnorm_forward(x, g, b, rm, rv, True, "pjreddie", "pairwise")
    y2, cache2, (nrm2, nrv2) = norm_darknet.batchnorm_darknet_forward(x, g, b, rm, rv, training=True)
    assert np.allclose(y, y2, rtol=1e-6, atol=1e-6) and np.allclose(nrm, nrm2) and np.allclose(nrv, nrv2)
    dy = RS.standard_normal(x.shape).astype(np.float32)
    for a, c in zip(ds.batchnorm_backward(dy, cache), norm_darknet.batchnorm_darknet_backward(dy, cache2)):
        assert np.allclose(a, c, rtol=1e-5, atol=1e-5)
    yd, cached, _ = ds.batchnorm_forward(x, g, b, rm, rv, True, "pjreddie", "darknet")
    assert np.allclose(yd, y, rtol=1e-5, atol=1e-5)
    assert all(np.allclose(p, q, rtol=1e-4, atol=1e-5) for p, q in
               zip(ds.batchnorm_backward(dy, cached), ds.batchnorm_backward(dy, cache)))


def test_alexeyab_batchnorm_formulas():
    x = (RS.standard_normal((2, 3, 5, 4)) * 2 + 0.5).astype(np.float64)
    g, b, rm, rv = (a.astype(np.float64) for a in _bn_args(3))
    y, cache, (nrm, nrv) = ds.batchnorm_forward(x, g, b, rm, rv, True, "alexeyab", "pairwise")
    mu = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    sh = (1, 3, 1, 1)
    assert np.allclose(y, g.reshape(sh) * (x - mu.reshape(sh)) / np.sqrt(var.reshape(sh) + 1e-5) + b.reshape(sh))
    assert np.allclose(nrm, 0.9 * rm + 0.1 * mu) and np.allclose(nrv, 0.9 * rv + 0.1 * var)
    dy = RS.standard_normal(x.shape)
    dx, dscale, dbias = ds.batchnorm_backward(dy, cache)
    m = 40
    xn = (x - mu.reshape(sh)) / np.sqrt(var.reshape(sh) + 1e-5)
    dxn = dy * g.reshape(sh)
    md = -dxn.sum(axis=(0, 2, 3)) / np.sqrt(var + 1e-5)
    vd = -0.5 * (dxn * (x - mu.reshape(sh))).sum(axis=(0, 2, 3)) * (var + 1e-5) ** -1.5
    want = (dxn / (np.sqrt(var) + 1e-5).reshape(sh) + vd.reshape(sh) * 2 * (x - mu.reshape(sh)) / m
            + md.reshape(sh) / m)
    assert np.allclose(dx, want) and np.allclose(dscale, (dy * xn).sum(axis=(0, 2, 3)))
    assert np.allclose(dbias, dy.sum(axis=(0, 2, 3)))


def test_darknet_order_convolution_is_the_engines_up_to_rounding():
    x = RS.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = RS.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = RS.standard_normal(6).astype(np.float32)
    z, cache = ds.conv2d_forward_darknet(x, w, b, stride=1, padding=1, groups=2)
    z2, cache2 = conv2d_forward(x, w, b, stride=1, padding=1, groups=2)
    assert np.allclose(z, z2, rtol=1e-5, atol=1e-5)
    dz = RS.standard_normal(z.shape).astype(np.float32)
    for a, c in zip(ds.conv2d_backward_darknet(dz, cache), conv2d_backward(dz, cache2)):
        assert np.allclose(a, c, rtol=1e-4, atol=1e-4)


def test_sums_and_fork_switch_install_the_batch_norm_that_computes_them():
    text = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nbatch_normalize=1\nactivation=leaky\n"
    net = dn.load_cfg_text(text)
    assert (net.fork, net.sums) == ("pjreddie", "pairwise")
    plain = net.layers[0].bn
    assert not isinstance(plain, bn_order.OrderedBatchNorm)                    # the plain module: same kernels
    net.set_sums("darknet")
    bn = net.layers[0].bn
    assert isinstance(bn, bn_order.OrderedBatchNorm) and isinstance(bn, type(plain)) and bn.sums == "darknet"
    assert bn.weight is plain.weight and bn.running_var is plain.running_var     # shared, not copied
    assert bn_order.activation_of(net.layers[0]).c_rounding
    ab = dn.load_cfg_text(text, fork="alexeyab")
    assert isinstance(ab.layers[0].bn, bn_order.OrderedBatchNorm) and ab.layers[0].bn.fork == "alexeyab"

    with pytest.raises(ValueError, match=r"sums must be one of \('pairwise', 'darknet'\)"):
        dn.load_cfg_text(text, sums="kahan")
    with pytest.raises(ValueError, match=r"fork must be one of \('pjreddie', 'alexeyab'\)"):
        dn.load_cfg_text(text, fork="hank")
