"""Batch norm + activation (+ 2×2 max pooling) in fewer NumPy passes: variants of
``functional.norm_fused.batchnorm_act_forward`` and ``batchnorm_act_maxpool2_forward`` (numba off).

The reference normalises (ẑ = (z − μ)·inv_std, y = γẑ + β), then activates, then pools, each pass writing a new
array. Here the scale γ·inv_std is applied to z − μ in one multiply and ẑ is never stored: the cache keeps z − μ
and the backward scales by inv_std where ẑ appears (BN 2.6: dγ = inv_std·Σδ·(z − μ); BN 2.1–2.3 through
``norm.bn_grad_coefs`` with ``inv_std``). The statistics (``norm.bn_statistics``), the input gradient
(``norm.bn_input_grad``) and σ and σ' (``functional.activation``) are the references'; the elementwise passes run
split over the batch (``fast.split``). With the pooling, σ (slope ≥ 0) keeps the sign of y, so σ' at a window's
arg-max is known from the pooled output's sign: the cache keeps p > 0 (a quarter of the size) instead of the
activation's mask.

γ·inv_std rounds once where the reference rounds ẑ and then γẑ: equal to the references within float rounding.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from ..functional import activation as A
from ..functional.norm import (AllSum, BNStats, bn_grad_coefs, bn_input_grad, bn_statistics, channel_dot,
                                channel_sum, channel_view)
from ..functional.norm_fused import ActCache, Grads, activation_backward, check_activation
from ..functional.pool import MaxPoolCache, max_pool2d_backward, max_pool2d_forward
from ..functional.pool_geometry import pool_geometry
from . import split as _split


class NumpyCache(NamedTuple):
    """The NumPy passes: z − μ (N, C, S), the statistics, γ, σ's name and backward cache, the input's shape."""
    xc: np.ndarray
    stats: BNStats
    gamma: np.ndarray
    activation: str
    act: Optional[ActCache]
    shape: tuple


class NumpyPoolCache(NamedTuple):
    """The pooled NumPy passes: z − μ, the statistics, γ, σ and its slope, p > 0 (None for linear), the pooling's
    cache and the input's shape."""
    xc: np.ndarray
    stats: BNStats
    gamma: np.ndarray
    activation: str
    slope: float
    pos: Optional[np.ndarray]
    pool: MaxPoolCache
    shape: tuple


