"""Convolution kernels (docs/equations.md §3): forward, Conv-1 (input gradient), Conv-2 (bias), Conv-3 (weights).

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

The fast pair uses one matrix product per convolution (batched over groups) around ``im2col``/``col2im``;
the ``*_naive`` pair are the loops a student would write from the equations, used to test it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..runtime.blas import matmul
from ..errors import ShapeError
from ..runtime import jit as _numba
from ..fast import split as _split
from ..fast import conv_direct
from .im2col import ConvGeometry, col2im, col2im_wide, conv_geometry, im2col

Pad = Union[int, Sequence[int]]
MODES = ("cross_correlation", "convolution")
THIN_FILTERS = 16            # fewer filters: per-sample products in the forward pass and in Conv-3
PER_SAMPLE_POSITIONS = 256   # at least this many output positions: per-sample products in the forward pass
COLS_CHUNK_BYTES = 32 << 20  # keep_cols=False: the forward builds the columns of this many bytes of samples at a time


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


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"conv mode must be one of {MODES}, got {mode!r}")


def _bias_kind(b: Optional[np.ndarray], g: ConvGeometry) -> str:
    if b is None:
        return "none"
    if b.shape == (g.f,):
        return "tied"
    if b.shape == (g.f, g.ho, g.wo):
        return "untied"
    raise ShapeError(f"conv2d: bias must have shape ({g.f},) or, untied, ({g.f}, {g.ho}, {g.wo}); got {b.shape}")


def _oriented(w: np.ndarray, mode: str) -> np.ndarray:
    """The kernel the forward pass correlates with: w itself, or w turned 180° in convolution mode."""
    return w[:, :, ::-1, ::-1] if mode == "convolution" else w


def _thin(g: ConvGeometry) -> bool:
    """Few filters and one group: the products run per sample (measured faster below 16 filters)."""
    return g.groups == 1 and g.f < THIN_FILTERS and g.ho * g.wo >= 64


def _per_sample_forward(g: ConvGeometry) -> bool:
    """Forward per sample (writes NCHW directly, no transposing copy) for thin layers and large maps;
    measured equal or faster than one product + transpose on the conv-BN net's layers."""
    return g.groups == 1 and (_thin(g) or g.ho * g.wo >= PER_SAMPLE_POSITIONS)


