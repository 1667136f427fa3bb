"""Fused batch norm + activation (+ 2×2 max pooling) kernels, standard convention (docs/equations.md §8, §5, §4).

``batchnorm_act_*`` give the numbers of ``norm.batch_norm_forward`` then the activation (then ``max_pool2d``),
with fewer passes over memory: the scale γ·inv_std is applied to z − μ in one multiply and ẑ is never stored.
With numba enabled the elementwise passes run fused (``_norm_numba``), same numbers. The statistics and the
input gradient are ``norm``'s (``channel_sum``/``channel_dot``, BN 2.3 in ``bn_grad_coefs``/``bn_input_grad``);
the activation and its derivative are ``activation``'s.

Each path the forward chooses leaves its own typed cache, and the backward dispatches on that type:
``PlainCache`` (no γ: the plain kernels in turn), ``NumpyCache`` (NumPy passes), ``NumbaCache`` (numba passes;
made by ``_norm_numba``), and for the pooled kernel ``FusedPoolCache``, ``NumpyPoolCache``, ``SeparatePoolCache``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

from ..runtime import jit as _numba
from . import activation as A
from .norm import (BNCache, _col, _per_batch, batch_norm_backward, batch_norm_forward, bn_grad_coefs, bn_input_grad,
                   bn_statistics, channel_dot, channel_sum, channel_view)
from .pool import MaxPoolCache, max_pool2d_backward, max_pool2d_forward
from .pool_geometry import PoolGeometry, pool_geometry

ACTIVATIONS = ("linear", "relu", "leaky")
_Grads = Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]  # (dx, dγ, dβ)
ActCache = Union[A.ReluCache, A.LeakyReluCache]               # the activation's backward cache (None: linear)


class PlainCache(NamedTuple):
    """No γ: ``batch_norm_forward``'s cache, then the activation's."""
    bn: BNCache
    activation: str
    act: Optional[ActCache]


class NumpyCache(NamedTuple):
    """The NumPy passes: z − μ (N, C, S), inv_std, γ, batch statistics used, σ and its backward cache."""
    xc: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    batch: bool
    activation: str
    act: Optional[ActCache]
    shape: tuple


class NumbaCache(NamedTuple):
    """The numba passes (``_norm_numba``): z − μ, inv_std, γ, β, batch statistics used, σ's code and slope
    (σ' is recomputed from y)."""
    xc: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    batch: bool
    code: int
    slope: np.floating
    shape: tuple


BNActCache = Union[PlainCache, NumpyCache, NumbaCache]     # ``batchnorm_act_forward``'s, by path


class FusedPoolCache(NamedTuple):
    """One numba pass normalised, activated and pooled: ``NumbaCache`` and the window indices."""
    bn: NumbaCache
    idx: np.ndarray
    geometry: PoolGeometry


class NumpyPoolCache(NamedTuple):
    """The NumPy path of the pooled kernel: σ' known from the pooled output's sign (``pos``)."""
    xc: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    batch: bool
    activation: str
    slope: float
    pos: Optional[np.ndarray]
    pool: MaxPoolCache
    shape: tuple


class SeparatePoolCache(NamedTuple):
    """``batchnorm_act_forward``'s cache, then ``max_pool2d_forward``'s."""
    bn: BNActCache
    pool: MaxPoolCache


BNActPoolCache = Union[FusedPoolCache, NumpyPoolCache, SeparatePoolCache]   # ``batchnorm_act_maxpool2_forward``'s


def _check_act(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"batchnorm_act: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def bn_act_grads(dy: np.ndarray, xc: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray,
                 batch: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(dβ, dγ, k1, k2, k3) of the fused backward from δ = ∂C/∂y (N, C, S) and the cached z − μ:
    BN 2.5 dβ = Σδ; BN 2.6 dγ = Σδ·ẑ = inv_std·Σδ·(z − μ); and the per-channel constants of
    ∂C/∂z = δ·k1 − (z − μ)·k2 − k3 (``bn_input_grad``'s compact form of BN 2.1–2.3 with ẑ = (z − μ)·inv_std,
    k1 = γ·inv_std; k2 = k3 = 0 when the running statistics normalised)."""
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xc) * inv_std
    k1 = gamma * inv_std
    if not batch:
        return dbeta, dgamma, k1, None, None
    return (dbeta, dgamma, k1) + bn_grad_coefs(k1, dgamma, dbeta, dy.shape[0] * dy.shape[2], inv_std)


def _scale_shift_act_np(xc: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str,
                        slope: float, keep_mask: bool) -> Tuple[np.ndarray, Optional[ActCache]]:
    """σ(xc·scale + shift) per channel, (N, C, S), the NumPy passes (split over the batch): returns σ's output
    and, with ``keep_mask``, the activation's backward cache (``A.relu_forward``'s, ``A.leaky_relu_forward``'s)."""
    y = np.empty_like(xc)
    sc, sh = _col(scale), _col(shift)
    mask = np.empty(xc.shape, dtype=bool) if keep_mask and activation in ("relu", "leaky") else None

    def part(lo, hi):
        yp = np.multiply(xc[lo:hi], sc, out=y[lo:hi])
        yp += sh
        if mask is not None:
            np.greater(yp, 0, out=mask[lo:hi])
        if activation == "relu":
            yp *= (mask[lo:hi] if mask is not None else yp > 0)      # A.relu_forward: z · (z > 0)
        elif activation == "leaky":
            A.leaky_relu_into(yp, slope, yp, None if mask is None else mask[lo:hi])
    _per_batch(part, xc)
    if mask is None:
        return y, None
    return y, (A.ReluCache(mask) if activation == "relu" else A.LeakyReluCache(mask, slope))


def batchnorm_act_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                          running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                          training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                          activation: str = "leaky", negative_slope: float = 0.01) -> Tuple[np.ndarray, BNActCache]:
    """a = σ(BN(z)) with σ ReLU, leaky ReLU or linear (§5, §8): y = (z − μ)·(γ·inv_std) + β, then σ(y).

    The scale γ·inv_std is applied to z − μ in one multiply and ẑ is never stored: the cache keeps z − μ
    (the backward scales by inv_std where ẑ appears). With numba the scale–shift–activate pass is one loop;
    both paths do the same float operations, so they give the same numbers. Without γ (None) this is
    ``batch_norm_forward`` then the activation."""
    _check_act(activation)
    if gamma is None:
        y, bcache = batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
        acache = None
        if activation == "relu":
            y, acache = A.relu_forward(y)
        elif activation == "leaky":
            y, acache = A.leaky_relu_forward(y, negative_slope)
        return y, PlainCache(bcache, activation, acache)
    if _numba.enabled():
        from ..fast import norm_numba as _norm_numba
        return _norm_numba.bn_act_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                          activation, negative_slope)
    x3 = channel_view(x)
    xc, inv_std, batch = bn_statistics(x3, running_mean, running_var, training, momentum, eps)
    gamma = gamma.astype(x3.dtype, copy=False)
    y, acache = _scale_shift_act_np(xc, gamma * inv_std, beta.astype(x3.dtype, copy=False), activation,
                                    negative_slope, keep_mask=True)
    return y.reshape(x.shape), NumpyCache(xc, inv_std, gamma, batch, activation, acache, x.shape)


