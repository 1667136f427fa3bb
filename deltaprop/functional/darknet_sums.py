"""Darknet's batch norm summed in Darknet's order (docs/equations.md §10, "Darknet's summation order").

Both Darknets normalise with per-channel sums over N·H·W values that their C code accumulates one value at a time
in a float32 variable (``blas.c`` ``mean_cpu``, ``variance_cpu``; ``batchnorm_layer.c`` ``backward_scale_cpu``,
``mean_delta_cpu``, ``variance_delta_cpu``; ``convolutional_layer.c`` ``backward_bias``). Built ``-O2`` (no
``-ffast-math``) the compiler keeps that order, so the rounding of a sum over 346,112 values (yolov3-tiny's first
layer at 416×416, batch 2) is Darknet's own: it moves the training-mode outputs by about 0.2 % and, through the
backward's cancelling sums, the deltas of the layers below by far more than float32's ε. The engine's default
sums (``functional.norm.channel_sum``: BLAS dot products) are the more exact ones; this module reproduces the
real program instead:

- ``sequential_sum``: ``s += x`` over the batch, then over the spatial positions, in float32 (``mean_cpu``,
  ``mean_delta_cpu``; with the products rounded to float32 first, ``backward_scale_cpu`` and
  ``variance_delta_cpu``);
- ``sequential_square_sum``: ``variance_cpu``'s ``v += pow(x − μ, 2)``: the square and the addition in double,
  the running sum rounded to float32 after each value;
- ``per_image_sum``: ``backward_bias``: one float32 sum per image (``sum_array``), added image after image;
- ``sequential_gemm``: ``gemm_nn``'s ``C[i][j] += A[i][k]·B[k][j]`` with k in the outer loop: every output a
  float32 sum over k in order, each product rounded first. ``conv2d_forward_darknet`` is the convolution of
  ``forward_convolutional_layer`` (im2col, then that product per image and group): the forward sums whose
  rounding the batch-norm sums above then see, bit for bit where the C code's are;
- ``sequential_dot_nt``: ``gemm_nt``'s ``sum += A[i][k]·B[j][k]`` over k in order: ``conv2d_backward_darknet``'s
  weight gradient, one such sum per image added image after image (``backward_convolutional_layer``); the
  bias gradient of a layer without batch norm is ``per_image_sum``.

``batchnorm_forward``/``batchnorm_backward`` are the whole batch norm of either fork with those sums and the C
code's float/double promotions, operation for operation (``FORKS``): pjreddie f6afaabc normalises with
``(x − μ)/(√σ² + 1e-6)``, moves the rolling statistics ``0.99·r + 0.01·batch`` and divides the delta by
``√(σ² + 1e-5)``; AlexeyAB 59596d78 normalises with ``(x − μ)/√(σ² + 1e-5)``, moves them ``0.9·r + 0.1·batch``
and divides the delta by ``√σ² + 1e-5`` (the places of ε are swapped between the forks). ``order="pairwise"``
runs the same formulas with the engine's BLAS sums. Every formula is linear in the delta, so it runs in the
engine's gradient sign (Darknet's delta negated: negation is exact in floating point).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from .conv import ConvCache, conv2d_backward, conv2d_forward
from .im2col import im2col
from .norm import channel_dot, channel_sum, channel_view

ORDERS = ("pairwise", "darknet")


@dataclass(frozen=True)
class BNFork:
    """Where a Darknet fork puts batch norm's ε, and how its rolling statistics move."""
    name: str
    eps_forward: float          # normalize_cpu's ε
    forward_eps_in_root: bool   # √(σ² + ε) (AlexeyAB) or √σ² + ε (pjreddie)
    eps_backward: float         # mean_delta_cpu / variance_delta_cpu / normalize_delta_cpu's ε
    backward_eps_in_root: bool  # normalize_delta_cpu: δ/√(σ² + ε) (pjreddie) or δ/(√σ² + ε) (AlexeyAB)
    roll_keep: float            # rolling statistics r ← keep·r + new·batch
    roll_new: float


#: The two forks' batch norms (src/batchnorm_layer.c, src/blas.c of each).
FORKS: Dict[str, BNFork] = {
    "pjreddie": BNFork("pjreddie", 1e-6, False, 1e-5, True, 0.99, 0.01),
    "alexeyab": BNFork("alexeyab", 1e-5, True, 1e-5, False, 0.9, 0.1),
}


def _c_float(v: float) -> np.float32:
    """A C ``float`` literal or a ``float`` variable assigned from a double (round to nearest)."""
    return np.float32(v)


