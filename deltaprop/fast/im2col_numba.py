"""``im2col`` and ``col2im`` as numba loops (parallel), and Conv-1 through them.

Plain loops with the bounds test inside the innermost loop: measured faster (0.4–0.7 ms vs 1.1–2.8 ms on the
LeNet and conv-BN shapes) than splitting each row into precomputed valid ranges, which numba did not
vectorise. Both copy or add the same values in the same order as the references in ``functional/im2col.py``
(col2im adds each pixel's terms tap by tap, as the reference's strided additions do), so the numbers are equal bit
for bit. They serve whenever numba is on (``runtime.jit``).

Conv-1 (``conv2d_input_grad``) has a variant here too: the reference's ``col2im(Wᵀ δ)`` with these loops. With
numba they beat the NumPy path's wide-row trick (``fast/col2im_wide.py``), which this variant outranks.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .. import dispatch
from ..functional import conv as C
from ..functional import im2col as I
from ..functional.im2col import ConvGeometry
from ..runtime import jit as _numba
from ..runtime.jit import prange


@_numba.jit(parallel=True)
def _im2col_loops(x, cols, kh, kw, sh, sw, pt, pl, dh, dw):
    # one row (c, a, b) of the column matrix per iteration of the parallel loop: disjoint writes
    n_, c_, h_, w_ = x.shape
    ho, wo = cols.shape[4], cols.shape[5]
    for t in prange(c_ * kh * kw):
        c = t // (kh * kw)
        a = (t // kw) % kh
        b = t % kw
        for n in range(n_):
            for i in range(ho):
                y = i * sh + a * dh - pt
                if y < 0 or y >= h_:
                    for j in range(wo):
                        cols[c, a, b, n, i, j] = 0.0
                    continue
                for j in range(wo):
                    xx = j * sw + b * dw - pl
                    if 0 <= xx < w_:
                        cols[c, a, b, n, i, j] = x[n, c, y, xx]
                    else:
                        cols[c, a, b, n, i, j] = 0.0


@_numba.jit(parallel=True)
def _col2im_loops(d, dx, kh, kw, sh, sw, pt, pl, dh, dw):
    # one plane (n, c) of the input gradient per iteration of the parallel loop: disjoint writes, and each
    # pixel's terms added in the order of the serial loops
    n_, c_, h_, w_ = dx.shape
    ho, wo = d.shape[4], d.shape[5]
    for t in prange(n_ * c_):
        n = t // c_
        c = t % c_
        for a in range(kh):
            for i in range(ho):
                y = i * sh + a * dh - pt
                if y < 0 or y >= h_:
                    continue
                for b in range(kw):
                    for j in range(wo):
                        xx = j * sw + b * dw - pl
                        if 0 <= xx < w_:
                            dx[n, c, y, xx] += d[c, a, b, n, i, j]


def im2col_numba(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``im2col`` by the parallel loops."""
    cols = np.empty((g.c, g.kh, g.kw, g.n, g.ho, g.wo), dtype=x.dtype)
    _im2col_loops(np.ascontiguousarray(x), cols, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.dh, g.dw)
    return cols.reshape(g.taps, g.positions)


def col2im_numba(dcols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``col2im`` by the parallel loops."""
    dx = np.zeros((g.n, g.c, g.h, g.w), dtype=dcols.dtype)
    _col2im_loops(I.column_blocks(np.ascontiguousarray(dcols), g), dx, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl,
                  g.dh, g.dw)
    return dx


def input_grad_numba(dout: np.ndarray, w2: np.ndarray, g: ConvGeometry, d: Optional[np.ndarray] = None) -> np.ndarray:
    """Conv-1 as the reference computes it, ``col2im(Wᵀ δ)``, with col2im by the parallel loops."""
    return col2im_numba(C.input_columns(dout, w2, g, d), g)


def _numba_on(*args, **kwargs) -> bool:
    return _numba.enabled()


# --- examples for tests/test_variants.py ------------------------------------------------------------------------

_GEOMETRIES = [  # x shape, w shape, stride, padding, dilation, groups
    ((2, 3, 9, 10), (4, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 11, 9), (6, 2, 3, 2), (2, 1), (0, 1, 2, 0), 1, 2),
    ((2, 2, 10, 13), (3, 2, 3, 3), 1, 2, 2, 1),
    ((3, 3, 8, 8), (5, 3, 1, 1), 3, 0, 1, 1),
]


def _geometries() -> List[ConvGeometry]:
    return [I.conv_geometry(xs, ws, s, p, d, gr) for xs, ws, s, p, d, gr in _GEOMETRIES]


def _dtype(k: int):
    return (np.float32, np.float64)[k % 2]


def _im2col_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(0)
    return [dispatch.Example((rng.standard_normal((g.n, g.c, g.h, g.w)).astype(_dtype(k)), g))
            for k, g in enumerate(_geometries())]


def _col2im_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(1)
    return [dispatch.Example((rng.standard_normal((g.taps, g.positions)).astype(_dtype(k + 1)), g))
            for k, g in enumerate(_geometries())]


def _input_grad_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(2)
    out = []
    for k, g in enumerate(_geometries()):
        dt = _dtype(k)
        dout = rng.standard_normal((g.n, g.f, g.ho, g.wo)).astype(dt)
        w2 = rng.standard_normal((g.groups, g.f // g.groups, g.taps // g.groups)).astype(dt)
        d = C.filters_first(dout).reshape(g.f, g.positions) if k == 2 else None    # with δ given, too
        out.append(dispatch.Example((dout, w2, g), {"d": d} if d is not None else {}))
    return out


dispatch.register(dispatch.Variant(
    op="im2col", name="numba loops", forward=im2col_numba, applies=_numba_on, priority=10,
    examples=_im2col_examples, mirrors="functional.im2col.im2col",
    doc="the column copy as parallel numba loops, one row of the column matrix per iteration"))
dispatch.register(dispatch.Variant(
    op="col2im", name="numba loops", forward=col2im_numba, applies=_numba_on, priority=10,
    examples=_col2im_examples, mirrors="functional.im2col.col2im",
    doc="col2im as parallel numba loops, one (sample, channel) plane per iteration, taps in order"))
dispatch.register(dispatch.Variant(
    op="conv2d_input_grad", name="numba col2im", forward=input_grad_numba, applies=_numba_on, priority=10,
    examples=_input_grad_examples, mirrors="functional.conv.input_grad",
    doc="Conv-1 as col2im(Wᵀ δ) with col2im's numba loops (outranks the NumPy path's wide rows)"))
