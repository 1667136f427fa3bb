"""Convolution (docs/equations.md §3): Conv forward, Conv-1 (input gradient), Conv-2 (bias), Conv-3 (weights).

Layouts as PyTorch: x (N, C, H, W), w (F, C/groups, kh, kw), b (F,), out (N, F, Ho, Wo). By default the
layer computes what every framework calls convolution, a cross-correlation::

    z[n,f,i,j] = Σ_{c∈group(f)} Σ_{a,b} w[f,c,a,b] · x[n, c, i·s + a·d − p, j·s + b·d − p] + b[f]

Two options, off by default:

- ``mode="convolution"``: the true convolution, kernel flipped in the forward pass
  (w[f,c,kh−1−a,kw−1−b] in place of w[f,c,a,b]). Seed 003: with cross-correlation the kernel is *not*
  flipped forward but *is* turned in the backward pass (Conv-1: δ ⋆ rot180(w)); with true convolution it
  is the other way round, the input gradient correlates δ with the kernel as stored (δ ⋆ w) and the
  weight gradient is the turned correlation rot180(x ⋆ δ). Trained from kernels that are each other's
  flip, both modes give the same network.
- an untied bias: ``b`` of shape (F, Ho, Wo), one bias per output position; Conv-2 becomes
  ∂C/∂b[f,i,j] = Σ_n δ[n,f,i,j] (seed 003's alternative).

This module is the reference (docs/architecture.md#functional): the forward is ``im2col`` and one matrix product
(batched over groups), the backward Conv-2 as a sum, Conv-3 as one product with the columns and Conv-1 as
``col2im(Wᵀ δ)``. The ways ``deltaprop.fast`` computes the same faster (per-sample products, columns built in
chunks, the direct 3×3 loops, numba loops, passes split over the batch) register for these ops and are held to
them by tests/test_variants.py. The ``*_naive`` pair at the end are the loops a student would write from the
equations, the tests' independent check of all of it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dispatch
from ..errors import ShapeError
from ..dispatch import matmul
from .im2col import ConvGeometry, col2im, conv_geometry, im2col

Pad = Union[int, Sequence[int]]
MODES = ("cross_correlation", "convolution")


class ConvCache(NamedTuple):
    """``conv2d_forward``'s: the im2col matrix (C·kh·kw, N·Ho·Wo), or None when the input ``x`` is kept instead
    (``keep_cols=False``: the backward copies the columns again), the weights as a (G, F/G, C/G·kh·kw) matrix, the
    geometry, the mode and the bias kind ("tied", "untied" or "none")."""
    cols: Optional[np.ndarray]
    w2: np.ndarray
    geometry: ConvGeometry
    mode: str
    bias: str
    x: Optional[np.ndarray] = None


def check_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of ``MODES``."""
    if mode not in MODES:
        raise ValueError(f"conv mode must be one of {MODES}, got {mode!r}")


def bias_kind(b: Optional[np.ndarray], g: ConvGeometry) -> str:
    """"none", "tied" (b of shape (F,)) or "untied" (b of shape (F, Ho, Wo)); ShapeError for any other shape."""
    if b is None:
        return "none"
    if b.shape == (g.f,):
        return "tied"
    if b.shape == (g.f, g.ho, g.wo):
        return "untied"
    raise ShapeError(f"conv2d: bias must have shape ({g.f},) or, untied, ({g.f}, {g.ho}, {g.wo}); got {b.shape}")


def oriented(w: np.ndarray, mode: str) -> np.ndarray:
    """The kernel the forward pass correlates with: w itself, or w turned 180° in convolution mode."""
    return w[:, :, ::-1, ::-1] if mode == "convolution" else w


