"""PyTorch parity of every pooling kind: outputs and input gradients, ≤ 1e-10 (float64), ≤ 1e-4 (float32)."""
from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

import deltaprop.nn as nn
from deltaprop.runtime import jit as _numba

from conftest import rel_err

SHAPES = [(1, 2, 7, 6), (2, 3, 8, 8), (1, 1, 5, 9)]
KERNELS = [1, 2, 3, (2, 3)]
STRIDES = [1, 2, 3]


def _valid(k, s, p, d=1):
    kh, kw = (k, k) if isinstance(k, int) else k
    return p <= min(kh, kw) // 2


def _parity(torch, ours, theirs, x, rng, tol=1e-10):
    """Run our layer and torch's functional on the same x and upstream gradient; compare y and dx."""
    xt = torch.tensor(x, requires_grad=True)
    try:
        yt = theirs(xt)
    except RuntimeError:  # torch rejects the geometry (output size ≤ 0): so must we
        with pytest.raises(ValueError):
            ours(x)
        return 0
    y = ours(x)
    d = rng.standard_normal(y.shape).astype(x.dtype)
    yt.backward(torch.tensor(d))
    dx = ours.backward(d)
    assert y.shape == tuple(yt.shape)
    assert rel_err(y, yt.detach().numpy()) <= tol
    assert rel_err(dx, xt.grad.numpy()) <= tol
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    return 1


@pytest.mark.parametrize("use_numba", [False, True], ids=["numpy", "numba"])
def test_maxpool_grid(torch_ref, rng, use_numba):
    # without numba the "numba" variant runs the NumPy path again (never a skip: CI forbids skipped parity tests)
    before = _numba.enabled()
    _numba.set_enabled(use_numba)
    F = torch_ref.nn.functional
    n = 0
    try:
        for shape, k, s, p, d, ceil in itertools.product(SHAPES, KERNELS, STRIDES, [0, 1], [1, 2], [False, True]):
            if not _valid(k, s, p):
                continue
            x = rng.standard_normal(shape)
            n += _parity(torch_ref, nn.MaxPool2d(k, s, p, d, ceil),
                         lambda t: F.max_pool2d(t, k, s, p, d, ceil_mode=ceil), x, rng)
    finally:
        _numba.set_enabled(before)
    assert n > 150


def test_avgpool_grid(torch_ref, rng):
    F = torch_ref.nn.functional
    n = 0
    for shape, k, s, p, ceil, cip in itertools.product(SHAPES, KERNELS, STRIDES, [0, 1], [False, True],
                                                       [True, False]):
        if not _valid(k, s, p):
            continue
        x = rng.standard_normal(shape)
        n += _parity(torch_ref, nn.AvgPool2d(k, s, p, ceil, cip),
                     lambda t: F.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=cip), x, rng)
    assert n > 150


@pytest.mark.parametrize("p", [1, 2, 3, 1.5, float("inf")])
def test_lppool_nonnegative(torch_ref, rng, p):
    """x ≥ 0 (after a ReLU, say): PyTorch's x^p and §4's |x|^p agree. Ceil mode only where no window hangs
    off the input (PyTorch rescales such windows, see test_lppool_ceil_overhang)."""
    F = torch_ref.nn.functional
    for shape, k, s, ceil in itertools.product(SHAPES[:2], KERNELS, STRIDES, [False, True]):
        x = np.abs(rng.standard_normal(shape)) + 0.1
        kh, kw = (k, k) if isinstance(k, int) else k
        h, w = shape[2:]
        if ceil and ((h - kh) % s or (w - kw) % s):
            continue
        _parity(torch_ref, nn.LPPool2d(p, k, s, ceil), lambda t: F.lp_pool2d(t, p, k, s, ceil_mode=ceil), x, rng)


def test_lppool_p2_signed(torch_ref, rng):
    """p = 2 (even): x² = |x|², so PyTorch agrees on signed inputs too."""
    F = torch_ref.nn.functional
    for k, s in [(2, 2), (3, 1), ((2, 3), 2)]:
        x = rng.standard_normal((2, 3, 7, 8))
        _parity(torch_ref, nn.LPPool2d(2, k, s), lambda t: F.lp_pool2d(t, 2, k, s), x, rng)


def test_lppool_ceil_overhang(torch_ref, rng):
    """Where ceil mode lets a window hang off the input, PyTorch (avg_pool · k_h·k_w) scales its sum by
    k_h·k_w/cells; §4's g sums the cells that exist. The difference is exactly that factor."""
    x = np.abs(rng.standard_normal((1, 1, 5, 5))) + 0.1
    p = 2.0
    ours = nn.LPPool2d(p, 2, 2, ceil_mode=True)(x)
    theirs = torch_ref.nn.functional.lp_pool2d(torch_ref.tensor(x), p, 2, 2, ceil_mode=True).numpy()
    cells = np.outer([2, 2, 1], [2, 2, 1])
    assert rel_err(ours ** p * 4 / cells, theirs ** p) < 1e-12


@pytest.mark.parametrize("out", [1, 2, (3, 4), (5, 2), (None, 3)])
def test_adaptive_avg(torch_ref, rng, out):
    x = rng.standard_normal((2, 3, 7, 6))
    _parity(torch_ref, nn.AdaptiveAvgPool2d(out),
            lambda t: torch_ref.nn.functional.adaptive_avg_pool2d(t, out), x, rng)


def test_float32_parity(torch_ref, rng):
    F = torch_ref.nn.functional
    for use_numba in [False] + ([True] if importlib.util.find_spec("numba") else []):
        before = _numba.enabled()
        _numba.set_enabled(use_numba)
        try:
            x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
            _parity(torch_ref, nn.MaxPool2d(2), lambda t: F.max_pool2d(t, 2), x, rng, 1e-4)
            _parity(torch_ref, nn.MaxPool2d(3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1), x, rng, 1e-4)
            _parity(torch_ref, nn.AvgPool2d(2), lambda t: F.avg_pool2d(t, 2), x, rng, 1e-4)
            _parity(torch_ref, nn.AvgPool2d(3, 2, 1, True), lambda t: F.avg_pool2d(t, 3, 2, 1, True), x, rng, 1e-4)
            _parity(torch_ref, nn.LPPool2d(2, 2), lambda t: F.lp_pool2d(t, 2, 2), x, rng, 1e-4)
            _parity(torch_ref, nn.AdaptiveAvgPool2d(1), lambda t: F.adaptive_avg_pool2d(t, 1), x, rng, 1e-4)
        finally:
            _numba.set_enabled(before)
