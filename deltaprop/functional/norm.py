"""Batch normalization, standard convention (docs/equations.md §8, BN forward and BN 2.1–2.6; PyTorch's
``batch_norm``): the reference kernels.

Channels are axis 1; a channel's m values are those of every sample and position (N·H·W, or N for an (N, C)
input). Training normalises with the batch statistics ``μ = Σz/m`` and the biased ``σ² = Σ(z − μ)²/m``:
``ẑ = (z − μ)/√(σ² + ε)``, ``y = γẑ + β``; the running averages move by ``r ← (1 − momentum)·r + momentum·batch``
with the UNBIASED variance ``σ²·m/(m − 1)``. Evaluation normalises with the running statistics.

A batch shared by several processes (the synchronised batch norm, ``distributed.sync_batchnorm``) passes
``allsum``, a function that sums a float64 vector over those processes: the statistics, and the sums BN 2.1–2.3
take from BN 2.5 and 2.6, are then the global batch's. The forward keeps it in its cache, so the backward
follows.

The per-channel sums (``channel_sum``, ``channel_dot``), the centring (``channel_center``) and BN 2.3
(``bn_input_grad``) are ops of their own: ``deltaprop.fast`` runs them as BLAS products or passes split over the
batch. Darknet's batch norm is ``norm_darknet``; batch norm + activation (+ pooling) as one op
is ``norm_fused``; evaluation folded into a scale and shift is ``conv_bn``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from ..errors import ShapeError

AllSum = Callable[[np.ndarray], np.ndarray]   # float64 vector -> its sum over the processes sharing the batch


class BNStats(NamedTuple):
    """How a forward normalised, as its backward needs it: ``inv_std`` = 1/√(σ² + ε) per channel, ``m`` the values
    per channel behind the batch statistics (over every process sharing the batch; 0 when the running statistics
    normalised: μ and σ² are then constants) and ``allsum`` (None: this process's batch is the whole batch)."""
    inv_std: np.ndarray
    m: int
    allsum: Optional[AllSum]


class BNCache(NamedTuple):
    """``batch_norm_forward``'s cache: ẑ (N, C, S), the statistics' ``BNStats``, γ (ones without affine), whether
    there is an affine γ/β, and the input's shape."""
    xhat: np.ndarray
    stats: BNStats
    gamma: np.ndarray
    affine: bool
    shape: tuple


class BNNaiveCache(NamedTuple):
    """``batch_norm_forward_naive``'s: the input as (N, C, S), the per-channel μ and σ² (float64), γ (or None),
    whether the batch statistics normalised, ε and the input's shape."""
    x3: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    gamma: Optional[np.ndarray]
    eps: float
    batch: bool
    shape: tuple


# --- per-channel sums and the centring -----------------------------------------------------------------------

def channel_view(x: np.ndarray) -> np.ndarray:
    """x (N, C, ...) as an (N, C, S) array (a view when x is contiguous), S = product of the rest."""
    if x.ndim < 2:
        raise ShapeError(f"batch norm needs an input of shape (N, C, ...), got shape {x.shape}")
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


@dispatch.op("channel_sum")
def channel_sum(a3: np.ndarray) -> np.ndarray:
    """Σ over n and s of an (N, C, S) array, per channel: the sum of BN forward's mean and of BN 2.5."""
    return a3.sum(axis=(0, 2))


@dispatch.op("channel_dot")
def channel_dot(a3: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Σ over n and s of a·b per channel, (N, C, S) arrays: the sum of BN forward's variance and of BN 2.6."""
    return (a3 * b3).sum(axis=(0, 2))


@dispatch.op("channel_center")
def channel_center(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """z − μ per channel of an (N, C, S) array (BN forward), a new array."""
    return x3 - mean[:, None]


def global_sums(allsum: AllSum, *parts: np.ndarray) -> Tuple[np.ndarray, ...]:
    """The per-channel sums ``parts`` of this process summed over the processes that share the batch, in one
    ``allsum`` call (float64), each returned in its own dtype."""
    sums = allsum(np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts]))
    out, at = [], 0
    for p in parts:
        out.append(sums[at:at + p.size].astype(p.dtype))
        at += p.size
    return tuple(out)


# --- the statistics (BN forward) -----------------------------------------------------------------------------

def batch_mean(x3: np.ndarray, allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, int]:
    """(μ, m) of BN forward (and of Darknet batch norm, §10) for an (N, C, S) view: μ = Σz/m per channel over the
    m = N·S values. With ``allsum``, Σz and m are summed over the processes in one call and μ is divided in
    float64."""
    m = x3.shape[0] * x3.shape[2]
    if allsum is None:
        return channel_sum(x3) / x3.dtype.type(m), m
    s = allsum(np.append(channel_sum(x3).astype(np.float64), float(m)))
    m = int(round(s[-1]))
    return (s[:-1] / max(m, 1)).astype(x3.dtype), m


def batch_variance(xc: np.ndarray, m: int, allsum: Optional[AllSum] = None, ddof: int = 0) -> np.ndarray:
    """σ² = Σ(z − μ)²/(m − ddof) per channel from the centred values (BN forward: ddof 0; the unbiased variance
    of Darknet batch norm, §10: 1). With ``allsum`` the sums are the processes' together, divided in float64."""
    q = channel_dot(xc, xc)
    if allsum is None:
        return q / xc.dtype.type(m - ddof)
    return (allsum(q.astype(np.float64)) / (m - ddof)).astype(xc.dtype)


def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray,
                         var: np.ndarray, m: int, momentum: float) -> None:
    """The running statistics of §8 (BN forward), in place: r ← (1 − momentum)·r + momentum·batch, with the
    unbiased variance σ²·m/(m − 1)."""
    t = running_mean.dtype.type
    unbiased = var * (float(m) / (m - 1))
    running_mean *= t(1.0 - momentum)
    running_mean += t(momentum) * mean.astype(running_mean.dtype, copy=False)
    running_var *= t(1.0 - momentum)
    running_var += t(momentum) * unbiased.astype(running_var.dtype, copy=False)