def _chunk_samples(g: ConvGeometry, itemsize: int) -> int:
    """Samples whose columns fit in ``COLS_CHUNK_BYTES`` (at least one)."""
    return max(1, min(g.n, COLS_CHUNK_BYTES // max(1, g.taps * g.ho * g.wo * itemsize)))


def _per_sample(cols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The column matrix as N stacked (C·kh·kw, Ho·Wo) matrices (a strided view, no copy)."""
    return cols.reshape(g.taps, g.n, g.ho * g.wo).transpose(1, 0, 2)


# --- fast kernels ----------------------------------------------------------------------------------

def conv2d_forward(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1),
                   padding: Pad = (0, 0), dilation=(1, 1), groups: int = 1,
                   mode: str = "cross_correlation", keep_cols: bool = True) -> Tuple[np.ndarray, ConvCache]:
    """z = w ⋆ x + b (§3 forward) as one matrix product ``W (F, C·kh·kw) @ cols (C·kh·kw, N·Ho·Wo)``.

    ``padding``: int, (rows, cols) or (top, bottom, left, right). ``b``: None, (F,), or (F, Ho, Wo) untied.
    ``keep_cols=False`` keeps a reference to ``x`` in the cache instead of the column matrix (C·kh·kw times
    larger than x for stride 1), and the backward builds the columns again: for callers that keep x alive
    anyway and do not change it before the backward (a cfg network's graph keeps every layer's output).
    Then, with numba, a layer with few taps on a large map (``conv_direct.applies``) runs the direct loops
    of ``functional.conv_direct`` instead of the product. Returns (out (N, F, Ho, Wo), cache).
    """
    _check_mode(mode)
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    kind = _bias_kind(b, g)
    G = g.groups
    w2 = np.ascontiguousarray(_oriented(w, mode)).reshape(G, g.f // G, -1)
    if not keep_cols and conv_direct.applies(g):
        # few taps on a large map: the direct loops (no columns at all; the backward builds them in chunks)
        out = conv_direct.conv2d_direct(x, _oriented(w, mode), g)
        _add_bias(out, b, kind)
        return out, _cache(None, w2, g, mode, kind, x, keep_cols)
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=np.result_type(x, w))
    step = _chunk_samples(g, x.dtype.itemsize) if not keep_cols and _per_sample_forward(g) else g.n
    if step < g.n:
        # the columns are not kept: build them a few samples at a time into one reused block of memory
        for lo in range(0, g.n, step):
            hi = min(g.n, lo + step)
            gc = g._replace(n=hi - lo)
            matmul(w2[0], _per_sample(im2col(x[lo:hi], gc), gc), out=out[lo:hi].reshape(hi - lo, g.f, -1))
        _add_bias(out, b, kind)
        return out, _cache(None, w2, g, mode, kind, x, keep_cols)
    cols = im2col(x, g)                                           # (C·kh·kw, N·Ho·Wo)
    if _per_sample_forward(g):
        # One product per sample writes NCHW directly (with F < 16 a single (F, N·Ho·Wo) product ran at a
        # third of the speed; on large maps it saves the transposing copy).
        matmul(w2[0], _per_sample(cols, g), out=out.reshape(g.n, g.f, -1))
        _add_bias(out, b, kind)
        return out, _cache(cols, w2, g, mode, kind, x, keep_cols)
    if G == 1:
        z = matmul(w2[0], cols)                                   # (F, N·Ho·Wo)
    else:
        z = matmul(w2, cols.reshape(G, -1, g.positions))          # (G, F/G, N·Ho·Wo)
    zt = z.reshape(g.f, g.n, g.ho, g.wo).transpose(1, 0, 2, 3)
    bias = b[:, None, None] if kind == "tied" else b

    def part(lo, hi):                 # the NCHW copy and the bias in one pass, per batch slice
        if kind == "none":
            np.copyto(out[lo:hi], zt[lo:hi])
        else:
            np.add(zt[lo:hi], bias, out=out[lo:hi])
    _split.map_batch(part, g.n, out.size)
    return out, _cache(cols, w2, g, mode, kind, x, keep_cols)


def _add_bias(out: np.ndarray, b: Optional[np.ndarray], kind: str) -> None:
    """out += b in place: (F,) broadcast over the map ("tied"), (F, Ho, Wo) as it is ("untied"), or nothing."""
    if kind != "none":
        out += b[:, None, None] if kind == "tied" else b


def _cache(cols: np.ndarray, w2: np.ndarray, g: ConvGeometry, mode: str, kind: str, x: np.ndarray,
           keep_cols: bool) -> ConvCache:
    return ConvCache(cols, w2, g, mode, kind) if keep_cols else ConvCache(None, w2, g, mode, kind, x)


def conv2d_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Returns (dx, dw, db) for δ = dout (N, F, Ho, Wo).

    Conv-2: db[f] = Σ_{n,i,j} δ[n,f,i,j] (``δ @ ones``); untied: db[f,i,j] = Σ_n δ[n,f,i,j].
    Conv-3: dW = a ⋆ δ, i.e. ``cols @ δᵀ`` (turned 180° in convolution mode).
    Conv-1: δ^{l−1} = Σ_f full(δ ⋆ rot180(W)) as ``col2im(Wᵀ @ δ)`` (σ' is the activation layer's job);
    in convolution mode the stored kernel is used unturned, since the forward already turned it.
    """
    cols, w2, g, mode, kind, x = cache
    if dout.shape != (g.n, g.f, g.ho, g.wo):
        raise ShapeError(f"conv2d backward: got a gradient of shape {dout.shape}, expected {(g.n, g.f, g.ho, g.wo)} "
                         f"(the forward output's shape)")
    G, fg = g.groups, g.f // g.groups
    dt = dout.dtype
    ones_n = np.ones(g.n, dtype=dt)
    if cols is None and G == 1 and not _thin(g) and _chunk_samples(g, x.dtype.itemsize) < g.n:
        return _backward_chunked(dout, x, w2, g, mode, kind, need_dx)
    if cols is None:
        cols = im2col(x, g)
    if _thin(g):
        # per sample, as in the forward: dW = Σ_n δ_n (F, Ho·Wo) @ cols_nᵀ (Ho·Wo, C·kh·kw)
        dn = np.ascontiguousarray(dout).reshape(g.n, g.f, -1)
        per = matmul(dn, _per_sample(cols, g).transpose(0, 2, 1))         # (N, F, C·kh·kw)
        dw2 = matmul(ones_n, per.reshape(g.n, -1)).reshape(g.f, -1)
        db = None
        if kind != "none":
            s = (ones_n @ dn.reshape(g.n, -1)).reshape(g.f, g.ho, g.wo)   # Σ_n δ
            db = s if kind == "untied" else s.reshape(g.f, -1) @ np.ones(g.ho * g.wo, dtype=dt)
        dw = np.ascontiguousarray(_oriented(dw2.reshape(g.f, g.c, g.kh, g.kw), mode))
        del cols, per                       # the columns are not needed for Conv-1: lower the peak
        return (_input_grad(dout, None, w2, g) if need_dx else None), dw, db
    d = _filters_first(dout).reshape(g.f, g.positions)                               # δ as (F, N·Ho·Wo)
    if kind == "tied":
        db = matmul(d, np.ones(g.positions, dtype=dt))
    elif kind == "untied":
        db = (ones_n @ dout.reshape(g.n, -1)).reshape(g.f, g.ho, g.wo)
    else:
        db = None
    if G == 1:
        dw2 = _weight_grad(cols, d)                                       # (F, C·kh·kw)
    else:
        dw2 = matmul(cols.reshape(G, -1, g.positions), d.reshape(G, fg, -1).transpose(0, 2, 1))
        dw2 = dw2.transpose(0, 2, 1)                                      # (G, F/G, Cg·kh·kw)
    dw = _oriented(dw2.reshape(g.f, g.c // G, g.kh, g.kw), mode)
    dw = np.ascontiguousarray(dw)
    del cols
    return (_input_grad(dout, d, w2, g) if need_dx else None), dw, db


def _backward_chunked(dout: np.ndarray, x: np.ndarray, w2: np.ndarray, g: ConvGeometry, mode: str, kind: str,
                      need_dx: bool) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """``conv2d_backward`` when the forward kept x rather than the columns (one group): the columns are built
    again a few samples at a time (``_chunk_samples``), so the backward never holds the whole (C·kh·kw, N·Ho·Wo)
    matrix nor its gradient. Conv-3 adds the chunks' products, dW = Σ_chunks δ_c @ cols_cᵀ (the same sum
    over n, i, j in another order); Conv-1 is ``col2im(Wᵀ @ δ_c)`` per chunk (its samples are independent);
    Conv-2 as in the one-product path."""
    dt = dout.dtype
    step = _chunk_samples(g, x.dtype.itemsize)
    dw2 = np.zeros((g.f, g.taps), dtype=dt)
    dx = np.empty((g.n, g.c, g.h, g.w), dtype=dt) if need_dx else None
    db = np.zeros(g.f, dtype=dt) if kind == "tied" else None
    for lo in range(0, g.n, step):
        hi = min(g.n, lo + step)
        gc = g._replace(n=hi - lo)
        d = _filters_first(dout[lo:hi]).reshape(g.f, gc.positions)                 # δ_c as (F, n_c·Ho·Wo)
        cols = im2col(x[lo:hi], gc)
        dw2 += _weight_grad(cols, d)
        del cols
        if db is not None:
            db += matmul(d, np.ones(gc.positions, dtype=dt))
        if need_dx:
            dx[lo:hi] = _input_grad(dout[lo:hi], d, w2, gc)
    if kind == "untied":
        db = (np.ones(g.n, dtype=dt) @ dout.reshape(g.n, -1)).reshape(g.f, g.ho, g.wo)
    dw = np.ascontiguousarray(_oriented(dw2.reshape(g.f, g.c, g.kh, g.kw), mode))
    return dx, dw, db


WIDE_WEIGHT = 1 << 16   # F·C·kh·kw from which Conv-3 is computed as δ @ colsᵀ (see _weight_grad)


def _weight_grad(cols: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Conv-3, dW = δ colsᵀ as (F, C·kh·kw), for δ (F, P) and cols (C·kh·kw, P). A wide weight (at least
    ``WIDE_WEIGHT`` entries) is written in place by ``δ @ colsᵀ``; a thin one as ``(cols @ δᵀ)ᵀ``, a transposed
    view of a small result. Measured on a 2-vCPU Xeon (OpenBLAS / MKL): yolov3-tiny's 512→1024 layer at 320,
    batch 8, 57.6 / 55.8 ms with the transposing copy the other order needs, 29.5 / 23.1 ms written in place;
    its 3→16 layer 14.7 / 8.8 ms as a transposed view against 24.8 / 11.6 ms in place."""
    if d.shape[0] * cols.shape[0] >= WIDE_WEIGHT:
        return matmul(d, cols.T)
    return matmul(cols, d.T).T


def _filters_first(dout: np.ndarray, width: Optional[int] = None) -> np.ndarray:
    """δ (N, F, Ho, Wo) copied as (F, N, Ho, width), zeros in the columns beyond Wo (width ≥ Wo, default Wo);
    the copy split over the batch on the NumPy path (``_split``)."""
    n, f, ho, wo = dout.shape
    width = wo if width is None else width
    out = (np.empty if width == wo else np.zeros)((f, n, ho, width), dtype=dout.dtype)
    _split.map_batch(lambda lo, hi: np.copyto(out[:, lo:hi, :, :wo], dout[lo:hi].transpose(1, 0, 2, 3)),
                     n, out.size)
    return out


def _input_grad(dout: np.ndarray, d: Optional[np.ndarray], w2: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Conv-1 as ``col2im(Wᵀ @ δ)``; ``d`` is δ as (F, N·Ho·Wo) when the caller already has it.

    NumPy path, stride 1: δ is laid out with rows as wide as the padded input (zeros beyond Wo), so every
    kernel tap is a flat shift and col2im adds long contiguous runs (``col2im_wide``) instead of rows of
    Wo values; the product grows by Wp/Wo (measured: LeNet's second layer 1.5 → 0.55 ms for col2im).
    """
    G, fg = g.groups, g.f // g.groups
    if g.sh == 1 and g.sw == 1 and not _numba.enabled():
        dw_ = _filters_first(dout, g.w + g.pl + g.pr)
        dcols = matmul(w2.transpose(0, 2, 1), dw_.reshape(G, fg, -1))        # (G, Cg·kh·kw, N·Ho·Wp)
        return col2im_wide(dcols.reshape(g.taps, -1), g)
    if d is None:
        d = _filters_first(dout).reshape(g.f, g.positions)
    if G == 1:
        dcols = matmul(w2[0].T, d)
    else:
        dcols = matmul(w2.transpose(0, 2, 1), d.reshape(G, fg, -1))
    return col2im(dcols.reshape(g.taps, g.positions), g)


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
    _check_mode(mode)
    g = conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)
    kind = _bias_kind(b, g)
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
    """1-D convolution, x (N, C, L), w (F, C/groups, k): the 2-D kernel on (N, C, 1, L).
    ``padding``: int or (left, right). Untied bias: b (F, L_out)."""
    if x.ndim != 3 or w.ndim != 3:
        raise ShapeError(f"conv1d: expected input (N, C, L) and weight (F, C/groups, k), got {x.shape} and {w.shape}")
    s, p, d = _as2d(stride, padding, dilation)
    b2 = b[:, None, :] if b is not None and b.ndim == 2 else b
    out, cache = conv2d_forward(x[:, :, None, :], w[:, :, None, :], b2, s, p, d, groups, mode)
    return out[:, :, 0, :], cache


def conv1d_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """(dx (N, C, L), dw (F, C/groups, k), db) through ``conv2d_backward``."""
    dx, dw, db = conv2d_backward(dout[:, :, None, :], cache, need_dx)
    if db is not None and db.ndim == 3:
        db = db[:, 0, :]
    return (None if dx is None else dx[:, :, 0, :]), dw[:, :, 0, :], db
