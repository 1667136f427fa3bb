"""Pooling kernels and layers: naive-vs-fast, gradcheck, the tie rule, Darknet geometry, numba, dtypes, errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import deltaprop.nn as nn
from deltaprop.errors import NonFiniteError, ShapeError
from deltaprop.runtime import jit as _numba
from deltaprop.functional import pool as P
from deltaprop.functional import pool_geometry as PG
from deltaprop.functional import pool_naive as PN
from deltaprop.gradcheck import check_module

from conftest import rel_err


MAX_GRID = [  # kernel, stride, padding, dilation, ceil_mode
    (2, 2, 0, 1, False), (3, 2, 1, 1, True), (2, 1, 0, 1, False), (3, 1, 1, 2, False),
    ((2, 3), (1, 2), (1, 0), 1, True), (1, 3, 0, 1, True), (3, 3, (0, 1, 1, 0), 1, False), (2, 2, 0, 1, True),
]
AVG_GRID = [  # kernel, stride, padding, ceil_mode, count_include_pad
    (2, 2, 0, False, True), (3, 2, 1, True, True), (3, 2, 1, True, False), (2, 1, (1, 0, 0, 1), False, False),
    ((3, 2), (2, 1), (1, 1), False, True), (3, 3, 1, True, False), (2, 2, 0, True, True),
]


@pytest.mark.parametrize("args", MAX_GRID)
def test_max_naive_vs_fast(args, rng, numba_mode):
    x = rng.standard_normal((2, 3, 7, 6))
    y, cache = P.max_pool2d_forward(x, *args)
    yn, cn = PN.max_pool2d_forward_naive(x, *args)
    d = rng.standard_normal(y.shape)
    assert y.shape == yn.shape and np.array_equal(y, yn)
    assert rel_err(P.max_pool2d_backward(d, cache), PN.max_pool2d_backward_naive(d, cn)) < 1e-14


@pytest.mark.parametrize("args", AVG_GRID)
def test_avg_naive_vs_fast(args, rng, numba_mode):
    x = rng.standard_normal((2, 2, 7, 6))
    y, cache = P.avg_pool2d_forward(x, *args)
    yn, cn = PN.avg_pool2d_forward_naive(x, *args)
    d = rng.standard_normal(y.shape)
    assert y.shape == yn.shape and rel_err(y, yn) < 1e-14
    assert rel_err(P.avg_pool2d_backward(d, cache), PN.avg_pool2d_backward_naive(d, cn)) < 1e-14


@pytest.mark.parametrize("p", [1, 2, 3, 1.5, np.inf])
@pytest.mark.parametrize("geom", [(2, 2, 0, False), (3, 2, 0, True), (2, 1, 1, False)])
def test_lp_naive_vs_fast(p, geom, rng, numba_mode):
    x = rng.standard_normal((2, 2, 6, 5))  # signed: the sign-kept definition of §4
    k, s, pad, ceil = geom
    y, cache = P.lp_pool2d_forward(x, p, k, s, pad, ceil)
    yn, cn = PN.lp_pool2d_forward_naive(x, p, k, s, pad, ceil)
    d = rng.standard_normal(y.shape)
    assert rel_err(y, yn) < 1e-13
    assert rel_err(P.lp_pool2d_backward(d, cache), PN.lp_pool2d_backward_naive(d, cn)) < 1e-12


@pytest.mark.parametrize("out", [1, (2, 3), (3, 4), (7, 6)])
def test_adaptive_naive_vs_fast(out, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    y, cache = P.adaptive_avg_pool2d_forward(x, out)
    yn, cn = PN.adaptive_avg_pool2d_forward_naive(x, out)
    d = rng.standard_normal(y.shape)
    assert rel_err(y, yn) < 1e-14
    assert rel_err(P.adaptive_avg_pool2d_backward(d, cache), PN.adaptive_avg_pool2d_backward_naive(d, cn)) < 1e-14


# --- gradcheck (float64, < 1e-6) on a covering sample ------------------------------------------------

@pytest.mark.parametrize("layer", [
    lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    lambda: nn.MaxPool2d(2, 1, dilation=2),
    lambda: nn.MaxPool2d(2, 1, padding=(0, 1, 0, 1)),
    lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: nn.AvgPool2d((2, 3), 1),
    lambda: nn.LPPool2d(2, 2, 1),
    lambda: nn.LPPool2d(3, 3, 2, ceil_mode=True),
    lambda: nn.LPPool2d(1.5, 2),
    lambda: nn.AdaptiveAvgPool2d(1),
    lambda: nn.AdaptiveAvgPool2d((3, 2)),
], ids=["max-ceil", "max-dil", "max-4pad", "avg-ceil-nopad", "avg-rect", "lp2-overlap", "lp3-ceil", "lp1.5",
        "gap", "adaptive"])
def test_gradcheck(layer, rng):
    x = rng.standard_normal((2, 2, 6, 5))  # signed inputs: LP pooling's |x| and sign are checked too
    res = check_module(layer(), x)
    assert res.ok(1e-6), str(res)


def test_lp_all_zero_window_passes_no_gradient(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    x[0, 0, :2, :2] = 0.0
    for p in (1, 2, 3, 1.5):
        y, cache = P.lp_pool2d_forward(x, p, 2)
        assert y[0, 0, 0, 0] == 0
        dx = P.lp_pool2d_backward(np.ones_like(y), cache)
        assert np.isfinite(dx).all() and not dx[0, 0, :2, :2].any()
        assert dx[0, 0, 2:, 2:].any()


# --- the tie rule -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,s", [(2, 1), (2, 2), (3, 1), (3, 2)])
def test_ties_go_to_the_first_cell_of_each_window(k, s, rng, numba_mode):
    x = np.ones((1, 2, 6, 6))
    layer = nn.MaxPool2d(k, s)
    y = layer(x)
    d = rng.standard_normal(y.shape)
    dx = layer.backward(d)
    expect = np.zeros_like(x)
    for i, j in itertools.product(range(y.shape[2]), range(y.shape[3])):
        expect[:, :, i * s, j * s] += d[:, :, i, j]  # the window's top-left cell, deltas of shared cells add
    assert np.array_equal(dx, expect)


def test_ties_match_torch(torch_ref, rng):
    x = np.ones((1, 1, 5, 5))
    x[0, 0, 1, 3] = 2.0
    x[0, 0, 3, 1] = 2.0
    xt = torch_ref.tensor(x, requires_grad=True)
    yt = torch_ref.nn.functional.max_pool2d(xt, 3, 1)
    d = rng.standard_normal(yt.shape)
    yt.backward(torch_ref.tensor(d))
    layer = nn.MaxPool2d(3, 1)
    assert np.array_equal(layer(x), yt.detach().numpy())
    assert rel_err(layer.backward(d), xt.grad.numpy()) < 1e-15


# --- Darknet geometry ----------------------------------------------------------------------------------

def test_darknet_yolov3_tiny_layer11_keeps_13x13(torch_ref):
    pad = PG.darknet_maxpool_padding(13, 13, 2, 1, 1)
    assert pad == (0, 1, 0, 1)
    x = np.random.default_rng(0).standard_normal((1, 4, 13, 13))
    assert nn.MaxPool2d(2, 1, padding=pad)(x).shape == (1, 4, 13, 13)
    # PyTorch's ceil mode is a different rule: it gives 12×12 here
    assert tuple(torch_ref.nn.functional.max_pool2d(torch_ref.tensor(x), 2, 1, ceil_mode=True).shape[2:]) == (12, 12)


def test_darknet_outside_cells_are_minus_infinity():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: a 0 pad would win, −∞ must not
    layer = nn.MaxPool2d(2, 1, padding=PG.darknet_maxpool_padding(3, 3, 2, 1, 1))
    y = layer(x)
    assert np.array_equal(y, x)  # each window's max is its top-left cell (hand-computed)
    d = np.arange(9.0).reshape(1, 1, 3, 3) + 1
    assert np.array_equal(layer.backward(d), d)


def test_darknet_windows_start_at_minus_half_padding():
    # size 3, stride 2, padding 2 (Darknet's default size − 1) on 5×5: windows start at −1, 1, 3
    pad = PG.darknet_maxpool_padding(5, 5, 3, 2, 2)
    assert pad == (1, 1, 1, 1)
    x = -np.arange(25.0).reshape(1, 1, 5, 5)
    y, cache = P.max_pool2d_forward(x, 3, 2, pad)
    expect = np.array([[0, -1, -3], [-5, -6, -8], [-15, -16, -18]], dtype=float)
    assert np.array_equal(y[0, 0], expect)
    dx = P.max_pool2d_backward(np.ones_like(y), cache)
    hit = np.zeros((5, 5))
    for r, c in [(0, 0), (0, 1), (0, 3), (1, 0), (1, 1), (1, 3), (3, 0), (3, 1), (3, 3)]:
        hit[r, c] = 1
    assert np.array_equal(dx[0, 0], hit)
    # asymmetric case: size 2, stride 2, padding 1 on 5×5: out ⌊(5+1−2)/2⌋+1 = 3, windows at 0, 2, 4
    assert PG.darknet_maxpool_padding(5, 5, 2, 2, 1) == (0, 1, 0, 1)
    assert P.max_pool2d_forward(x, 2, 2, (0, 1, 0, 1))[0].shape == (1, 1, 3, 3)


def test_darknet_output_size_formula():
    for n, size, stride, padding in itertools.product([5, 8, 13], [1, 2, 3], [1, 2], [0, 1, 2]):
        if n + padding < size or padding - padding // 2 >= size:
            continue  # too small, or a last window lying wholly outside (Darknet would output −FLT_MAX)
        pad = PG.darknet_maxpool_padding(n, n, size, stride, padding)
        g = PG.pool_geometry((1, 1, n, n), size, stride, pad)
        assert g.ho == (n + padding - size) // stride + 1
        assert pad[0] == padding // 2


# --- numba vs NumPy, dtypes ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (2, 8, 48, 48)])
def test_numba_matches_numpy_bitwise(shape, rng):
    """(2, 8, 48, 48) has at least PARALLEL_MIN elements: the kernels' parallel route."""
    pytest.importorskip("numba")
    before = _numba.enabled()
    try:
        for dt in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dt)
            x[0, 0, :2, :2] = 1.0  # a tie
            outs = []
            for flag in (False, True):
                _numba.set_enabled(flag)
                y1, c1 = P.max_pool2d_forward(x, 2)
                y2, c2 = P.avg_pool2d_forward(x, 2)
                y3, c3 = P.lp_pool2d_forward(x, 2, 2)
                d = np.linspace(-1, 1, y1.size).reshape(y1.shape).astype(dt)
                outs.append([y1, P.max_pool2d_backward(d, c1), y2, P.avg_pool2d_backward(d, c2),
                             y3, P.lp_pool2d_backward(d, c3)])
            for a, b in zip(*outs):
                assert a.dtype == dt and np.array_equal(a, b)
    finally:
        _numba.set_enabled(before)