def bn_statistics(x3: np.ndarray, running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray],
                  training: bool, momentum: float, eps: float, allsum: Optional[AllSum] = None,
                  shape: Optional[tuple] = None,
                  center: Callable[[np.ndarray, np.ndarray], np.ndarray] = channel_center
                  ) -> Tuple[np.ndarray, BNStats]:
    """The statistics of BN forward for an (N, C, S) view, the one home every standard batch-norm path calls:
    ``(z − μ, BNStats)``. Training (or no running statistics): μ = Σz/m, biased σ² = Σ(z − μ)²/m of the batch
    (of the processes' batches together with ``allsum``), and the running statistics, if any, move in place.
    Evaluation: the running statistics. inv_std = 1/√(σ² + ε). ``shape`` is the input's, for errors; ``center``
    forms z − μ (``channel_center``; the numba pass of ``fast.norm_numba`` passes its loop, the same numbers)."""
    t = x3.dtype.type
    if training or running_mean is None:
        mean, m = batch_mean(x3, allsum)
        if m < 2:
            over = "" if allsum is None else f" (over all processes: m = {m})"
            raise ShapeError(f"Expected more than 1 value per channel when training{over}, "
                             f"got input size {tuple(x3.shape if shape is None else shape)}")
        xc = center(x3, mean)
        var = batch_variance(xc, m, allsum)
        if training and running_mean is not None:
            update_running_stats(running_mean, running_var, mean, var, m, momentum)
    else:
        xc = center(x3, running_mean.astype(x3.dtype, copy=False))
        var, m, allsum = running_var.astype(x3.dtype, copy=False), 0, None
    inv_std = (1.0 / np.sqrt(var + t(eps))).astype(x3.dtype, copy=False)
    return xc, BNStats(inv_std, m, allsum)


# --- BN 2.1–2.3 ----------------------------------------------------------------------------------------------

