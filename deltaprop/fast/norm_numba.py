"""Batch norm + activation (+ 2×2 max pooling) with numba (extra ``deltaprop[fast]``): variants of
``functional.norm_fused.batchnorm_act_forward``/``batchnorm_act_maxpool2_forward`` and of the folded evaluation
``functional.conv_bn.affine_act_``.

The per-channel sums stay the BLAS products (``norm.bn_statistics``, ``fast.norm_fused.bn_act_grads``); numba
fuses the elementwise passes around them: forward ``z − μ`` (one pass), then ``y = (z − μ)·(γ·inv_std) + β``
and ``a = σ(y)`` (one pass, writing a only: the cache keeps z − μ); backward ``δ = dout ⊙ σ'(y)`` with y
recomputed (one pass) and the input gradient ``δ·k1 − (z − μ)·k2 − k3`` (one pass, in place). The folded
batch norm of evaluation (σ(z·scale + shift) in place, ``_affine_act``) is here too, beside the σ it applies
(an ``inline`` helper is called only from kernels of its own module). Each value goes through the same float
operations in the same order as the NumPy passes of ``fast.norm_fused``, so the two give the same numbers bit
for bit (against the references: the tolerances of ``fast.norm_fused``). The activation is a select on ``y > 0``,
not a branch (random signs would mispredict).

The elementwise kernels are parallel over the (sample, channel) rows (``prange``; the serial build below
``_numba.PARALLEL_MIN`` elements). Each cell is computed as before, so the numbers do not change. Measured on
a 2-vCPU Xeon, yolov3-tiny's training step at 320 with numba: 573 → 524 ms with MKL (the shared pool). The
fused pooling pass pays where pooled rows are at least ``FUSED_POOL_MIN_WIDTH`` wide; narrower ones run the
numba batch norm + activation, then the pooling.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from ..functional import conv_bn
from ..functional.norm import AllSum, BNStats, bn_statistics, channel_view
from ..functional.norm_fused import Grads, check_activation
from ..functional.pool import MaxPoolCache, max_pool2d_backward, max_pool2d_forward
from ..functional.pool_geometry import PoolGeometry, pool_geometry
from ..runtime import jit as _numba
from ..runtime.jit import inline, jit, prange
from .norm_fused import bn_act_grads, examples

_CODES = {"linear": 0, "relu": 1, "leaky": 2}


@jit(parallel=True)
def _center(x3, mean, out):
    """out = z − μ per channel (the centring of BN forward's statistics), mirroring ``norm.channel_center`` (the
    same subtraction, so the same numbers)."""
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
    """(max, index) after one more cell of a window, as ``pool_numba._max_fwd``: v and k when v > m (first
    maximum wins), the max becomes NaN when v is (np.maximum), both by selects, no data-dependent branch."""
    gt = v > m
    return (v if gt | (v != v) else m), (k if gt else b)


@jit(parallel=True)
def _affine_act(z, scale, shift, code, slope):
    """In place, z (N, C, S): z ← σ(z·scale[c] + shift[c]) by ``_affine_sigma``, the batch norm in evaluation
    folded into a scale and shift (mirrors ``conv_bn.affine_act_``).
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
    index: ``_act_map``'s forward operations, then ``pool_numba._max_fwd``'s selects; the activated map is
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
    ``pool_numba._max_bwd`` then ``_act_map``'s backward (a cell that is not the arg-max gets 0 either way)."""
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


# --- the variants ---------------------------------------------------------------------------------------------

FUSED_POOL_MIN_WIDTH = 16  # pooled rows shorter than this do not vectorise: bn + activation, then the pooling


class NumbaCache(NamedTuple):
    """The numba passes: z − μ (N, C, S), the statistics, γ, β, σ's code and slope (σ' is recomputed from y), the
    input's shape."""
    xc: np.ndarray
    stats: BNStats
    gamma: np.ndarray
    beta: np.ndarray
    code: int
    slope: np.floating
    shape: tuple


class FusedPoolCache(NamedTuple):
    """One numba pass normalised, activated and pooled: ``NumbaCache`` and the window indices."""
    bn: NumbaCache
    idx: np.ndarray
    geometry: PoolGeometry


class NumbaThenPoolCache(NamedTuple):
    """The numba batch norm + activation (``NumbaCache``), then ``max_pool2d_forward``'s cache."""
    bn: NumbaCache
    pool: MaxPoolCache


