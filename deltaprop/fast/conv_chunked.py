"""Convolutions whose columns are not kept (``keep_cols=False``) built a few samples at a time.

A cfg network keeps every layer's output for the backward anyway, so its convolutions keep x in their cache
instead of the column matrix (C·kh·kw times larger than x at stride 1) and the backward builds the columns again.
Where the columns of the whole batch would exceed ``COLS_CHUNK_BYTES``, they are built for ``chunk_samples``
samples at a time into a block of memory that is reused:

- the forward, when it runs per sample (``conv_products.per_sample_forward``): each chunk's columns, then one
  product per sample of it; otherwise the reference's forward (the whole columns, one product);
- the backward (one group, not a thin layer): per chunk, Conv-3 adds the chunk's product,
  dW = Σ_chunks δ_c cols_cᵀ (the same sum over n, i, j in another order), Conv-1 is ``col2im(Wᵀ δ_c)`` for the
  chunk's samples (they are independent), Conv-2 as the reference's. A thin layer's backward builds the whole
  columns (``conv_products.per_sample_backward``).

Memory, not speed, is what this buys: building the backward's columns in 32 MiB chunks took yolov3-tiny's training
step at 416, batch 8, from a peak of 852 to 644 MB (tracemalloc; commit bc06c55). The numbers are the same sums in
another order.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .. import dispatch
from ..dispatch import matmul
from ..functional import conv as C
from ..functional import im2col as I
from ..functional.conv import ConvCache
from ..functional.im2col import ConvGeometry
from . import conv_products as P

COLS_CHUNK_BYTES = 32 << 20  # keep_cols=False: the columns of at most this many bytes of samples at a time


def chunk_samples(g: ConvGeometry, itemsize: int) -> int:
    """Samples whose columns fit in ``COLS_CHUNK_BYTES`` (at least one)."""
    return max(1, min(g.n, COLS_CHUNK_BYTES // max(1, g.taps * g.ho * g.wo * itemsize)))


class ChunkedCache(ConvCache):
    """``conv2d_chunked``'s cache: the reference's fields with x kept and no columns."""
    __slots__ = ()


def conv2d_chunked(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1), padding=(0, 0),
                   dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation",
                   keep_cols: bool = False) -> Tuple[np.ndarray, ChunkedCache]:
    """Conv forward keeping x, the columns built a chunk of samples at a time when the layer runs per sample."""
    if not P.per_sample_forward(P.geometry(x, w, stride, padding, dilation, groups)):
        out, cache = C.conv2d_forward.reference(x, w, b, stride, padding, dilation, groups, mode, keep_cols=False)
        return out, ChunkedCache(*cache)
    g, kind, w2 = C.prepare(x, w, b, stride, padding, dilation, groups, mode)
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=np.result_type(x, w))
    step = chunk_samples(g, x.dtype.itemsize)
    for lo in range(0, g.n, step):
        hi = min(g.n, lo + step)
        gc = g._replace(n=hi - lo)
        matmul(w2[0], P.per_sample(I.im2col(x[lo:hi], gc), gc), out=out[lo:hi].reshape(hi - lo, g.f, -1))
    C.add_bias(out, b, kind)
    return out, ChunkedCache(None, w2, g, mode, kind, x)


def chunked_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True) -> P.Grads:
    """Conv-1, Conv-2, Conv-3 from x, the columns built again a chunk of samples at a time (a thin layer:
    ``conv_products.per_sample_backward``, which builds them whole)."""
    _, w2, g, mode, kind, x = cache
    if P.thin(g):
        return P.per_sample_backward(dout, cache, need_dx)
    C.check_gradient(dout, g)
    dt = dout.dtype
    step = chunk_samples(g, x.dtype.itemsize)
    dw2 = np.zeros((g.f, g.taps), dtype=dt)
    dx = np.empty((g.n, g.c, g.h, g.w), dtype=dt) if need_dx else None
    db = np.zeros(g.f, dtype=dt) if kind == "tied" else None
    for lo in range(0, g.n, step):
        hi = min(g.n, lo + step)
        gc = g._replace(n=hi - lo)
        d = C.filters_first(dout[lo:hi]).reshape(g.f, gc.positions)          # δ_c as (F, n_c·Ho·Wo)
        cols = I.im2col(x[lo:hi], gc)
        dw2 += C.weight_grad(cols, d)
        del cols
        if db is not None:
            db += matmul(d, np.ones(gc.positions, dtype=dt))
        if need_dx:
            dx[lo:hi] = C.input_grad(dout[lo:hi], w2, gc, d)
    if kind == "untied":
        db = C.bias_grad(None, dout, kind)
    return dx, C.kernel_gradient(dw2, g, mode), db


def applies_chunked(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1), padding=(0, 0),
                    dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation", keep_cols: bool = True) -> bool:
    """x kept (``keep_cols=False``), one group, and the whole batch's columns larger than ``COLS_CHUNK_BYTES``."""
    if keep_cols:
        return False
    g = P.geometry(x, w, stride, padding, dilation, groups)
    return g.groups == 1 and chunk_samples(g, x.dtype.itemsize) < g.n


def _examples() -> List[dispatch.Example]:
    """One sample more than ``COLS_CHUNK_BYTES`` holds (so about 32 MiB of columns each): a large map (the forward
    and the backward chunked; float32, stride 2), a thin layer (forward chunked, backward whole; float64,
    convolution mode, untied bias), a 15×15 map with 2048 channels (the reference's forward, the backward chunked;
    no bias) without dx."""
    rng = np.random.default_rng(7)
    out = []
    for k, (c, hw, f, stride, mode, bias, dt) in enumerate([
            (16, 341, 20, 2, "cross_correlation", "tied", np.float32),
            (8, 171, 6, 1, "convolution", "untied", np.float64),
            (2048, 15, 16, 1, "cross_correlation", "none", np.float32)]):
        g = I.conv_geometry((1, c, hw, hw), (f, c, 3, 3), stride, 1)
        n = COLS_CHUNK_BYTES // (g.taps * g.ho * g.wo * np.dtype(dt).itemsize) + 1
        x = rng.standard_normal((n, c, hw, hw)).astype(dt)
        w = rng.standard_normal((f, c, 3, 3)).astype(dt)
        b = {"tied": rng.standard_normal(f), "untied": rng.standard_normal((f, g.ho, g.wo)), "none": None}[bias]
        out.append(dispatch.Example((x, w, None if b is None else b.astype(dt)),
                                    dict(stride=stride, padding=1, mode=mode, keep_cols=False),
                                    {"need_dx": False} if k == 2 else {}))
    return out


dispatch.register(dispatch.Variant(
    op="conv2d", name="chunked columns", forward=conv2d_chunked, applies=applies_chunked,
    backward=chunked_backward, caches=(ChunkedCache,), priority=20, examples=_examples,
    # per-sample products and Conv-3 added chunk by chunk sum in another order: in float32, sums of ~6·10⁴
    # products of unit normals (entries up to ~5·10²) differ by up to ~3·10⁻⁴
    exact=False, rtol=1e-5, atol=1e-3, mirrors="functional.conv.conv2d_forward",
    doc="keep_cols=False and columns over 32 MiB: the columns built a few samples at a time, both ways"))
