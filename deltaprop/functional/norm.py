"""Batch normalization kernels, standard convention (docs/equations.md §8; PyTorch's ``batch_norm``).

Channels are axis 1. Training uses the batch statistics over m = N·H·W values per channel (N for an
(N, C) input): ``μ = Σz/m``, biased ``σ² = Σ(z − μ)²/m`` to normalise, ``ẑ = (z − μ)/√(σ² + ε)``,
``y = γẑ + β``; the running averages move by ``r ← (1 − momentum)·r + momentum·batch`` with the UNBIASED
variance ``σ²·m/(m − 1)``. Evaluation normalises with the running statistics.
Darknet's variant (unbiased variance, ε outside the root, 0.99/0.01 rolling) is ``functional.norm_darknet``;
the fused batch norm + activation (+ pooling) kernels are ``functional.norm_fused``; the helpers here
(``channel_view``, ``channel_sum``, ``channel_dot``, and BN 2.3's one home ``bn_grad_coefs``/``bn_input_grad``)
serve all of them.

Per-channel sums are BLAS matrix–vector products over an (N, C·S)-shaped view (float32 sums stay
accurate, ~8× faster than ``x.sum(axis=...)``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import ShapeError
from ..fast import split as _split


class BNCache(NamedTuple):
    """``batch_norm_forward``'s cache: ẑ (N, C, S), inv_std, γ (ones without affine), whether the batch
    statistics normalised, whether there is an affine γ/β, and the input's shape."""
    xhat: np.ndarray
    inv_std: np.ndarray
    gamma: np.ndarray
    batch: bool
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


# --- per-channel helpers ---------------------------------------------------------------------------

def channel_view(x: np.ndarray) -> np.ndarray:
    """x (N, C, ...) as an (N, C, S) array (a view when x is contiguous), S = product of the rest."""
    if x.ndim < 2:
        raise ShapeError(f"batch norm needs an input of shape (N, C, ...), got shape {x.shape}")
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


def channel_sum(a3: np.ndarray) -> np.ndarray:
    """Σ over n and s of an (N, C, S) array, per channel (BN 2.5's sum, the mean of §8), with BLAS: a dot
    product per (n, c) row (``np.vecdot`` with ones), then ones(N) @ (N, C). For short rows, two matrix–vector products.

    Row dots run on one thread each: one big multithreaded gemv over (N, C·S) measured 0.05 ms on an idle
    machine but 4–8 ms when the two cores were shared with another process; the row dots stayed at 0.08 ms."""
    n, c, s = a3.shape
    ones_n = np.ones(n, dtype=a3.dtype)
    if s >= 64:
        return ones_n @ _row_dots(a3, np.ones(s, dtype=a3.dtype))
    t = ones_n @ a3.reshape(n, c * s)
    return t if s == 1 else t.reshape(c, s) @ np.ones(s, dtype=a3.dtype)