def center_numba(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``norm.channel_center`` in one parallel pass (``_center``): the centring of this module's batch norm +
    activation (the plain batch norm keeps NumPy's, faster for short rows: 4 µs against 32 µs on (64, 100, 1))."""
    out = np.empty_like(x3)
    _center(x3, mean, out)
    return out


def affine_act_numba(z: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str = "linear",
                     slope: float = 0.1) -> np.ndarray:
    """``conv_bn.affine_act_`` in one parallel pass (``_affine_act``), in place on z."""
    z3 = conv_bn._checked(z, activation)
    dt = z.dtype
    _affine_act(z3, np.ascontiguousarray(scale, dtype=dt), np.ascontiguousarray(shift, dtype=dt),
                _CODES[activation], dt.type(slope))
    return z


def _statistics(x, gamma, beta, running_mean, running_var, training, momentum, eps, activation, negative_slope,
                allsum):
    """(x as (N, C, S), z − μ, statistics, γ, β, σ's code and slope) in x's dtype: ``norm.bn_statistics``."""
    check_activation(activation)
    x3 = channel_view(x)
    dt = x3.dtype
    xc, stats = bn_statistics(x3, running_mean, running_var, training, momentum, eps, allsum, x.shape,
                              center=center_numba)
    return (x3, xc, stats, gamma.astype(dt, copy=False), beta.astype(dt, copy=False), _CODES[activation],
            dt.type(negative_slope))


def bn_act_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: Optional[np.ndarray] = None,
                   running_var: Optional[np.ndarray] = None, training: bool = True, momentum: float = 0.1,
                   eps: float = 1e-5, activation: str = "leaky", negative_slope: float = 0.01,
                   allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, NumbaCache]:
    """``batchnorm_act_forward`` with numba: the statistics of ``norm.bn_statistics``, then σ(BN(z)) in one pass
    (``_act_map``); the cache keeps z − μ."""
    x3, xc, stats, gamma, beta, code, slope = _statistics(x, gamma, beta, running_mean, running_var, training,
                                                         momentum, eps, activation, negative_slope, allsum)
    out = np.empty_like(x3)
    _act_map(xc, gamma * stats.inv_std, beta, code, slope, None, out)
    return out.reshape(x.shape), NumbaCache(xc, stats, gamma, beta, code, slope, x.shape)


def _input_grad_into(dz: np.ndarray, cache: NumbaCache, need_dx: bool) -> Grads:
    """(dx, dγ, dβ) from δ = ∂C/∂y (N, C, S), overwritten by dx: BN 2.5, 2.6 (``bn_act_grads``), then BN 2.3 in one
    pass (``_input_grad``, or ``_scale`` when the running statistics normalised)."""
    dbeta, dgamma, k1, k2, k3 = bn_act_grads(dz, cache.xc, cache.stats, cache.gamma)
    if not need_dx:
        return None, dgamma, dbeta
    if k2 is not None:
        _input_grad(dz, cache.xc, k1, k2, k3)
    else:
        _scale(dz, k1)
    return dz.reshape(cache.shape), dgamma, dbeta


def bn_act_backward(dout: np.ndarray, cache: NumbaCache, need_dx: bool = True, consume_cache: bool = False) -> Grads:
    """The backward of ``bn_act_forward``: δ = dout ⊙ σ'(y) in one pass (P2, y recomputed), then BN 2.5, 2.6 and
    BN 2.1–2.3 (``_input_grad_into``). Returns (dx, dγ, dβ)."""
    xc, stats, gamma, beta, code, slope, shape = cache
    dz = np.empty_like(xc)
    _act_map(xc, gamma * stats.inv_std, beta, code, slope, channel_view(dout), dz)
    return _input_grad_into(dz, cache, need_dx)


def bn_act_pool_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                        running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                        training: bool = True, momentum: float = 0.1, eps: float = 1e-5, activation: str = "leaky",
                        negative_slope: float = 0.01,
                        allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, FusedPoolCache]:
    """``batchnorm_act_maxpool2_forward`` in one pass over z − μ (even H and W): σ(BN(z)) of each cell of every
    2×2/2 window, then the window's maximum and its index (``_apply_pool``); the activated map is never stored."""
    g = pool_geometry(x.shape, 2, name="batchnorm_act_maxpool2")
    x3, xc, stats, gamma, beta, code, slope = _statistics(x, gamma, beta, running_mean, running_var, training,
                                                         momentum, eps, activation, negative_slope, allsum)
    n, c, h, w = x.shape
    out = np.empty((n, c, h // 2, w // 2), dtype=x3.dtype)
    idx = np.empty(out.shape, dtype=np.uint8)
    _apply_pool(xc.reshape(x.shape), gamma * stats.inv_std, beta, code, slope, out, idx)
    return out, FusedPoolCache(NumbaCache(xc, stats, gamma, beta, code, slope, x.shape), idx, g)


def bn_act_pool_backward(dout: np.ndarray, cache: FusedPoolCache, need_dx: bool = True,
                         consume_cache: bool = False) -> Grads:
    """The backward of ``bn_act_pool_forward``: each window's delta through σ' to its arg-max cell in one pass
    (``_pool_act_grad``), then BN 2.5, 2.6 and BN 2.1–2.3 (``_input_grad_into``)."""
    bn, idx, _ = cache
    xc, stats, gamma, beta, code, slope, shape = bn
    dz = np.empty(shape, dtype=xc.dtype)
    _pool_act_grad(np.ascontiguousarray(dout), idx, xc.reshape(shape), gamma * stats.inv_std, beta, code, slope, dz)
    return _input_grad_into(dz.reshape(xc.shape), bn, need_dx)


def bn_act_then_pool_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                             running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                             training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                             activation: str = "leaky", negative_slope: float = 0.01,
                             allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, NumbaThenPoolCache]:
    """``batchnorm_act_maxpool2_forward`` where the one-pass kernel does not pay: ``bn_act_forward``, then
    ``max_pool2d_forward``."""
    pool_geometry(x.shape, 2, name="batchnorm_act_maxpool2")
    a, bn = bn_act_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, activation,
                           negative_slope, allsum)
    out, pool = max_pool2d_forward(a, 2)
    return out, NumbaThenPoolCache(bn, pool)


