"""Fused batch norm + activation with numba (extra ``deltaprop[fast]``), used by ``norm_fused.batchnorm_act_*``.

The per-channel sums stay the NumPy path's BLAS products (``norm.bn_statistics``, ``norm_fused.bn_act_grads``);
numba fuses the elementwise passes around them: forward ``z − μ`` (one pass), then ``y = (z − μ)·(γ·inv_std) + β``
and ``a = σ(y)`` (one pass, writing a only: the cache keeps z − μ); backward ``δ = dout ⊙ σ'(y)`` with y
recomputed (one pass) and the input gradient ``δ·k1 − (z − μ)·k2 − k3`` (one pass, in place). The folded
batch norm of inference (``conv_bn.affine_act_``: σ(z·scale + shift) in place, ``_affine_act``) is here too, beside
the σ it applies (an ``inline`` helper is called only from kernels of its own module). Each value goes
through the same float operations in the same order as the NumPy path, so the two give the same numbers bit
for bit. The activation is a select on ``y > 0``, not a branch (random signs would mispredict).

The elementwise kernels are parallel over the (sample, channel) rows (``prange``; the serial build below
``_numba.PARALLEL_MIN`` elements). Each cell is computed as before, so the numbers do not change. Measured on
a 2-vCPU Xeon, yolov3-tiny's training step at 320 with numba: 573 → 524 ms with MKL (the shared pool).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..runtime.jit import inline, jit, prange
from ..functional.norm import bn_statistics, channel_view
from ..functional.norm_fused import NumbaCache, bn_act_grads

_CODES = {"linear": 0, "relu": 1, "leaky": 2}


@jit(parallel=True)
def _center(x3, mean, out):
    """out = z − μ per channel (the centring of §8's statistics), mirroring ``norm._center``: the
    ``center`` that ``norm.bn_statistics`` calls on this path (the same subtraction, so the same numbers)."""
    n, c, s = x3.shape
    for r in prange(n * c):
        b = r // c
        ch = r - b * c
        mu = mean[ch]
        for k in range(s):
            out[b, ch, k] = x3[b, ch, k] - mu


@inline
def _sigma(y, v, code, slope, zero):
    """v where y > 0, else v·slope (code 2, leaky), v (code 0, linear) or 0 (code 1, ReLU): σ(y) for v = y,
    and δ·σ'(y) for v = δ. Mirrors ``activation.leaky_relu_into`` / ``relu_forward`` (v = y) and
    ``activation.leaky_relu_derivative`` / ``relu_backward`` (v = δ); tests/test_single_home.py holds them equal."""
    neg = v * slope if code == 2 else (v if code == 0 else zero)
    return v if y > 0 else neg


@inline
def _affine_sigma(x, a, bt, code, slope, zero):
    """σ(x·a + β), the product and the sum rounded apart (as the NumPy path's two passes)."""
    y = x * a
    y = y + bt
    return _sigma(y, y, code, slope, zero)


@inline
def _take_if_greater(v, m, b, k):
    """(max, index) after one more cell of a window, as ``_pool_numba._max_fwd``: v and k when v > m (first
    maximum wins), the max becomes NaN when v is (np.maximum), both by selects, no data-dependent branch."""
    gt = v > m
    return (v if gt | (v != v) else m), (k if gt else b)


@jit(parallel=True)
def _affine_act(z, scale, shift, code, slope):
    """In place, z (N, C, S): z ← σ(z·scale[c] + shift[c]) by ``_affine_sigma``, the batch norm in evaluation
    folded into a scale and shift (``conv_bn.affine_act_``; mirrors its NumPy path ``conv_bn._affine_act_np``).
    One (n, c) row per iteration of the parallel loop."""
    n, c, s = z.shape
    zero = z.dtype.type(0)
    for r in prange(n * c):
        b = r // c
        ch = r - b * c
        a = scale[ch]
        t = shift[ch]
        for k in range(s):
            z[b, ch, k] = _affine_sigma(z[b, ch, k], a, t, code, slope, zero)


@jit(parallel=True)
def _act_map(xc, scale, beta, code, slope, dout, out):
    """With y = (z − μ)·scale + β per cell: σ(y) when ``dout`` is None (the forward), else dout·σ'(y) (its
    backward, P2 of §2). σ by ``code``: 0 linear, 1 ReLU, 2 leaky with ``slope``. numba compiles the two uses
    apart (``dout`` None is a type), so neither pays for the other's branch (measured equal to two kernels)."""
    n, c, s = xc.shape
    zero = out.dtype.type(0)
    for r in prange(n * c):
        b = r // c
        ch = r - b * c
        a = scale[ch]
        bt = beta[ch]
        for k in range(s):
            y = xc[b, ch, k] * a
            y = y + bt
            out[b, ch, k] = _sigma(y, y if dout is None else dout[b, ch, k], code, slope, zero)


@jit(parallel=True)
def _input_grad(dz, xc, k1, k2, k3):
    """In place: dz ← (dz·k1 − (z − μ)·k2) − k3 per channel: BN 2.3, mirroring ``norm.bn_input_grad`` (the same
    operations in the same order; tests/test_single_home.py holds them equal)."""
    n, c, s = dz.shape
    for r in prange(n * c):
        b = r // c
        ch = r - b * c
        a1 = k1[ch]
        a2 = k2[ch]
        a3 = k3[ch]
        for k in range(s):
            v = dz[b, ch, k] * a1
            v = v - xc[b, ch, k] * a2
            dz[b, ch, k] = v - a3


@jit(parallel=True)
def _scale(dz, k1):
    """In place: dz ← dz·k1 per channel, mirroring ``norm.bn_input_grad`` with k2 = k3 = None (the running
    statistics normalised)."""
    n, c, s = dz.shape
    for r in prange(n * c):
        b = r // c
        ch = r - b * c
        a1 = k1[ch]
        for k in range(s):
            dz[b, ch, k] = dz[b, ch, k] * a1


@jit(parallel=True)
def _apply_pool(xc, scale, beta, code, slope, out, idx):
    """σ((z − μ)·scale + β) on each cell of every 2×2/2 window, then the window's maximum and its row-major
    index: ``_act_map``'s forward operations, then ``_pool_numba._max_fwd``'s selects; the activated map is
    not stored."""
    n, c = xc.shape[0], xc.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    k0, k1, k2, k3 = idx.dtype.type(0), idx.dtype.type(1), idx.dtype.type(2), idx.dtype.type(3)
    for row in prange(n * c):
        s = row // c
        ch = row - s * c
        a = scale[ch]
        bt = beta[ch]
        for i in range(ho):
            r = 2 * i
            for j in range(wo):
                q = 2 * j
                m = _affine_sigma(xc[s, ch, r, q], a, bt, code, slope, zero)
                b = k0
                m, b = _take_if_greater(_affine_sigma(xc[s, ch, r, q + 1], a, bt, code, slope, zero), m, b, k1)
                m, b = _take_if_greater(_affine_sigma(xc[s, ch, r + 1, q], a, bt, code, slope, zero), m, b, k2)
                m, b = _take_if_greater(_affine_sigma(xc[s, ch, r + 1, q + 1], a, bt, code, slope, zero), m, b, k3)
                out[s, ch, i, j] = m
                idx[s, ch, i, j] = b


@jit(parallel=True)
def _pool_act_grad(dout, idx, xc, scale, beta, code, slope, dz):
    """δ = σ'(y)·(the window's delta at its arg-max, 0 elsewhere), one output row at a time: the numbers of
    ``_pool_numba._max_bwd`` then ``_act_map``'s backward (a cell that is not the arg-max gets 0 either way)."""
    ho, wo = dout.shape[2], dout.shape[3]
    zero = dz.dtype.type(0)
    c = dz.shape[1]
    for row in prange(dz.shape[0] * c):
        s = row // c
        ch = row - s * c
        a = scale[ch]
        bt = beta[ch]
        for i in range(ho):
            for e in range(2):
                r = 2 * i + e
                c0 = 2 * e
                c1 = 2 * e + 1
                for j in range(wo):
                    d = dout[s, ch, i, j]
                    k = idx[s, ch, i, j]
                    y = xc[s, ch, r, 2 * j] * a
                    y = y + bt
                    g = _sigma(y, d, code, slope, zero)
                    dz[s, ch, r, 2 * j] = g if k == c0 else zero
                    y = xc[s, ch, r, 2 * j + 1] * a
                    y = y + bt
                    g = _sigma(y, d, code, slope, zero)
                    dz[s, ch, r, 2 * j + 1] = g if k == c1 else zero


def _center_nb(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    out = np.empty_like(x3)
    _center(x3, mean, out)
    return out


def bn_act_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: Optional[np.ndarray],
                   running_var: Optional[np.ndarray], training: bool, momentum: float, eps: float, activation: str,
                   negative_slope: float) -> Tuple[np.ndarray, NumbaCache]:
    """``norm_fused.batchnorm_act_forward`` with numba: the statistics of ``norm.bn_statistics``, then σ(BN(z))
    in one pass (``_act_map``); the cache keeps z − μ."""
    x3 = channel_view(x)
    dt = x3.dtype
    xc, inv_std, batch = bn_statistics(x3, running_mean, running_var, training, momentum, eps, _center_nb)
    code = _CODES[activation]
    slope = dt.type(negative_slope)
    gamma = gamma.astype(dt, copy=False)
    beta = beta.astype(dt, copy=False)
    scale = gamma * inv_std
    out = np.empty_like(x3)
    _act_map(xc, scale, beta, code, slope, None, out)
    return out.reshape(x.shape), NumbaCache(xc, inv_std, gamma, beta, batch, code, slope, x.shape)


def bn_act_backward(dout: np.ndarray, cache: NumbaCache,
                    need_dx: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """``norm_fused.batchnorm_act_backward`` for a ``NumbaCache``: δ = dout ⊙ σ'(y) in one pass (P2, y
    recomputed), then BN 2.5, 2.6 and BN 2.1–2.3 (``_bn_input_grad``). Returns (dx, dγ, dβ)."""
    xc, inv_std, gamma, beta, batch, code, slope, shape = cache
    d3 = channel_view(dout)
    dz = np.empty_like(d3)
    _act_map(xc, gamma * inv_std, beta, code, slope, d3, dz)
    return _bn_input_grad(dz, cache, need_dx)


def _bn_input_grad(dz: np.ndarray, cache: NumbaCache,
                   need_dx: bool) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """(dx, dγ, dβ) from δ = ∂C/∂y (N, C, S), overwritten by dx."""
    xc, inv_std, gamma, beta, batch, code, slope, shape = cache
    dbeta, dgamma, k1, k2, k3 = bn_act_grads(dz, xc, inv_std, gamma, batch)
    if not need_dx:
        return None, dgamma, dbeta
    if batch:
        _input_grad(dz, xc, k1, k2, k3)
    else:
        _scale(dz, k1)
    return dz.reshape(shape), dgamma, dbeta


def bn_act_pool_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: Optional[np.ndarray],
                        running_var: Optional[np.ndarray], training: bool, momentum: float, eps: float,
                        activation: str, negative_slope: float, idx_dtype) -> Tuple[np.ndarray, NumbaCache, np.ndarray]:
    """(pooled output, ``bn_act_forward``'s cache, window indices): ``bn_act_forward`` then 2×2/2 max pooling
    (even H and W) in one pass over z − μ."""
    x3 = channel_view(x)
    dt = x3.dtype
    xc, inv_std, batch = bn_statistics(x3, running_mean, running_var, training, momentum, eps, _center_nb)
    gamma = gamma.astype(dt, copy=False)
    beta = beta.astype(dt, copy=False)
    code = _CODES[activation]
    slope = dt.type(negative_slope)
    n, c, h, w = x.shape
    out = np.empty((n, c, h // 2, w // 2), dtype=dt)
    idx = np.empty(out.shape, dtype=idx_dtype)
    _apply_pool(xc.reshape(x.shape), gamma * inv_std, beta, code, slope, out, idx)
    return out, NumbaCache(xc, inv_std, gamma, beta, batch, code, slope, x.shape), idx


def bn_act_pool_backward(dout: np.ndarray, idx: np.ndarray, cache: NumbaCache,
                         need_dx: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """The backward of ``bn_act_pool_forward`` (numba enabled): the pooled activation gradient in one pass."""
    xc, inv_std, gamma, beta, batch, code, slope, shape = cache
    dz = np.empty(shape, dtype=xc.dtype)
    _pool_act_grad(np.ascontiguousarray(dout), idx, xc.reshape(shape), gamma * inv_std, beta, code, slope, dz)
    return _bn_input_grad(dz.reshape(xc.shape), cache, need_dx)