def batchnorm_act_backward(dout: np.ndarray, cache: BNActCache, need_dx: bool = True,
                           consume_cache: bool = False) -> _Grads:
    """Returns (dx, dγ, dβ): δ = dout ⊙ σ'(y) (P2 of §2), then BN 2.5, 2.6 and BN 2.1–2.3 in the compact form
    of ``bn_act_grads`` (∂C/∂z = γ·inv_std·δ when the running statistics normalised).

    ``consume_cache=True`` (a module's backward, which drops its cache) lets the NumPy path scale the cached
    z − μ in place instead of into a new array; the numbers are the same."""
    if type(cache) is NumbaCache:
        from ..fast import norm_numba as _norm_numba
        return _norm_numba.bn_act_backward(dout, cache, need_dx)
    if type(cache) is PlainCache:
        bcache, activation, acache = cache
        if activation == "relu":
            dout = A.relu_backward(dout, acache)
        elif activation == "leaky":
            dout = A.leaky_relu_backward(dout, acache)
        return batch_norm_backward(dout, bcache, need_dx)
    xc, inv_std, gamma, batch, activation, acache, shape = cache
    d3 = channel_view(dout)
    if activation == "relu":
        dy = A.relu_backward(d3, acache)
    elif activation == "leaky":
        dy = A.leaky_relu_backward(d3, acache)
    else:
        dy = d3
    return _bn_backward_np(dy, dy is not d3, xc, inv_std, gamma, batch, shape, need_dx, consume_cache)


def _bn_backward_np(dy: np.ndarray, own_dy: bool, xc: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray,
                    batch: bool, shape, need_dx: bool, consume_cache: bool) -> _Grads:
    """The NumPy fused backward from δ = ∂C/∂y (N, C, S); ``own_dy``: δ may be overwritten by dx."""
    dbeta, dgamma, k1, k2, k3 = bn_act_grads(dy, xc, inv_std, gamma, batch)
    if not need_dx:
        return None, dgamma, dbeta
    dz = bn_input_grad(dy, xc, k1, k2, k3, dy if own_dy else None, consume_cache)
    return dz.reshape(shape), dgamma, dbeta