def _by_channel(x3: np.ndarray) -> np.ndarray:
    """(N, C, S) → (C, N·S): each channel's values in Darknet's loop order (image, then position)."""
    n, c, s = x3.shape
    return np.ascontiguousarray(x3.transpose(1, 0, 2)).reshape(c, n * s)


@dispatch.op("darknet_sums.sequential_sum")
def sequential_sum(x3: np.ndarray) -> np.ndarray:
    """Σ over (image, position) of an (N, C, S) array per channel, one value at a time in the array's dtype, in
    Darknet's order (§10, Darknet's summation order: ``mean_cpu``'s ``mean[i] += x[index]``). ``np.add.accumulate``
    adds sequentially (``np.sum`` is pairwise)."""
    flat = _by_channel(x3)
    if flat.shape[1] == 0:
        return np.zeros(flat.shape[0], x3.dtype)
    return np.add.accumulate(flat, axis=1)[:, -1].copy()


@dispatch.op("darknet_sums.sequential_square_sum")
def sequential_square_sum(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``variance_cpu``'s sum (§10, Darknet's summation order) of an (N, C, S) float32 array: per channel
    ``v = (float)((double)v + pow((double)(x − μ), 2))`` value after value, x − μ in float32, the square and the
    addition in double, v rounded to float32 each time. In float64 the same loop without roundings."""
    d = _by_channel(x3) - mean.astype(x3.dtype, copy=False)[:, None]
    q = d.astype(np.float64) ** 2
    v = np.zeros(d.shape[0], np.float64)
    for k in range(q.shape[1]):            # one step per value: the order is the point
        v = (v + q[:, k]).astype(x3.dtype).astype(np.float64)
    return v.astype(x3.dtype)


def per_image_sum(x3: np.ndarray) -> np.ndarray:
    """``backward_bias`` (§10, Darknet's summation order): per channel, ``sum_array`` over each image's positions
    in float32, the image sums added one image after another."""
    total = np.zeros(x3.shape[1], x3.dtype)
    for b in range(x3.shape[0]):
        total = total + sequential_sum(x3[b:b + 1])
    return total


def sequential_dot(a3: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Σ a·b per channel with each product rounded to the dtype, then summed in Darknet's order
    (``backward_scale_cpu``, ``variance_delta_cpu``; §10, Darknet's summation order)."""
    return sequential_sum(a3 * b3)


@dispatch.op("darknet_sums.sequential_gemm")
def sequential_gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``gemm_nn`` (§10, Darknet's summation order): (M, K) @ (K, N) with every output summed over k in order, each
    product ``a[i, k]·b[k, j]`` rounded to the dtype before it is added (no fused multiply-add)."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    tmp = np.empty_like(out)
    for k in range(a.shape[1]):
        np.multiply(a[:, k:k + 1], b[k:k + 1, :], out=tmp)
        out += tmp
    return out


def conv2d_forward_darknet(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=1, padding=0,
                           groups: int = 1, keep_cols: bool = True) -> Tuple[np.ndarray, ConvCache]:
    """Conv forward (§3) summed as ``forward_convolutional_layer`` sums it (§10, Darknet's summation order): per
    image and group, ``sequential_gemm`` of the weights (F/G, C/G·k·k) with that image's im2col columns, then
    ``add_bias``. Returns ``functional.conv.conv2d_forward``'s cache (the backward is the engine's)."""
    z, cache = conv2d_forward(x, w, b, stride=stride, padding=padding, groups=groups, keep_cols=keep_cols)
    g = cache.geometry
    cols = (cache.cols if cache.cols is not None else im2col(x, g))
    cols = cols.reshape(g.groups, g.taps // g.groups, g.n, g.ho * g.wo)
    w2 = np.ascontiguousarray(w).reshape(g.groups, g.f // g.groups, -1)
    fg = g.f // g.groups
    for n in range(g.n):
        for grp in range(g.groups):
            z[n, grp * fg:(grp + 1) * fg] = sequential_gemm(w2[grp], np.ascontiguousarray(cols[grp, :, n])
                                                            ).reshape(fg, g.ho, g.wo)
    if b is not None:
        z += b.astype(z.dtype, copy=False)[:, None, None]
    return z, cache


@dispatch.op("darknet_sums.sequential_dot_nt")
def sequential_dot_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``gemm_nt`` (§10, Darknet's summation order): (M, K) @ (N, K)ᵀ with every output a sum over k in order in
    the dtype, each product rounded before it is added."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.result_type(a, b))
    for i in range(a.shape[0]):
        prods = a[i][None, :] * b                   # (N, K): the products of one row, rounded
        out[i] = np.add.accumulate(prods, axis=1)[:, -1] if prods.shape[1] else 0
    return out


def conv2d_backward_darknet(dout: np.ndarray, cache: ConvCache, need_dx: bool = True
                            ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Conv-3 and Conv-2 (§3) summed as ``backward_convolutional_layer`` sums them (§10, Darknet's summation
    order): per image and group ``sequential_dot_nt`` of δ (F/G, Ho·Wo) with that image's columns, the images'
    results added in order; the bias gradient ``per_image_sum``. Conv-1 (the input's gradient, sums over the
    filters) is the engine's ``conv2d_backward``. Returns (dx, dw, db) like it; ``cache`` from
    ``conv2d_forward_darknet`` (or ``conv2d_forward``)."""
    dx, dw_engine, db_engine = conv2d_backward(dout, cache, need_dx)
    g = cache.geometry
    cols = cache.cols if cache.cols is not None else im2col(cache.x, g)
    cols = cols.reshape(g.groups, g.taps // g.groups, g.n, g.ho * g.wo)
    fg = g.f // g.groups
    d = np.ascontiguousarray(dout).reshape(g.n, g.groups, fg, g.ho * g.wo)
    dw = np.zeros((g.groups, fg, g.taps // g.groups), dtype=dout.dtype)
    for n in range(g.n):
        for grp in range(g.groups):
            dw[grp] += sequential_dot_nt(np.ascontiguousarray(d[n, grp]), np.ascontiguousarray(cols[grp, :, n]))
    db = None if db_engine is None else per_image_sum(np.ascontiguousarray(dout).reshape(g.n, g.f, -1))
    return dx, dw.reshape(dw_engine.shape), db


# --- batch norm of either fork, Darknet's sums ----------------------------------------------------------

class OrderedBNCache(NamedTuple):
    """``batchnorm_forward``'s: the input z (N, C, S), x̂, the mean and variance it normalised with, the scales,
    whether batch statistics normalised, the fork, the summation order and the input's shape."""
    x3: np.ndarray
    x_norm: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    training: bool
    fork: BNFork
    order: str
    shape: tuple


def _check(order: str, fork: str) -> BNFork:
    if order not in ORDERS:
        raise ValueError(f"summation order must be one of {ORDERS}, got {order!r}")
    if fork not in FORKS:
        raise ValueError(f"Darknet fork must be one of {tuple(FORKS)}, got {fork!r}")
    return FORKS[fork]


def batch_stats(x3: np.ndarray, order: str = "darknet") -> Tuple[np.ndarray, np.ndarray]:
    """``mean_cpu`` and ``variance_cpu`` (§10, Darknet batch norm; Darknet's summation order for
    ``order="darknet"``): μ = Σz·(float)(1/m), unbiased σ² = Σ(z − μ)²·(float)(1/(m − 1)), m = N·S, the scale
    factors computed in double and stored as floats as the C code does."""
    n, c, s = x3.shape
    m = n * s
    if m < 2:
        raise ValueError(f"Darknet batch norm in training needs at least 2 values per channel, got m = {m}")
    t = x3.dtype.type
    if order == "darknet":
        mean = sequential_sum(x3) * t(1.0 / m)
        var = sequential_square_sum(x3, mean) * t(1.0 / (m - 1))
    else:
        mean = channel_sum(x3) * t(1.0 / m)
        xc = x3 - mean[:, None]
        var = channel_dot(xc, xc) * t(1.0 / (m - 1))
    return mean.astype(x3.dtype, copy=False), var.astype(x3.dtype, copy=False)


def rolling_update(rolling: np.ndarray, batch_stat: np.ndarray, fork: BNFork) -> np.ndarray:
    """``scal_cpu(keep)`` then ``axpy_cpu(new)`` (§10, Darknet batch norm): a NEW array keep·r + new·batch with
    float32 constants and float32 operations for float32 arrays."""
    t = rolling.dtype.type
    out = rolling * t(fork.roll_keep)
    out += t(fork.roll_new) * batch_stat.astype(rolling.dtype, copy=False)
    return out


def _normalize(xc: np.ndarray, var: np.ndarray, fork: BNFork) -> np.ndarray:
    """``normalize_cpu``: ``(x − μ)/(sqrt(σ²) + ε)`` (pjreddie) or ``(x − μ)/sqrt(σ² + ε)`` (AlexeyAB), the division
    in double, ε a float literal, the result stored as float."""
    t = xc.dtype.type
    if fork.forward_eps_in_root:
        denom = np.sqrt((var + t(fork.eps_forward)).astype(np.float64))
    else:
        denom = np.sqrt(var.astype(np.float64)) + np.float64(_c_float(fork.eps_forward))
    return (xc.astype(np.float64) / denom[:, None]).astype(xc.dtype)


def batchnorm_forward(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, rolling_mean: np.ndarray,
                      rolling_var: np.ndarray, training: bool = True, fork: str = "pjreddie",
                      order: str = "darknet") -> Tuple[np.ndarray, OrderedBNCache, Tuple[np.ndarray, np.ndarray]]:
    """Darknet batch norm forward (§10, Darknet batch norm; Darknet's summation order) as ``forward_batchnorm_layer``
    of ``fork`` computes it: training normalises with ``batch_stats`` and returns new rolling statistics
    (``rolling_update``), inference with the rolling ones; then ``scale_bias`` (×γ) and ``add_bias`` (+β) in
    float32. Returns ``(y, cache, (rolling_mean, rolling_var))`` like ``functional.norm_darknet``."""
    f = _check(order, fork)
    x3 = channel_view(x)
    if training:
        mean, var = batch_stats(x3, order)
        new_rm, new_rv = rolling_update(rolling_mean, mean, f), rolling_update(rolling_var, var, f)
    else:
        mean, var = rolling_mean.astype(x.dtype, copy=False), rolling_var.astype(x.dtype, copy=False)
        new_rm, new_rv = rolling_mean, rolling_var
    x_norm = _normalize(x3 - mean[:, None], var, f)
    y = x_norm * scale.astype(x.dtype, copy=False)[:, None]
    y += bias.astype(x.dtype, copy=False)[:, None]
    cache = OrderedBNCache(x3, x_norm, mean, var, scale, bool(training), f, order, x.shape)
    return y.reshape(x.shape), cache, (new_rm, new_rv)


def batchnorm_backward(dy: np.ndarray, cache: OrderedBNCache) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darknet batch norm backward (§10, Darknet batch norm; Darknet's summation order) in the gradient sign,
    ``backward_batchnorm_layer`` of the cache's fork: ``backward_bias`` (dβ = Σ dy; AlexeyAB's CPU code forgets
    this call, so its CPU build never trains a batch-normalised layer's β: not reproduced, its GPU code and
    pjreddie's train β), ``backward_scale_cpu`` (dγ = Σ dy·x̂), ``scale_bias`` (dx̂ = γ·dy),
    ``mean_delta_cpu`` (dμ = Σ dx̂ · (−1/√(σ² + 1e-5))), ``variance_delta_cpu`` (dσ² = Σ dx̂(z − μ) ·
    (−½(σ² + 1e-5)^{−3/2})) and ``normalize_delta_cpu`` (dz = dx̂/s + dσ²·2(z − μ)/m + dμ/m, s as the fork puts
    its ε), each in the C code's float/double operations. Inference caches: the exact derivative γ·dy/divisor.
    Returns ``(dx, dscale, dbias)``."""
    x3, x_norm, mean, var, scale, training, f, order, shape = cache
    dy3 = channel_view(dy)
    t = dy.dtype.type
    darknet = order == "darknet"
    dbias = per_image_sum(dy3) if darknet else channel_sum(dy3)
    dscale = sequential_dot(dy3, x_norm) if darknet else channel_dot(dy3, x_norm)
    dxn = dy3 * scale.astype(dy.dtype, copy=False)[:, None]
    v_eps = var + t(f.eps_backward)                       # variance[i] + .00001f, a float
    if not training:
        if f.forward_eps_in_root:
            denom = np.sqrt((var + t(f.eps_forward)).astype(np.float64))
        else:
            denom = np.sqrt(var.astype(np.float64)) + np.float64(_c_float(f.eps_forward))
        return (dxn / denom[:, None]).astype(dy.dtype).reshape(shape), dscale, dbias
    xc = x3 - mean[:, None]
    s_md = sequential_sum(dxn) if darknet else channel_sum(dxn)
    s_vd = sequential_dot(dxn, xc) if darknet else channel_dot(dxn, xc)
    v64 = v_eps.astype(np.float64)
    mean_delta = (s_md.astype(np.float64) * (-1.0 / np.sqrt(v64))).astype(dy.dtype)
    variance_delta = (s_vd.astype(np.float64) * (-0.5 * v64 ** np.float64(np.float32(-1.5)))).astype(dy.dtype)
    m = x3.shape[0] * x3.shape[2]
    if f.backward_eps_in_root:
        s = np.sqrt(v64)
    else:
        s = np.sqrt(var.astype(np.float64)) + np.float64(_c_float(f.eps_backward))
    dx = dxn.astype(np.float64) / s[:, None]
    dx += variance_delta.astype(np.float64)[:, None] * 2.0 * xc.astype(np.float64) / m
    dx += (mean_delta / t(m)).astype(np.float64)[:, None]   # float / int: a float division in C
    return dx.astype(dy.dtype).reshape(shape), dscale, dbias