def test_numba_max_2x2_every_window_pattern_matches_numpy():
    """The branch-free 2×2/2 numba kernels against the NumPy path on every placement of NaN, ±inf, ties and
    ordinary values in a window (one window per pattern): outputs (NaN where NumPy has NaN), indices, and
    the backward."""
    pytest.importorskip("numba")
    vals = np.array([np.nan, np.inf, -np.inf, 1.0, 1.0, -2.0, 0.5])
    pats = np.array(list(itertools.product(range(len(vals)), repeat=4)))
    before = _numba.enabled()
    try:
        for dt in (np.float32, np.float64):
            n = len(pats)
            x = vals[pats].astype(dt).reshape(n, 2, 2)                      # window w: cells in row-major order
            x = x.reshape(1, 1, n, 2, 2).transpose(0, 1, 3, 2, 4).reshape(1, 1, 2, 2 * n)  # windows side by side
            d = np.linspace(1, 2, n).astype(dt).reshape(1, 1, 1, n)
            res = []
            for flag in (False, True):
                _numba.set_enabled(flag)
                y, cache = P.max_pool2d_forward(x, 2)
                res.append((y, cache.idx, P.max_pool2d_backward(d, cache)))
            (y0, i0, dx0), (y1, i1, dx1) = res
            assert np.array_equal(y0, y1, equal_nan=True) and np.array_equal(i0, i1) and np.array_equal(dx0, dx1)
            first = np.array([int(np.argmax(w)) if not np.isnan(w).any() else None for w in vals[pats]], object)
            ok = first != None  # noqa: E711 (elementwise on an object array)
            assert np.array_equal(i0.ravel()[ok].astype(int), first[ok].astype(int))
    finally:
        _numba.set_enabled(before)