# --- fused batch norm + activation + 2×2 max pooling ----------------------------------------------------

_FUSED_POOL_MIN_WIDTH = 16  # pooled rows shorter than this do not vectorise: the separate kernels are faster


def batchnorm_act_maxpool2_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                                   running_mean: Optional[np.ndarray] = None,
                                   running_var: Optional[np.ndarray] = None, training: bool = True,
                                   momentum: float = 0.1, eps: float = 1e-5, activation: str = "leaky",
                                   negative_slope: float = 0.01) -> Tuple[np.ndarray, BNActPoolCache]:
    """p = maxpool₂ₓ₂(σ(BN(z))): ``batchnorm_act_forward`` (§5, §8) then 2×2 max pooling with stride 2 (§4),
    with the same numbers as the two in turn.

    With numba, an (N, C, H, W) input of even H and W and a pooled width of at least 16, one pass scales,
    shifts, activates and pools, and the activated map is never stored (the cache keeps z − μ and the window
    indices); the backward writes the delta of each window's arg-max cell through σ' in one pass. Otherwise
    the two kernels run in turn."""
    _check_act(activation)
    g = pool_geometry(x.shape, 2, name="batchnorm_act_maxpool2")
    if (_numba.enabled() and gamma is not None and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and g.wo >= _FUSED_POOL_MIN_WIDTH):
        from ..fast import norm_numba as _norm_numba
        out, bcache, idx = _norm_numba.bn_act_pool_forward(x, gamma, beta, running_mean, running_var, training,
                                                          momentum, eps, activation, negative_slope, np.uint8)
        return out, FusedPoolCache(bcache, idx, g)
    if not _numba.enabled() and gamma is not None and (activation != "leaky" or negative_slope >= 0):
        return _bn_act_pool_np_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                       activation, negative_slope)
    a, bcache = batchnorm_act_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                      activation, negative_slope)
    out, pcache = max_pool2d_forward(a, 2)
    return out, SeparatePoolCache(bcache, pcache)


def _bn_act_pool_np_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                            running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray], training: bool,
                            momentum: float, eps: float, activation: str,
                            slope: float) -> Tuple[np.ndarray, NumpyPoolCache]:
    """The NumPy path. σ (slope ≥ 0) keeps the sign of y, so σ'(y) at a window's arg-max is known from the
    pooled output's sign: the cache keeps p > 0 (a quarter of the size) instead of the activation's mask, and
    the backward applies σ' to the pooled deltas before scattering them (the other cells get 0 either way)."""
    x3 = channel_view(x)
    xc, inv_std, batch = bn_statistics(x3, running_mean, running_var, training, momentum, eps)
    gamma = gamma.astype(x3.dtype, copy=False)
    a, _ = _scale_shift_act_np(xc, gamma * inv_std, beta.astype(x3.dtype, copy=False), activation, slope,
                               keep_mask=False)   # no mask: σ' comes from the pooled output's sign
    out, pcache = max_pool2d_forward(a.reshape(x.shape), 2)
    pos = None if activation == "linear" else out > 0
    return out, NumpyPoolCache(xc, inv_std, gamma, batch, activation, slope, pos, pcache, x.shape)


def batchnorm_act_maxpool2_backward(dout: np.ndarray, cache: BNActPoolCache, need_dx: bool = True,
                                    consume_cache: bool = False) -> _Grads:
    """Returns (dx, dγ, dβ): the pooling backward (each window's delta to its arg-max, §4), then
    ``batchnorm_act_backward``."""
    if type(cache) is FusedPoolCache:
        from ..fast import norm_numba as _norm_numba
        return _norm_numba.bn_act_pool_backward(dout, cache.idx, cache.bn, need_dx)
    if type(cache) is NumpyPoolCache:
        xc, inv_std, gamma, batch, activation, slope, pos, pcache, shape = cache
        if activation == "leaky":
            dout = A.leaky_relu_backward(dout, A.LeakyReluCache(pos, slope))
        elif activation == "relu":
            dout = A.relu_backward(dout, A.ReluCache(pos))
        dy = channel_view(max_pool2d_backward(dout, pcache))
        return _bn_backward_np(dy, True, xc, inv_std, gamma, batch, shape, need_dx, consume_cache)
    bcache, pcache = cache
    return batchnorm_act_backward(max_pool2d_backward(dout, pcache), bcache, need_dx, consume_cache)