def bn_act_grads(dy: np.ndarray, xc: np.ndarray, stats: BNStats, gamma: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(dβ, dγ, k1, k2, k3) from δ = ∂C/∂y (N, C, S) and the cached z − μ: BN 2.5 dβ = Σδ; BN 2.6
    dγ = Σδ·ẑ = inv_std·Σδ·(z − μ); the constants of ∂C/∂z = δ·k1 − (z − μ)·k2 − k3 (``norm.bn_grad_coefs`` with
    ``inv_std``; k2 = k3 = None when the running statistics normalised)."""
    dbeta = channel_sum(dy)
    dgamma = channel_dot(dy, xc) * stats.inv_std
    k1 = gamma * stats.inv_std
    if not stats.m:
        return dbeta, dgamma, k1, None, None
    return (dbeta, dgamma, k1) + bn_grad_coefs(k1, dgamma, dbeta, stats.m, stats.inv_std, stats.allsum)


def _scale_shift_act(xc: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str, slope: float,
                     keep_mask: bool) -> Tuple[np.ndarray, Optional[ActCache]]:
    """σ(xc·scale + shift) per channel, (N, C, S), split over the batch: σ's output and, with ``keep_mask``, the
    activation's backward cache (``A.relu_forward``'s, ``A.leaky_relu_forward``'s)."""
    y = np.empty_like(xc)
    sc, sh = scale[:, None], shift[:, None]
    mask = np.empty(xc.shape, dtype=bool) if keep_mask and activation in ("relu", "leaky") else None

    def part(lo: int, hi: int) -> None:
        yp = np.multiply(xc[lo:hi], sc, out=y[lo:hi])
        yp += sh
        if mask is not None:
            np.greater(yp, 0, out=mask[lo:hi])
        if activation == "relu":
            yp *= (mask[lo:hi] if mask is not None else yp > 0)      # A.relu_forward: z · (z > 0)
        elif activation == "leaky":
            A.leaky_relu_into(yp, slope, yp, None if mask is None else mask[lo:hi])
    _split.map_batch(part, xc.shape[0], xc.size)
    if mask is None:
        return y, None
    return y, (A.ReluCache(mask) if activation == "relu" else A.LeakyReluCache(mask, slope))


def _normalise_activate(x, gamma, beta, running_mean, running_var, training, momentum, eps, activation,
                        negative_slope, allsum, keep_mask):
    """(σ(BN(z)) as (N, C, S), z − μ, statistics, γ, σ's cache): the statistics of ``norm.bn_statistics``, then
    ``_scale_shift_act``."""
    check_activation(activation)
    x3 = channel_view(x)
    xc, stats = bn_statistics(x3, running_mean, running_var, training, momentum, eps, allsum, x.shape)
    gamma = gamma.astype(x3.dtype, copy=False)
    y, act = _scale_shift_act(xc, gamma * stats.inv_std, beta.astype(x3.dtype, copy=False), activation,
                              negative_slope, keep_mask)
    return y, xc, stats, gamma, act


def bn_act_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: Optional[np.ndarray] = None,
                   running_var: Optional[np.ndarray] = None, training: bool = True, momentum: float = 0.1,
                   eps: float = 1e-5, activation: str = "leaky", negative_slope: float = 0.01,
                   allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, NumpyCache]:
    """``batchnorm_act_forward`` in the NumPy passes: y = (z − μ)·(γ·inv_std) + β and σ(y) in one split pass."""
    y, xc, stats, gamma, act = _normalise_activate(x, gamma, beta, running_mean, running_var, training, momentum,
                                                   eps, activation, negative_slope, allsum, keep_mask=True)
    return y.reshape(x.shape), NumpyCache(xc, stats, gamma, activation, act, x.shape)


def _bn_backward(dy: np.ndarray, own_dy: bool, xc: np.ndarray, stats: BNStats, gamma: np.ndarray, shape,
                 need_dx: bool, consume_cache: bool) -> Grads:
    """(dx, dγ, dβ) from δ = ∂C/∂y (N, C, S); ``own_dy``: δ may be overwritten by dx."""
    dbeta, dgamma, k1, k2, k3 = bn_act_grads(dy, xc, stats, gamma)
    if not need_dx:
        return None, dgamma, dbeta
    dz = bn_input_grad(dy, xc, k1, k2, k3, dy if own_dy else None, consume_cache)
    return dz.reshape(shape), dgamma, dbeta


def bn_act_backward(dout: np.ndarray, cache: NumpyCache, need_dx: bool = True,
                    consume_cache: bool = False) -> Grads:
    """δ = dout ⊙ σ'(y) (P2), then BN 2.5, 2.6 and BN 2.1–2.3 (``bn_act_grads``, ``norm.bn_input_grad``);
    ``consume_cache`` lets BN 2.3 scale the cached z − μ in place."""
    xc, stats, gamma, activation, act, shape = cache
    d3 = channel_view(dout)
    dy = activation_backward(d3, act, activation)
    return _bn_backward(dy, dy is not d3, xc, stats, gamma, shape, need_dx, consume_cache)


def bn_act_pool_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                        running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                        training: bool = True, momentum: float = 0.1, eps: float = 1e-5, activation: str = "leaky",
                        negative_slope: float = 0.01,
                        allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, NumpyPoolCache]:
    """``batchnorm_act_maxpool2_forward`` in the NumPy passes: σ(BN(z)) without its mask, pooled; the cache keeps
    z − μ and p > 0."""
    pool_geometry(x.shape, 2, name="batchnorm_act_maxpool2")
    a, xc, stats, gamma, _ = _normalise_activate(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                                 activation, negative_slope, allsum, keep_mask=False)
    out, pool = max_pool2d_forward(a.reshape(x.shape), 2)
    pos = None if activation == "linear" else out > 0
    return out, NumpyPoolCache(xc, stats, gamma, activation, negative_slope, pos, pool, x.shape)