def prepare(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], stride, padding: Pad, dilation, groups: int,
            mode: str) -> Tuple[ConvGeometry, str, np.ndarray]:
    """What every way of computing the forward needs: the checked geometry, the bias kind and the kernel as
    the (G, F/G, C/G·kh·kw) matrix the products use (turned in convolution mode)."""
    check_mode(mode)
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    kind = bias_kind(b, g)
    w2 = np.ascontiguousarray(oriented(w, mode)).reshape(g.groups, g.f // g.groups, -1)
    return g, kind, w2


def make_cache(cols: Optional[np.ndarray], w2: np.ndarray, g: ConvGeometry, mode: str, kind: str, x: np.ndarray,
               keep_cols: bool, cache_type: type = ConvCache) -> ConvCache:
    """The cache a forward leaves: the columns (``keep_cols``), else the input x (and no columns)."""
    return cache_type(cols, w2, g, mode, kind) if keep_cols else cache_type(None, w2, g, mode, kind, x)


@dispatch.op("conv2d")
def conv2d_forward(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1),
                   padding: Pad = (0, 0), dilation=(1, 1), groups: int = 1,
                   mode: str = "cross_correlation", keep_cols: bool = True) -> Tuple[np.ndarray, ConvCache]:
    """Conv forward (§3): z = w ⋆ x + b as one matrix product ``W (F, C·kh·kw) @ cols (C·kh·kw, N·Ho·Wo)``,
    one product per group with groups.

    ``padding``: int, (rows, cols) or (top, bottom, left, right). ``b``: None, (F,), or (F, Ho, Wo) untied.
    ``keep_cols=False`` keeps a reference to ``x`` in the cache instead of the column matrix (C·kh·kw times
    larger than x for stride 1), and the backward builds the columns again: for callers that keep x alive
    anyway and do not change it before the backward (a cfg network's graph keeps every layer's output).
    Returns (out (N, F, Ho, Wo), cache).
    """
    g, kind, w2 = prepare(x, w, b, stride, padding, dilation, groups, mode)
    cols = im2col(x, g)                                                   # (C·kh·kw, N·Ho·Wo)
    if g.groups == 1:
        z = matmul(w2[0], cols)                                           # (F, N·Ho·Wo)
    else:
        z = matmul(w2, cols.reshape(g.groups, -1, g.positions))          # (G, F/G, N·Ho·Wo)
    return output_with_bias(z, b, kind, g), make_cache(cols, w2, g, mode, kind, x, keep_cols)


@dispatch.op("conv2d_output")
def output_with_bias(z: np.ndarray, b: Optional[np.ndarray], kind: str, g: ConvGeometry) -> np.ndarray:
    """The product's result z, (F, N·Ho·Wo) in any grouping, as the output (N, F, Ho, Wo) plus the bias of
    Conv forward (b[f], or b[f, i, j] untied): the NCHW copy and the addition in one pass."""
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=z.dtype)
    output_rows(z, b, kind, g, out, 0, g.n)
    return out


def output_rows(z: np.ndarray, b: Optional[np.ndarray], kind: str, g: ConvGeometry, out: np.ndarray,
                lo: int, hi: int) -> None:
    """``output_with_bias`` for the samples lo:hi (into ``out``)."""
    zt = z.reshape(g.f, g.n, g.ho, g.wo)[:, lo:hi].transpose(1, 0, 2, 3)
    if kind == "none":
        np.copyto(out[lo:hi], zt)
    else:
        np.add(zt, b[:, None, None] if kind == "tied" else b, out=out[lo:hi])


def add_bias(out: np.ndarray, b: Optional[np.ndarray], kind: str) -> None:
    """out += b in place: (F,) broadcast over the map ("tied"), (F, Ho, Wo) as it is ("untied"), or nothing."""
    if kind != "none":
        out += b[:, None, None] if kind == "tied" else b


def check_gradient(dout: np.ndarray, g: ConvGeometry) -> None:
    """ShapeError unless δ has the forward output's shape."""
    if dout.shape != (g.n, g.f, g.ho, g.wo):
        raise ShapeError(f"conv2d backward: got a gradient of shape {dout.shape}, expected {(g.n, g.f, g.ho, g.wo)} "
                         f"(the forward output's shape)")