def bn_grad_coefs(k1: np.ndarray, dgamma: np.ndarray, dbeta: np.ndarray, m: int,
                  inv_std: Optional[np.ndarray] = None,
                  allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, np.ndarray]:
    """BN 2.1–2.3 folded into per-channel constants: with δ = ∂C/∂y, k1 = γ·inv_std, dγ = Σδ·ẑ (BN 2.6) and
    dβ = Σδ (BN 2.5) over the m values of a channel, ``∂C/∂z = δ·k1 − ẑ·k2 − k3`` with ``k2 = k1·dγ/m``,
    ``k3 = k1·dβ/m`` (``bn_input_grad`` applies it).

    Substituting BN 2.1 (∂C/∂σ² = −½·inv_std³·Σ ∂C/∂ẑ (z − μ)) and BN 2.2 (∂C/∂μ = −inv_std·Σ ∂C/∂ẑ, its σ² term
    being 0 as Σ(z − μ) = 0) into BN 2.3, with ∂C/∂ẑ = γδ, gives this form. When the caller keeps z − μ instead
    of ẑ, passing ``inv_std`` folds the extra factor into k2 (``ẑ·k2 = (z − μ)·(k2·inv_std)``). With ``allsum``
    (the forward's), dγ and dβ are first summed over the processes: the sums and m of the global batch."""
    if allsum is not None:
        dbeta, dgamma = global_sums(allsum, dbeta, dgamma)
    t = k1.dtype.type
    k2 = k1 * dgamma / t(m)
    if inv_std is not None:
        k2 = k2 * inv_std
    return k2, k1 * dbeta / t(m)


@dispatch.op("bn_input_grad")
def bn_input_grad(dy: np.ndarray, c: np.ndarray, k1: np.ndarray, k2: Optional[np.ndarray],
                  k3: Optional[np.ndarray], out: Optional[np.ndarray] = None, consume_c: bool = False) -> np.ndarray:
    """BN 2.3, (N, C, S) arrays: ``∂C/∂z = δ·k1 − c·k2 − k3`` per channel with the constants of ``bn_grad_coefs``
    (c is ẑ or z − μ to match them); ``δ·k1`` alone when the running statistics normalised (k2 = k3 = None: μ and
    σ² are constants). Written into ``out`` (which may be ``dy``); ``consume_c`` lets it scale ``c`` in place."""
    dz = np.multiply(dy, k1[:, None], out=out)
    if k2 is not None:
        dz -= np.multiply(c, k2[:, None], out=c if consume_c else None)
        dz -= k3[:, None]
    return dz


# --- batch norm ----------------------------------------------------------------------------------------------

@dispatch.op("batch_norm")
def batch_norm_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                       running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                       training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                       allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, BNCache]:
    """BN forward: y = γ·(z − μ)/√(σ² + ε) + β per channel. x (N, C, ...), gamma/beta (C,) or None (no affine).

    ``training=True``: batch statistics; ``running_mean``/``running_var`` (if given) are updated IN PLACE, as
    PyTorch's ``F.batch_norm``. ``training=False``: the running statistics normalise. ``allsum``: the statistics
    of the batch shared by several processes (``bn_statistics``)."""
    x3 = channel_view(x)
    xhat, stats = bn_statistics(x3, running_mean, running_var, training, momentum, eps, allsum, x.shape)
    xhat *= stats.inv_std[:, None]                          # ẑ, in place: z − μ is not needed again
    if gamma is None:
        return xhat.reshape(x.shape).copy(), BNCache(xhat, stats, np.ones(x3.shape[1], x3.dtype), False, x.shape)
    y = xhat * gamma[:, None]
    y += beta[:, None]
    return y.reshape(x.shape), BNCache(xhat, stats, gamma, True, x.shape)


@dispatch.backward("batch_norm")
def batch_norm_backward(dy: np.ndarray, cache: BNCache, need_dx: bool = True) -> Tuple[Optional[np.ndarray], ...]:
    """Returns (dx, dγ, dβ). BN 2.5: ∂C/∂β = Σ ∂C/∂y. BN 2.6: ∂C/∂γ = Σ ∂C/∂y·ẑ. ∂C/∂ẑ = γ·∂C/∂y, then BN 2.1–2.3
    in the compact form of ``bn_grad_coefs``/``bn_input_grad`` (training), or ∂C/∂z = γ·inv_std·∂C/∂y when the
    running statistics normalised (they are constants). BN 2.4 (the layer below) is unchanged."""
    xhat, stats, g, affine, shape = cache
    dy3 = channel_view(dy)
    dbeta = channel_sum(dy3)
    dgamma = channel_dot(dy3, xhat)
    dx = None
    if need_dx:
        k1 = g * stats.inv_std
        k2, k3 = bn_grad_coefs(k1, dgamma, dbeta, stats.m, allsum=stats.allsum) if stats.m else (None, None)
        dx = bn_input_grad(dy3, xhat, k1, k2, k3).reshape(shape)
    return dx, (dgamma if affine else None), (dbeta if affine else None)