@pytest.mark.parametrize("layer", [lambda: nn.MaxPool2d(3, 2, 1), lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2),
                                   lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True), lambda: nn.LPPool2d(2, 2),
                                   lambda: nn.LPPool2d(3, 2), lambda: nn.AdaptiveAvgPool2d(1),
                                   lambda: nn.AdaptiveAvgPool2d(2)])
def test_float32_stays_float32(layer, rng, numba_mode):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    m = layer()
    y = m(x)
    assert y.dtype == np.float32
    assert m.backward(np.ones_like(y)).dtype == np.float32


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 6))
    m = nn.MaxPool2d(2)
    y = m(x)
    assert y.shape == (3, 3, 3)
    assert np.array_equal(y, nn.MaxPool2d(2)(x[None])[0])
    assert m.backward(np.ones_like(y)).shape == x.shape


def test_get_config_round_trip():
    for layer in [nn.MaxPool2d(3, 2, (0, 1, 0, 1), 1, True), nn.AvgPool2d(2, 1, 1, True, False),
                  nn.LPPool2d(float("inf"), 2), nn.LPPool2d(2, (2, 3), 1), nn.AdaptiveAvgPool2d((2, None))]:
        again = type(layer)(**layer.get_config())
        assert repr(again) == repr(layer)


# --- errors --------------------------------------------------------------------------------------------

def test_errors():
    x = np.zeros((2, 3, 3, 3), dtype=np.float32)
    with pytest.raises(ShapeError, match="smaller than the kernel"):
        nn.MaxPool2d(4)(x)
    with pytest.raises(ShapeError, match="smaller than the kernel"):
        nn.AvgPool2d(2)(np.zeros((1, 1, 1, 5), np.float32))
    with pytest.raises(ShapeError, match="padding only"):
        nn.MaxPool2d(2, padding=2)(x)
    with pytest.raises(ShapeError, match="N, C, H, W"):
        nn.MaxPool2d(2)(np.zeros((3, 3), np.float32))
    bad = np.ones((1, 1, 4, 4), dtype=np.float32)
    bad[0, 0, 1, 2] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        nn.MaxPool2d(2)(bad)
    with pytest.raises(ValueError, match="norm_type"):
        nn.LPPool2d(0.5, 2)
    with pytest.raises(ValueError, match="padding"):
        nn.MaxPool2d(2, padding=(1, 2, 3))