@dispatch.backward("conv2d")
def conv2d_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Returns (dx, dw, db) for δ = dout (N, F, Ho, Wo).

    Conv-2: db[f] = Σ_{n,i,j} δ[n,f,i,j] (``δ @ ones``); untied: db[f,i,j] = Σ_n δ[n,f,i,j].
    Conv-3: dW = a ⋆ δ, i.e. ``δ @ colsᵀ`` (turned 180° in convolution mode).
    Conv-1: δ^{l−1} = Σ_f full(δ ⋆ rot180(W)) as ``col2im(Wᵀ @ δ)`` (σ' is the activation layer's job);
    in convolution mode the stored kernel is used unturned, since the forward already turned it.
    """
    cols, w2, g, mode, kind, x = cache
    check_gradient(dout, g)
    if cols is None:
        cols = im2col(x, g)
    d = filters_first(dout).reshape(g.f, g.positions)                    # δ as (F, N·Ho·Wo)
    db = bias_grad(d, dout, kind)
    dw = kernel_gradient(weight_grad(cols, d, g.groups), g, mode)
    del cols                                # not needed for Conv-1: lower the peak
    return (input_grad(dout, w2, g, d) if need_dx else None), dw, db


def bias_grad(d: Optional[np.ndarray], dout: np.ndarray, kind: str) -> Optional[np.ndarray]:
    """Conv-2 from δ as (F, N·Ho·Wo) (``d``, read for the tied bias only) and as (N, F, Ho, Wo) (``dout``): Σ over
    samples and positions as ``δ @ ones`` (tied), Σ over samples as ``ones @ δ`` (untied, (F, Ho, Wo)), or None
    without a bias."""
    if kind == "tied":
        return matmul(d, np.ones(d.shape[1], dtype=d.dtype))
    if kind == "untied":
        n = dout.shape[0]
        return matmul(np.ones(n, dtype=dout.dtype), dout.reshape(n, -1)).reshape(dout.shape[1:])
    return None


@dispatch.op("conv2d_weight_grad")
def weight_grad(cols: np.ndarray, d: np.ndarray, groups: int = 1) -> np.ndarray:
    """Conv-3 as one product: dW = δ colsᵀ, δ (F, P) and cols (C·kh·kw, P) over the same P positions, one
    product per group. Returns (F, C/G·kh·kw) (``kernel_gradient`` shapes it as the kernel)."""
    if groups == 1:
        return matmul(d, cols.T)
    f, p = d.shape
    return matmul(d.reshape(groups, f // groups, p), cols.reshape(groups, -1, p).transpose(0, 2, 1)).reshape(f, -1)


def kernel_gradient(dw2: np.ndarray, g: ConvGeometry, mode: str) -> np.ndarray:
    """Conv-3's (F, C/G·kh·kw) product as the gradient of the kernel as stored (turned back in convolution mode)."""
    return np.ascontiguousarray(oriented(dw2.reshape(g.f, g.c // g.groups, g.kh, g.kw), mode))


@dispatch.op("conv2d_input_grad")
def input_grad(dout: np.ndarray, w2: np.ndarray, g: ConvGeometry, d: Optional[np.ndarray] = None) -> np.ndarray:
    """Conv-1 as ``col2im(Wᵀ @ δ)``: each column of Wᵀδ holds what one output position sends back to the input
    pixels it read, and col2im adds them up there. ``d`` is δ as (F, N·Ho·Wo) when the caller has it already."""
    return col2im(input_columns(dout, w2, g, d), g)


def input_columns(dout: np.ndarray, w2: np.ndarray, g: ConvGeometry, d: Optional[np.ndarray] = None) -> np.ndarray:
    """Wᵀ @ δ as (C·kh·kw, N·Ho·Wo), one product per group: Conv-1's columns, before col2im adds them up."""
    if d is None:
        d = filters_first(dout).reshape(g.f, g.positions)
    if g.groups == 1:
        dcols = matmul(w2[0].T, d)
    else:
        dcols = matmul(w2.transpose(0, 2, 1), d.reshape(g.groups, g.f // g.groups, -1))
    return dcols.reshape(g.taps, g.positions)


@dispatch.op("conv2d_filters_first")
def filters_first(dout: np.ndarray, width: Optional[int] = None) -> np.ndarray:
    """δ (N, F, Ho, Wo) copied as (F, N, Ho, width), the layout of the products' (F, N·Ho·Wo) side; zeros in the
    columns beyond Wo (width ≥ Wo, default Wo)."""
    n, f, ho, wo = dout.shape
    width = wo if width is None else width
    out = (np.empty if width == wo else np.zeros)((f, n, ho, width), dtype=dout.dtype)
    filters_first_rows(dout, out, 0, n)
    return out


def filters_first_rows(dout: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
    """``filters_first`` for the samples lo:hi (into ``out``)."""
    np.copyto(out[:, lo:hi, :, :dout.shape[3]], dout[lo:hi].transpose(1, 0, 2, 3))


# --- naive reference loops ------------------------------------------------------------------------

class ConvNaiveCache(NamedTuple):
    """``conv2d_forward_naive``'s: the input and the kernel as given, the geometry, the mode and the bias kind."""
    x: np.ndarray
    w: np.ndarray
    geometry: ConvGeometry
    mode: str
    bias: str


def _tap(a: int, b: int, kh: int, kw: int, mode: str) -> Tuple[int, int]:
    """Index of the kernel entry that meets tap (a, b): itself, or turned 180° for a true convolution."""
    return (kh - 1 - a, kw - 1 - b) if mode == "convolution" else (a, b)


def conv2d_forward_naive(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1),
                         padding: Pad = (0, 0), dilation=(1, 1), groups: int = 1,
                         mode: str = "cross_correlation") -> Tuple[np.ndarray, ConvNaiveCache]:
    """Reference loops for the §3 forward: z[n,f,i,j] = Σ_c Σ_{a,b} w[f,c,a,b] x[n,c,i·s+a·d−p, j·s+b·d−p] + b."""
    check_mode(mode)
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    kind = bias_kind(b, g)
    cg, fg = g.c // g.groups, g.f // g.groups
    z = np.zeros((g.n, g.f, g.ho, g.wo), dtype=x.dtype)
    for n in range(g.n):
        for f in range(g.f):
            group = f // fg
            for i in range(g.ho):
                for j in range(g.wo):
                    acc = 0.0
                    for c in range(cg):
                        for a in range(g.kh):
                            for bb in range(g.kw):
                                y = i * g.sh + a * g.dh - g.pt
                                xx = j * g.sw + bb * g.dw - g.pl
                                if 0 <= y < g.h and 0 <= xx < g.w:   # x is 0 outside
                                    ka, kb = _tap(a, bb, g.kh, g.kw, mode)
                                    acc += w[f, c, ka, kb] * x[n, group * cg + c, y, xx]
                    if kind == "tied":
                        acc += b[f]
                    elif kind == "untied":
                        acc += b[f, i, j]
                    z[n, f, i, j] = acc
    return z, ConvNaiveCache(x, w, g, mode, kind)


def conv2d_backward_naive(dout: np.ndarray, cache: ConvNaiveCache, need_dx: bool = True
                          ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Reference loops, each gradient gathered straight from its equation:

    Conv-1: ∂C/∂x[n,c,y,x] = Σ_f Σ_{a,b} δ[n,f,i,j] · w[f,c,a,b] over the outputs (i, j) that the pixel fed,
            i = (y + p − a·d)/s when that is a whole number in range (δ spread by the stride: the full
            correlation of δ with the turned kernel).
    Conv-2: ∂C/∂b[f] = Σ_{n,i,j} δ[n,f,i,j]  (untied: ∂C/∂b[f,i,j] = Σ_n δ[n,f,i,j]).
    Conv-3: ∂C/∂w[f,c,a,b] = Σ_{n,i,j} δ[n,f,i,j] · x[n,c,i·s+a·d−p, j·s+b·d−p]  (a ⋆ δ).
    """
    x, w, g, mode, kind = cache
    cg, fg = g.c // g.groups, g.f // g.groups
    dw = np.zeros_like(w)
    for f in range(g.f):                                    # Conv-3
        group = f // fg
        for c in range(cg):
            for a in range(g.kh):
                for bb in range(g.kw):
                    acc = 0.0
                    for n in range(g.n):
                        for i in range(g.ho):
                            for j in range(g.wo):
                                y = i * g.sh + a * g.dh - g.pt
                                xx = j * g.sw + bb * g.dw - g.pl
                                if 0 <= y < g.h and 0 <= xx < g.w:
                                    acc += dout[n, f, i, j] * x[n, group * cg + c, y, xx]
                    ka, kb = _tap(a, bb, g.kh, g.kw, mode)
                    dw[f, c, ka, kb] = acc
    db = None                                               # Conv-2
    if kind == "tied":
        db = np.array([dout[:, f].sum() for f in range(g.f)], dtype=dout.dtype)
    elif kind == "untied":
        db = dout.sum(axis=0)
    if not need_dx:
        return None, dw, db
    dx = np.zeros_like(x)
    for n in range(g.n):                                    # Conv-1
        for ch in range(g.c):
            group, c = ch // cg, ch % cg
            for y in range(g.h):
                for xx in range(g.w):
                    acc = 0.0
                    for f in range(group * fg, (group + 1) * fg):
                        for a in range(g.kh):
                            for bb in range(g.kw):
                                ti, tj = y + g.pt - a * g.dh, xx + g.pl - bb * g.dw
                                if ti % g.sh or tj % g.sw:
                                    continue                # no output put this tap on this pixel
                                i, j = ti // g.sh, tj // g.sw
                                if 0 <= i < g.ho and 0 <= j < g.wo:
                                    ka, kb = _tap(a, bb, g.kh, g.kw, mode)
                                    acc += dout[n, f, i, j] * w[f, c, ka, kb]
                    dx[n, ch, y, xx] = acc
    return dx, dw, db


# --- 1-D convolution through the 2-D kernel on (N, C, 1, L) -------------------------------------------

def _as2d(stride, padding, dilation) -> tuple:
    s = int(stride[0] if isinstance(stride, (tuple, list)) else stride)
    d = int(dilation[0] if isinstance(dilation, (tuple, list)) else dilation)
    if isinstance(padding, (tuple, list)):
        pl, pr = (int(padding[0]),) * 2 if len(padding) == 1 else (int(padding[0]), int(padding[1]))
    else:
        pl = pr = int(padding)
    return (1, s), (0, 0, pl, pr), (1, d)


def conv1d_forward(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=1, padding=0,
                   dilation=1, groups: int = 1, mode: str = "cross_correlation") -> Tuple[np.ndarray, ConvCache]:
    """1-D convolution (Conv forward on one axis), x (N, C, L), w (F, C/groups, k): the 2-D kernel on
    (N, C, 1, L). ``padding``: int or (left, right). Untied bias: b (F, L_out)."""
    if x.ndim != 3 or w.ndim != 3:
        raise ShapeError(f"conv1d: expected input (N, C, L) and weight (F, C/groups, k), got {x.shape} and {w.shape}")
    s, p, d = _as2d(stride, padding, dilation)
    b2 = b[:, None, :] if b is not None and b.ndim == 2 else b
    out, cache = conv2d_forward(x[:, :, None, :], w[:, :, None, :], b2, s, p, d, groups, mode)
    return out[:, :, 0, :], cache


def conv1d_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """(dx (N, C, L), dw (F, C/groups, k), db) through ``conv2d_backward`` (Conv-1, Conv-2, Conv-3)."""
    dx, dw, db = conv2d_backward(dout[:, :, None, :], cache, need_dx)
    if db is not None and db.ndim == 3:
        db = db[:, 0, :]
    return (None if dx is None else dx[:, :, 0, :]), dw[:, :, 0, :], db