# --- naive references (loops straight from §8) ---------------------------------------------------------------

def batch_norm_forward_naive(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                             running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                             training: bool = True, momentum: float = 0.1,
                             eps: float = 1e-5) -> Tuple[np.ndarray, BNNaiveCache, tuple]:
    """BN forward, channel by channel and value by value: μ = (1/m)Σz_i, σ² = (1/m)Σ(z_i − μ)²,
    ẑ_i = (z_i − μ)/√(σ² + ε), y_i = γẑ_i + β; the running statistics are returned as new arrays."""
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    n, c, s = x3.shape
    m = n * s
    y = np.zeros(x3.shape, dtype=x.dtype)
    mus, vars_ = np.zeros(c), np.zeros(c)
    new_rm = None if running_mean is None else np.array(running_mean, dtype=np.float64)
    new_rv = None if running_var is None else np.array(running_var, dtype=np.float64)
    for ch in range(c):
        zs = [float(x3[b, ch, k]) for b in range(n) for k in range(s)]
        if training or running_mean is None:
            mu = sum(zs) / m
            var = sum((z - mu) ** 2 for z in zs) / m
            if training and running_mean is not None:
                new_rm[ch] = (1 - momentum) * new_rm[ch] + momentum * mu
                new_rv[ch] = (1 - momentum) * new_rv[ch] + momentum * var * m / (m - 1)
        else:
            mu, var = float(running_mean[ch]), float(running_var[ch])
        mus[ch], vars_[ch] = mu, var
        gm = 1.0 if gamma is None else float(gamma[ch])
        bt = 0.0 if beta is None else float(beta[ch])
        for b in range(n):
            for k in range(s):
                zhat = (x3[b, ch, k] - mu) / np.sqrt(var + eps)
                y[b, ch, k] = gm * zhat + bt
    cache = BNNaiveCache(x3, mus, vars_, gamma, eps, training or running_mean is None, x.shape)
    return y.reshape(x.shape), cache, (new_rm, new_rv)


def batch_norm_backward_naive(dy: np.ndarray, cache: BNNaiveCache):
    """BN backward, literally BN 2.1, 2.2, 2.3, 2.5, 2.6 per channel. Returns (dx, dγ, dβ)."""
    x3, mus, vars_, gamma, eps, batch, shape = cache
    d3 = dy.reshape(x3.shape)
    n, c, s = x3.shape
    m = n * s
    dx = np.zeros(x3.shape, dtype=dy.dtype)
    dgamma, dbeta = np.zeros(c), np.zeros(c)
    for ch in range(c):
        mu, var = mus[ch], vars_[ch]
        gm = 1.0 if gamma is None else float(gamma[ch])
        idx = [(b, k) for b in range(n) for k in range(s)]
        z = {i: float(x3[i[0], ch, i[1]]) for i in idx}
        zhat = {i: (z[i] - mu) / np.sqrt(var + eps) for i in idx}
        dzhat = {i: gm * float(d3[i[0], ch, i[1]]) for i in idx}                    # ∂C/∂ẑ_i = γ ∂C/∂y_i
        for i in idx:
            dbeta[ch] += d3[i[0], ch, i[1]]                                          # BN 2.5
            dgamma[ch] += d3[i[0], ch, i[1]] * zhat[i]                               # BN 2.6
        if not batch:
            for i in idx:
                dx[i[0], ch, i[1]] = dzhat[i] / np.sqrt(var + eps)
            continue
        dvar = sum(dzhat[i] * (z[i] - mu) * -0.5 * (var + eps) ** -1.5 for i in idx)   # BN 2.1
        dmu = sum(dzhat[i] * (-1.0 / np.sqrt(var + eps)) for i in idx) \
            + dvar * (-2.0 / m) * sum(z[i] - mu for i in idx)                          # BN 2.2
        for i in idx:
            dx[i[0], ch, i[1]] = dzhat[i] / np.sqrt(var + eps) + dvar * 2 * (z[i] - mu) / m + dmu / m  # BN 2.3
    affine = gamma is not None
    return dx.reshape(shape), (dgamma if affine else None), (dbeta if affine else None)
