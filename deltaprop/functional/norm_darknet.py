"""Darknet's batch normalization (pjreddie f6afaabc, ``src/batchnorm_layer.c``, ``src/blas.c``), exactly.

It differs from the standard form (docs/equations.md §8, BN 2.1–2.6) in four places (docs/equations.md
§10, "Darknet batch norm"):

- the batch variance is UNBIASED, ``σ² = Σ (z − μ)² / (m − 1)`` with m = N·H·W (N for a (N, C) input);
- it normalises with ``ẑ = (z − μ)/(√σ² + 1e-6)``: the epsilon sits outside the root;
- the rolling statistics move by ``r ← 0.99·r + 0.01·batch`` (the unbiased variance goes in);
- its backward is NOT the derivative of that forward: with ``s = √(σ² + 1e-5)`` it computes
  ``mean_delta = −Σ δẑ / s`` (BN 2.2 without its variance term), ``variance_delta = −½ Σ δẑ (z − μ) s⁻³``
  (BN 2.1) and ``δz = δẑ / s + variance_delta·2(z − μ)/m + mean_delta/m`` (BN 2.3, with m, not m − 1).

Darknet runs these on its ``delta`` (the negative gradient); every formula is linear in the delta, so the
same lines hold in the engine's gradient sign. Here ``dy`` is ∂C/∂y and every returned array is a gradient.
Inference normalises with the rolling statistics, ``(z − r_μ)/(√r_σ² + 1e-6)``, and its backward is that
affine map's exact derivative. Channels are axis 1; statistics reduce over every other axis.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from .norm import AllSum, batch_mean, batch_variance, channel_dot, channel_sum, channel_view, global_sums

#: ``normalize_cpu``: epsilon added to √σ² in the forward pass.
EPS_FORWARD = 1e-6
#: ``mean_delta_cpu``/``variance_delta_cpu``/``normalize_delta_cpu``: epsilon under the root in backward.
EPS_BACKWARD = 1e-5
#: rolling statistics: ``r ← ROLL_KEEP·r + ROLL_NEW·batch``.
ROLL_KEEP = 0.99
ROLL_NEW = 0.01


class DarknetBNCache(NamedTuple):
    """``batchnorm_darknet_forward``'s: ẑ and z − μ (N, C, S), the variance and the forward's divisor
    √σ² + 1e-6, the scales γ, whether batch statistics normalised, the input's shape, the mean, the count m of
    values per channel behind the batch statistics (in the input's dtype) and the forward's ``allsum`` (None: one
    process's batch)."""
    x_norm: np.ndarray
    xc: np.ndarray
    var: np.ndarray
    denom: np.ndarray
    scale: np.ndarray
    training: bool
    shape: tuple
    mean: np.ndarray
    m: np.floating
    allsum: Optional[AllSum]


class DarknetBNNaiveCache(NamedTuple):
    """``batchnorm_darknet_forward_naive``'s: the input as (N, C, S), ẑ, μ and σ² (float64), the scales, whether
    batch statistics normalised, the input's shape."""
    x3: np.ndarray
    x_norm: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    training: bool
    shape: tuple


def _view(x: np.ndarray) -> np.ndarray:
    if x.ndim < 2:
        raise ValueError(f"Darknet batch norm needs (N, C) or (N, C, H, W) input, got shape {x.shape}")
    return channel_view(x)


def darknet_batch_stats(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Darknet batch norm's statistics (§10), ``mean_cpu``, ``variance_cpu``: per-channel μ = Σz/m and UNBIASED
    σ² = Σ(z − μ)²/(m − 1)."""
    mean, _, var, _ = _stats(_view(x))
    return mean, var


def _stats(x3: np.ndarray, allsum: Optional[AllSum] = None):
    """(μ, z − μ, unbiased σ², m) of an (N, C, S) view (§10); with ``allsum`` those of the batch shared by several
    processes (``norm.batch_mean`` and ``norm.batch_variance``: Σz and m summed in one call, then Σ(z − μ)²)."""
    mean, m = batch_mean(x3, allsum)
    if m < 2:
        raise ValueError(f"Darknet batch norm in training needs at least 2 values per channel "
                         f"(m − 1 divides the variance), got m = {m} for {x3.shape[1]} channels"
                         + ("" if allsum is None else " over all processes"))
    xc = x3 - mean[:, None]
    return mean, xc, batch_variance(xc, m, allsum, ddof=1), m


def darknet_rolling_update(rolling: np.ndarray, batch_stat: np.ndarray) -> np.ndarray:
    """Darknet batch norm's rolling statistics (§10), ``scal_cpu(.99)`` then ``axpy_cpu(.01)``: a NEW array
    0.99·r + 0.01·batch, in the dtype of r (float32 constants for float32 arrays, so the rounding is Darknet's)."""
    t = rolling.dtype.type
    out = rolling * t(ROLL_KEEP)
    out += t(ROLL_NEW) * batch_stat.astype(rolling.dtype, copy=False)
    return out


@dispatch.op("batchnorm_darknet")
def batchnorm_darknet_forward(x: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                              rolling_mean: np.ndarray, rolling_var: np.ndarray,
                              training: bool = True, allsum: Optional[AllSum] = None
                              ) -> Tuple[np.ndarray, DarknetBNCache, Tuple[np.ndarray, np.ndarray]]:
    """Darknet BN forward (§10, "Darknet batch norm"): ``y = γ·(z − μ)/(√σ² + 1e-6) + β``.

    Training: batch μ and unbiased σ²; returns ``(y, cache, (new_rolling_mean, new_rolling_var))``.
    ``allsum``: the statistics of a batch shared by several processes (``_stats``; ``distributed.sync_batchnorm``).
    Inference: the rolling statistics; the "new" rolling arrays are the inputs, unchanged.
    x (N, C) or (N, C, H, W); scale, bias, rolling_* (C,).
    """
    t = x.dtype.type
    x3 = _view(x)
    if training:
        mean, xc, var, m = _stats(x3, allsum)
        new_rm = darknet_rolling_update(rolling_mean, mean)
        new_rv = darknet_rolling_update(rolling_var, var)
    else:
        mean, var = rolling_mean.astype(x.dtype, copy=False), rolling_var.astype(x.dtype, copy=False)
        xc = x3 - mean[:, None]
        new_rm, new_rv, m, allsum = rolling_mean, rolling_var, x3.shape[0] * x3.shape[2], None
    denom = np.sqrt(var) + t(EPS_FORWARD)
    x_norm = xc / denom[:, None]
    y = x_norm * scale.astype(x.dtype, copy=False)[:, None]
    y += bias.astype(x.dtype, copy=False)[:, None]
    cache = DarknetBNCache(x_norm, xc, var, denom, scale, bool(training), x.shape, mean, t(m), allsum)
    return y.reshape(x.shape), cache, (new_rm, new_rv)


def bn_cache_arrays(cache: DarknetBNCache) -> dict:
    """Darknet's BN buffers from a forward cache: ``x_norm`` (input-shaped), ``mean``, ``variance`` (the
    batch statistics in training, the rolling ones in inference), for comparisons with Darknet's dumps."""
    return {"x_norm": cache.x_norm.reshape(cache.shape), "mean": cache.mean, "variance": cache.var}


def darknet_bn_deltas(sum_dxhat: np.ndarray, sum_dxhat_xc: np.ndarray,
                      var: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Darknet's BN 2.2 and BN 2.1 (§10, "Darknet batch norm"), the one home every Darknet path calls: from the
    per-channel sums Σ dẑ and Σ dẑ·(z − μ) and the batch variance, with s = √(σ² + 1e-5),
    ``mean_delta_cpu``: dμ = −Σ dẑ / s (no variance term) and ``variance_delta_cpu``: dσ² = −½ Σ dẑ·(z − μ)·s⁻³.
    Returns (dμ, dσ²) in the gradient sign."""
    t = var.dtype.type
    s = np.sqrt(var + t(EPS_BACKWARD))
    return -sum_dxhat / s, t(-0.5) * sum_dxhat_xc / (s * s * s)


def darknet_bn_input_grad(dy3: np.ndarray, xc: np.ndarray, g: np.ndarray, var: np.ndarray,
                          mean_delta: np.ndarray, variance_delta: np.ndarray, m) -> np.ndarray:
    """Darknet's BN 2.3, ``normalize_delta_cpu`` (§10), (N, C, S) arrays: ``dz = γ·dy/s + dσ²·2(z − μ)/m + dμ/m``
    with s = √(σ² + 1e-5) and m the count of values per channel (not m − 1)."""
    t = dy3.dtype.type
    s = np.sqrt(var + t(EPS_BACKWARD))
    dx = dy3 * (g / s)[:, None]
    dx += xc * (t(2) * variance_delta / m)[:, None]
    dx += (mean_delta / m)[:, None]
    return dx


@dispatch.backward("batchnorm_darknet")
def batchnorm_darknet_backward(dy: np.ndarray, cache: DarknetBNCache) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darknet BN backward (§10, "Darknet batch norm"), in the gradient sign. Returns ``(dx, dscale, dbias)``.

    ``backward_bias``: dβ = Σ dy (BN 2.5). ``backward_scale_cpu``: dγ = Σ dy·ẑ (BN 2.6).
    ``scale_bias``: dẑ = γ·dy. Then ``darknet_bn_deltas`` (dμ, dσ²) and ``darknet_bn_input_grad`` (dz).
    In inference mode: dz = γ·dy/(√r_σ² + 1e-6), the exact derivative of the affine map.
    (Σ dẑ and Σ dẑ·(z − μ) are computed as γ·Σ dy and γ·Σ dy·(z − μ): the same sums, γ being per channel; with the
    forward's ``allsum``, summed over the processes that share the batch, m being theirs together.)
    """
    x_norm, xc, var, denom, scale, training, shape, _, m, allsum = cache
    dy3 = _view(dy)
    g = scale.astype(dy.dtype, copy=False)
    dbias = channel_sum(dy3)
    dscale = channel_dot(dy3, x_norm)
    if not training:
        return (dy3 * (g / denom)[:, None]).reshape(shape), dscale, dbias
    sum_dy, sum_dy_xc = dbias, channel_dot(dy3, xc)
    if allsum is not None:
        sum_dy, sum_dy_xc = global_sums(allsum, sum_dy, sum_dy_xc)
    mean_delta, variance_delta = darknet_bn_deltas(g * sum_dy, g * sum_dy_xc, var)
    return darknet_bn_input_grad(dy3, xc, g, var, mean_delta, variance_delta, m).reshape(shape), dscale, dbias


# --- naive twins: Darknet's C loops, transcribed ------------------------------------------------

def batchnorm_darknet_forward_naive(x: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                                    rolling_mean: np.ndarray, rolling_var: np.ndarray,
                                    training: bool = True):
    """Loops as ``mean_cpu``, ``variance_cpu``, ``normalize_cpu``, ``scale_bias``, ``add_bias``."""
    x4 = x.reshape(x.shape[0], x.shape[1], -1)
    batch, filters, spatial = x4.shape
    mean = np.zeros(filters, dtype=np.float64)
    var = np.zeros(filters, dtype=np.float64)
    if training:
        for f in range(filters):
            for b in range(batch):
                for k in range(spatial):
                    mean[f] += x4[b, f, k]
            mean[f] /= batch * spatial
            for b in range(batch):
                for k in range(spatial):
                    var[f] += (x4[b, f, k] - mean[f]) ** 2
            var[f] /= batch * spatial - 1
        new_rm = np.array([0.99 * rolling_mean[f] + 0.01 * mean[f] for f in range(filters)])
        new_rv = np.array([0.99 * rolling_var[f] + 0.01 * var[f] for f in range(filters)])
    else:
        mean[:] = rolling_mean
        var[:] = rolling_var
        new_rm, new_rv = np.array(rolling_mean, copy=True), np.array(rolling_var, copy=True)
    x_norm = np.zeros(x4.shape)
    y = np.zeros(x4.shape)
    for b in range(batch):
        for f in range(filters):
            for k in range(spatial):
                x_norm[b, f, k] = (x4[b, f, k] - mean[f]) / (np.sqrt(var[f]) + 1e-6)
                y[b, f, k] = x_norm[b, f, k] * scale[f] + bias[f]
    cache = DarknetBNNaiveCache(x4, x_norm, mean, var, scale, training, x.shape)
    dt = x.dtype
    return y.reshape(x.shape).astype(dt), cache, (new_rm.astype(dt), new_rv.astype(dt))


def batchnorm_darknet_backward_naive(dy: np.ndarray, cache: DarknetBNNaiveCache):
    """Loops as ``backward_bias``, ``backward_scale_cpu``, ``scale_bias``, ``mean_delta_cpu``,
    ``variance_delta_cpu``, ``normalize_delta_cpu`` (gradient sign). Returns (dx, dscale, dbias)."""
    x4, x_norm, mean, var, scale, training, shape = cache
    d = dy.reshape(x4.shape).astype(np.float64)
    batch, filters, spatial = x4.shape
    m = batch * spatial
    dbias = np.zeros(filters)
    dscale = np.zeros(filters)
    for f in range(filters):
        for b in range(batch):
            for k in range(spatial):
                dbias[f] += d[b, f, k]
                dscale[f] += d[b, f, k] * x_norm[b, f, k]
    dxn = np.zeros_like(d)
    for b in range(batch):
        for f in range(filters):
            for k in range(spatial):
                dxn[b, f, k] = d[b, f, k] * scale[f]
    dx = np.zeros_like(d)
    if not training:
        for b in range(batch):
            for f in range(filters):
                for k in range(spatial):
                    dx[b, f, k] = dxn[b, f, k] / (np.sqrt(var[f]) + 1e-6)
    else:
        mean_delta = np.zeros(filters)
        variance_delta = np.zeros(filters)
        for f in range(filters):
            for b in range(batch):
                for k in range(spatial):
                    mean_delta[f] += dxn[b, f, k]
                    variance_delta[f] += dxn[b, f, k] * (x4[b, f, k] - mean[f])
            mean_delta[f] *= -1.0 / np.sqrt(var[f] + 1e-5)
            variance_delta[f] *= -0.5 * (var[f] + 1e-5) ** -1.5
        for b in range(batch):
            for f in range(filters):
                for k in range(spatial):
                    dx[b, f, k] = (dxn[b, f, k] / np.sqrt(var[f] + 1e-5)
                                   + variance_delta[f] * 2.0 * (x4[b, f, k] - mean[f]) / m
                                   + mean_delta[f] / m)
    dt = dy.dtype
    return dx.reshape(shape).astype(dt), dscale.astype(dt), dbias.astype(dt)


def darknet_bn_intermediates(dy: np.ndarray, cache: DarknetBNCache) -> Tuple[np.ndarray, np.ndarray]:
    """Darknet's ``mean_delta`` and ``variance_delta`` buffers (training cache), in the GRADIENT sign
    (Darknet's own buffers are their negatives), by ``darknet_bn_deltas`` from the sums of dẑ = γ·dy as
    Darknet forms them. For comparisons with the real program's dumps."""
    dxn = _view(dy) * cache.scale.astype(dy.dtype, copy=False)[:, None]
    return darknet_bn_deltas(channel_sum(dxn), channel_dot(dxn, cache.xc), cache.var)