def bn_act_then_pool_backward(dout: np.ndarray, cache: NumbaThenPoolCache, need_dx: bool = True,
                              consume_cache: bool = False) -> Grads:
    """``max_pool2d_backward``, then ``bn_act_backward``."""
    return bn_act_backward(max_pool2d_backward(dout, cache.pool), cache.bn, need_dx)


def _on(x, *_, **__) -> bool:
    return isinstance(x, np.ndarray) and _numba.enabled()


def _on_with_gamma(x, gamma, *_, **__) -> bool:
    return _on(x) and gamma is not None


def _one_pass_pool(x, gamma, *_, **__) -> bool:
    """numba, γ given, (N, C, H, W) with even H and W and pooled rows at least ``FUSED_POOL_MIN_WIDTH`` wide."""
    return (_on_with_gamma(x, gamma) and x.ndim == 4 and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and x.shape[3] // 2 >= FUSED_POOL_MIN_WIDTH)


def _rand(shape, dtype, k: int) -> np.ndarray:
    return np.random.default_rng(k).standard_normal(shape).astype(dtype)


_DTYPES = (np.float32, np.float64)
_PARALLEL = (2, 8, 32, 64)   # 32768 elements: the parallel build (``_numba.PARALLEL_MIN``)
_ACTS = [("leaky", 0.1), ("relu", 0.0), ("linear", 0.0), ("leaky", 1.5)]
# float32: γ·inv_std rounded once instead of ẑ then γẑ (the tolerance of ``fast.norm_fused``)
_RTOL, _ATOL = 2e-5, 2e-5

dispatch.register(dispatch.Variant(
    op="affine_act", name="numba", forward=affine_act_numba, applies=_on, priority=10,
    mirrors="functional.conv_bn.affine_act_", doc=affine_act_numba.__doc__,
    examples=lambda: [dispatch.Example((_rand(sh, dt, 2), _rand(sh[1], dt, 3), _rand(sh[1], dt, 4), act, dt(slope)))
                      for dt in _DTYPES for sh in ((3, 4, 5, 6), _PARALLEL)
                      for act, slope in (("linear", 0.1), ("relu", 0.1), ("leaky", 0.1), ("leaky", 1.3),
                                         ("leaky", -0.2))]))

dispatch.register(dispatch.Variant(
    op="batchnorm_act", name="numba", forward=bn_act_forward, applies=_on_with_gamma, backward=bn_act_backward,
    caches=(NumbaCache,), priority=20, exact=False, rtol=_RTOL, atol=_ATOL,
    mirrors="functional.norm_fused.batchnorm_act_forward", doc=bn_act_forward.__doc__,
    examples=lambda: examples([(3, 4, 5, 6), _PARALLEL], _ACTS + [("leaky", -0.2)])))

dispatch.register(dispatch.Variant(
    op="batchnorm_act_maxpool2", name="numba one pass", forward=bn_act_pool_forward, applies=_one_pass_pool,
    backward=bn_act_pool_backward, caches=(FusedPoolCache,), priority=30, exact=False, rtol=_RTOL, atol=_ATOL,
    mirrors="functional.norm_fused.batchnorm_act_maxpool2_forward", doc=bn_act_pool_forward.__doc__,
    examples=lambda: examples([(2, 3, 8, 64), (2, 3, 6, 34), _PARALLEL[:2] + (64, 80)],
                              _ACTS + [("leaky", 0.0), ("leaky", -0.5)])))

dispatch.register(dispatch.Variant(
    op="batchnorm_act_maxpool2", name="numba then pool", forward=bn_act_then_pool_forward, applies=_on_with_gamma,
    backward=bn_act_then_pool_backward, caches=(NumbaThenPoolCache,), priority=20,
    mirrors="functional.norm_fused.batchnorm_act_maxpool2_forward", doc=bn_act_then_pool_forward.__doc__,
    examples=lambda: examples([(2, 3, 8, 8), (3, 4, 7, 33), (2, 3, 9, 6)], _ACTS + [("leaky", -0.5)])))