def channel_dot(a3: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Σ over n and s of a·b per channel (BN 2.6's sum, the variance of §8), (N, C, S) arrays: BLAS dot
    products per (n, c) row."""
    n, c, s = a3.shape
    if s < 16:
        return channel_sum(a3 * b3)
    return np.ones(n, dtype=a3.dtype) @ _row_dots(a3, b3)


def _row_dots(a3: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, C) dot products of the rows of a3 (N, C, S) with b (S,) or with the rows of b (N, C, S); the
    batch split over threads on the NumPy path (``_split``), row by row the same numbers."""
    parts = _split.map_batch(lambda lo, hi: np.vecdot(a3[lo:hi], b if b.ndim == 1 else b[lo:hi]),
                             a3.shape[0], a3.size)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _per_batch(fn: Callable[[int, int], None], a3: np.ndarray) -> None:
    """fn(lo, hi) over the batch slices of a3's first axis (split over threads on the NumPy path)."""
    _split.map_batch(fn, a3.shape[0], a3.size)


def _col(v: np.ndarray) -> np.ndarray:
    return v[:, None]


def bn_grad_coefs(k1: np.ndarray, dgamma: np.ndarray, dbeta: np.ndarray, m: int,
                  inv_std: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """BN 2.1–2.3 folded into per-channel constants: with δ = ∂C/∂y, k1 = γ·inv_std, dγ = Σδ·ẑ (BN 2.6) and
    dβ = Σδ (BN 2.5) over the m values of a channel,
    ``∂C/∂z = δ·k1 − ẑ·k2 − k3`` with ``k2 = k1·dγ/m``, ``k3 = k1·dβ/m`` (``bn_input_grad`` applies it).

    Substituting BN 2.1 (∂C/∂σ² = −½·inv_std³·Σ ∂C/∂ẑ (z − μ)) and BN 2.2 (∂C/∂μ = −inv_std·Σ ∂C/∂ẑ, its σ² term
    being 0 as Σ(z − μ) = 0) into BN 2.3, with ∂C/∂ẑ = γδ, gives this form. When the caller keeps z − μ instead
    of ẑ, passing ``inv_std`` folds the extra factor into k2 (``ẑ·k2 = (z − μ)·(k2·inv_std)``)."""
    t = k1.dtype.type
    k2 = k1 * dgamma / t(m)
    if inv_std is not None:
        k2 = k2 * inv_std
    return k2, k1 * dbeta / t(m)


def bn_input_grad(dy: np.ndarray, c: np.ndarray, k1: np.ndarray, k2: Optional[np.ndarray],
                  k3: Optional[np.ndarray], out: Optional[np.ndarray] = None, consume_c: bool = False) -> np.ndarray:
    """BN 2.3, (N, C, S) arrays: ``∂C/∂z = δ·k1 − c·k2 − k3`` per channel with the constants of
    ``bn_grad_coefs`` (c is ẑ or z − μ to match them); ``δ·k1`` alone when the running statistics normalised
    (k2 = k3 = None: μ and σ² are constants). Written into ``out`` (may be ``dy``), split over the batch;
    ``consume_c`` lets it scale ``c`` in place. ``_norm_numba._input_grad`` mirrors it."""
    dz = np.empty_like(dy) if out is None else out
    c1 = _col(k1)
    c2, c3 = (None, None) if k2 is None else (_col(k2), _col(k3))

    def part(lo, hi):
        d = np.multiply(dy[lo:hi], c1, out=dz[lo:hi])
        if c2 is not None:
            d -= np.multiply(c[lo:hi], c2, out=c[lo:hi]) if consume_c else c[lo:hi] * c2
            d -= c3
    _per_batch(part, dz)
    return dz


def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray, mean: np.ndarray,
                         var: np.ndarray, m: int, momentum: float) -> None:
    """The running statistics of §8, in place: r ← (1 − momentum)·r + momentum·batch, with the unbiased
    variance σ²·m/(m − 1)."""
    t = running_mean.dtype.type
    unbiased = var * (float(m) / (m - 1))
    running_mean *= t(1.0 - momentum)
    running_mean += t(momentum) * mean.astype(running_mean.dtype, copy=False)
    running_var *= t(1.0 - momentum)
    running_var += t(momentum) * unbiased.astype(running_var.dtype, copy=False)


def _check_m(m: int, shape, where: str = "") -> int:
    if m < 2:
        raise ShapeError(f"Expected more than 1 value per channel when training{where}, "
                         f"got input size {tuple(shape)}")
    return m


def global_mean(x3: np.ndarray, allsum: Callable[[np.ndarray], np.ndarray]) -> Tuple[np.ndarray, int]:
    """(μ, m) of a batch shared by several processes (§8, BN forward): Σz per channel and the count m of an (N, C, S)
    view summed by ``allsum`` in one call (float64), μ = Σz/m in float64, returned in the view's dtype."""
    s = allsum(np.append(channel_sum(x3).astype(np.float64), float(x3.shape[0] * x3.shape[2])))
    m = int(round(s[-1]))
    return (s[:-1] / max(m, 1)).astype(x3.dtype), m


def _center(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    xc = np.empty_like(x3)
    mc = _col(mean)
    _per_batch(lambda lo, hi: np.subtract(x3[lo:hi], mc, out=xc[lo:hi]), x3)
    return xc


def bn_statistics(x3: np.ndarray, running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray],
                  training: bool, momentum: float, eps: float,
                  center: Optional[Callable[[np.ndarray, np.ndarray], np.ndarray]] = None,
                  shape: Optional[tuple] = None,
                  allsum: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The forward statistics of §8 for an (N, C, S) view, the one home every batch norm path calls:
    ``(z − μ, inv_std, whether the batch statistics were used)``, with μ = Σz/m, biased σ² = Σ(z − μ)²/m and
    inv_std = 1/√(σ² + ε) (batch), or the running statistics (evaluation). The running statistics (if any)
    move in place when training. ``center(x3, mean)`` returns x3 − μ per channel (default: NumPy, split over
    the batch; ``_norm_numba`` passes its loop: the same subtraction). ``shape`` is the input's, for errors.
    ``allsum(v)`` (a synchronised batch norm, ``distributed.sync_batchnorm``) returns the float64 vector v summed
    over the processes that share the batch: it is called on [Σz per channel, m], then on Σ(z − μ)² per channel,
    so μ, σ² and m are the global batch's (μ and σ² divided in float64)."""
    t = x3.dtype.type
    center = _center if center is None else center
    if training or running_mean is None:
        shape = x3.shape if shape is None else shape
        if allsum is None:
            m = _check_m(x3.shape[0] * x3.shape[2], shape)
            mean = channel_sum(x3) / t(m)
        else:
            mean, m = global_mean(x3, allsum)
            _check_m(m, shape, f" (over all processes: m = {m})")
        xc = center(x3, mean)
        q = channel_dot(xc, xc)
        var = q / t(m) if allsum is None else (allsum(q.astype(np.float64)) / m).astype(x3.dtype)
        if training and running_mean is not None:
            update_running_stats(running_mean, running_var, mean, var, m, momentum)
        batch = True
    else:
        xc = center(x3, running_mean.astype(x3.dtype, copy=False))
        var = running_var.astype(x3.dtype, copy=False)
        batch = False
    inv_std = (1.0 / np.sqrt(var + t(eps))).astype(x3.dtype, copy=False)
    return xc, inv_std, batch


# --- batch norm ------------------------------------------------------------------------------------

def batch_norm_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                       running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                       training: bool = True, momentum: float = 0.1,
                       eps: float = 1e-5,
                       allsum: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Tuple[np.ndarray, BNCache]:
    """y = γ·(z − μ)/√(σ² + ε) + β per channel (§8). x (N, C, ...), gamma/beta (C,) or None (no affine).

    ``training=True``: batch statistics; ``running_mean``/``running_var`` (if given) are updated IN PLACE,
    as PyTorch's ``F.batch_norm``. ``training=False``: the running statistics normalise.
    ``allsum``: the global batch's statistics (``bn_statistics``).
    """
    x3 = channel_view(x)
    c = x3.shape[1]
    xhat, inv_std, batch = bn_statistics(x3, running_mean, running_var, training, momentum, eps, shape=x.shape,
                                      allsum=allsum)
    xhat *= _col(inv_std)
    if gamma is None:
        g = np.ones(c, dtype=x3.dtype)
        y = xhat.copy()
    else:
        g = gamma
        y = xhat * _col(gamma)
        y += _col(beta)
    return y.reshape(x.shape), BNCache(xhat, inv_std, g, batch, gamma is not None, x.shape)


def batch_norm_backward(dy: np.ndarray, cache: BNCache, need_dx: bool = True) -> Tuple[Optional[np.ndarray], ...]:
    """Returns (dx, dγ, dβ). BN 2.5: ∂C/∂β = Σ ∂C/∂y. BN 2.6: ∂C/∂γ = Σ ∂C/∂y·ẑ. ∂C/∂ẑ = γ·∂C/∂y, then
    BN 2.1–2.3 in the compact form of ``bn_input_grad`` (training), or ∂C/∂z = γ·inv_std·∂C/∂y when the
    running statistics normalised (they are constants). BN 2.4 (the layer below) is unchanged."""
    xhat, inv_std, g, batch, affine, shape = cache
    dy3 = channel_view(dy)
    dbeta = channel_sum(dy3)
    dgamma = channel_dot(dy3, xhat)
    dx = None
    if need_dx:
        k1 = g * inv_std
        k2, k3 = bn_grad_coefs(k1, dgamma, dbeta, dy3.shape[0] * dy3.shape[2]) if batch else (None, None)
        dx = bn_input_grad(dy3, xhat, k1, k2, k3).reshape(shape)
    return dx, (dgamma if affine else None), (dbeta if affine else None)


# --- naive references (loops straight from §8) ------------------------------------------------------

def batch_norm_forward_naive(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                             running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                             training: bool = True, momentum: float = 0.1,
                             eps: float = 1e-5) -> Tuple[np.ndarray, BNNaiveCache, tuple]:
    """Reference BN forward, channel by channel and value by value: μ = (1/m)Σz_i, σ² = (1/m)Σ(z_i − μ)²,
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
    """Reference BN backward, literally BN 2.1, 2.2, 2.3, 2.5, 2.6 per channel. Returns (dx, dγ, dβ)."""
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