def bn_act_pool_backward(dout: np.ndarray, cache: NumpyPoolCache, need_dx: bool = True,
                         consume_cache: bool = False) -> Grads:
    """σ' applied to the pooled deltas (from p > 0; the other cells get 0 either way), the pooling's backward,
    then BN 2.5, 2.6 and BN 2.1–2.3 as ``bn_act_backward``."""
    xc, stats, gamma, activation, slope, pos, pool, shape = cache
    if activation == "leaky":
        dout = A.leaky_relu_backward(dout, A.LeakyReluCache(pos, slope))
    elif activation == "relu":
        dout = A.relu_backward(dout, A.ReluCache(pos))
    dy = channel_view(max_pool2d_backward(dout, pool))
    return _bn_backward(dy, True, xc, stats, gamma, shape, need_dx, consume_cache)


def _has_gamma(x, gamma, *_, **__) -> bool:
    return isinstance(x, np.ndarray) and gamma is not None


def _pool_applies(x, gamma, beta, running_mean=None, running_var=None, training=True, momentum=0.1, eps=1e-5,
                  activation="leaky", negative_slope=0.01, allsum=None) -> bool:
    """γ given and σ keeps the sign of y (slope ≥ 0): σ' is known from the pooled output."""
    return _has_gamma(x, gamma) and (activation != "leaky" or negative_slope >= 0)


def _one_process_sum(v: np.ndarray) -> np.ndarray:
    """An ``allsum`` over one process: the vector itself (the synchronised batch norm's code path)."""
    return np.array(v, dtype=np.float64)


def examples(shapes, acts):
    """Calls of the batch-norm + activation ops: each shape × σ (name, slope) × training and evaluation ×
    float32 and float64, with running statistics; then without them, and with an ``allsum``."""
    out = []
    for k, shape in enumerate(shapes):
        for dt in (np.float32, np.float64):
            g = np.random.default_rng(k)
            x = (g.standard_normal(shape) * 2 + 0.5).astype(dt)
            x[0, 0, :2, :2] = 0.25                                               # a tie for the pooling
            c = shape[1]
            gamma, beta = g.standard_normal(c).astype(dt), g.standard_normal(c).astype(dt)
            for act, slope in acts:
                for training in (True, False):
                    rm, rv = g.standard_normal(c).astype(dt), (g.random(c) + 0.5).astype(dt)
                    out.append(dispatch.Example((x, gamma, beta, rm, rv, training, 0.1, 1e-5, act, slope),
                                                backward_kwargs={"consume_cache": training}))
            act, slope = acts[0]
            out.append(dispatch.Example((x, gamma, beta), {"activation": act, "negative_slope": slope}))
            out.append(dispatch.Example((x, gamma, beta), {"activation": act, "negative_slope": slope,
                                                           "allsum": _one_process_sum}))
    return out


ACTS = [("leaky", 0.1), ("relu", 0.0), ("linear", 0.0), ("leaky", 1.5)]
# float32: γ·inv_std rounded once instead of ẑ then γẑ; the input gradients of a few dozen values per channel
_RTOL, _ATOL = 2e-5, 2e-5

dispatch.register(dispatch.Variant(
    op="batchnorm_act", name="numpy fused", forward=bn_act_forward, applies=_has_gamma, backward=bn_act_backward,
    caches=(NumpyCache,), priority=10, exact=False, rtol=_RTOL, atol=_ATOL,
    mirrors="functional.norm_fused.batchnorm_act_forward", doc=bn_act_forward.__doc__,
    examples=lambda: examples([(3, 4, 5, 6), (2, 3, 1, 1)], ACTS + [("leaky", -0.2)])))

dispatch.register(dispatch.Variant(
    op="batchnorm_act_maxpool2", name="numpy fused", forward=bn_act_pool_forward, applies=_pool_applies,
    backward=bn_act_pool_backward, caches=(NumpyPoolCache,), priority=10, exact=False, rtol=_RTOL, atol=_ATOL,
    mirrors="functional.norm_fused.batchnorm_act_maxpool2_forward", doc=bn_act_pool_forward.__doc__,
    examples=lambda: examples([(2, 3, 8, 10), (3, 4, 7, 9)], ACTS + [("leaky", 0.0)])))
