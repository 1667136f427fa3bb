"""The convolution's NumPy passes split over the batch (``split.map_batch``): the column copy (``im2col``), its
adjoint (``col2im``), the output's NCHW copy with the bias (``conv2d_output``) and δ's copy in the products'
layout (``conv2d_filters_first``). Each slice runs the reference's own function for its rows (``*_rows``), so the
numbers are the reference's bit for bit; ``split.ranges`` decides at run time whether a pass is really split
(never with numba, whose kernels are parallel themselves). Measured on the project's 2-core Xeon, conv-BN net's
NumPy-path training step: 39–44 → 35–37 ms with the convolutions' transposing copies split (docs/conv.md)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .. import dispatch
from ..functional import conv as C
from ..functional import im2col as I
from ..functional.im2col import ConvGeometry
from . import split


def im2col_split(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``im2col``, each slice of the batch copying its own columns."""
    cols = np.empty((g.c, g.kh, g.kw, g.n, g.ho, g.wo), dtype=x.dtype)
    split.map_batch(lambda lo, hi: I.im2col_rows(x, g, cols, lo, hi), g.n, cols.size)
    return cols.reshape(g.taps, g.positions)


def col2im_split(dcols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``col2im``, each slice of the batch adding into its own samples' gradient."""
    d = I.column_blocks(dcols, g)
    dx = np.zeros((g.n, g.c, g.h, g.w), dtype=dcols.dtype)
    split.map_batch(lambda lo, hi: I.col2im_rows(d, g, dx, lo, hi), g.n, d.size)
    return dx


def output_split(z: np.ndarray, b: Optional[np.ndarray], kind: str, g: ConvGeometry) -> np.ndarray:
    """``conv2d_output`` (the NCHW copy and the bias), per slice of the batch."""
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=z.dtype)
    split.map_batch(lambda lo, hi: C.output_rows(z, b, kind, g, out, lo, hi), g.n, out.size)
    return out


def filters_first_split(dout: np.ndarray, width: Optional[int] = None) -> np.ndarray:
    """``conv2d_filters_first`` (δ as (F, N, Ho, width)), per slice of the batch."""
    n, f, ho, wo = dout.shape
    width = wo if width is None else width
    out = (np.empty if width == wo else np.zeros)((f, n, ho, width), dtype=dout.dtype)
    split.map_batch(lambda lo, hi: C.filters_first_rows(dout, out, lo, hi), n, out.size)
    return out


# --- examples for tests/test_variants.py: passes of at least split.SPLIT_MIN elements ---------------------------

def _batch(per_sample: int) -> int:
    """A batch whose pass reaches ``split.SPLIT_MIN`` elements (at least 2 samples)."""
    return max(2, -(-split.SPLIT_MIN // per_sample))


def _geometries() -> List[ConvGeometry]:
    """Stride 1 padded, stride 2 with asymmetric padding, dilation 2 (8 channels, 3×3, 12×13 maps)."""
    out = []
    for stride, padding, dilation in [(1, 1, 1), (2, (0, 1, 2, 0), 1), (1, 2, 2)]:
        g = I.conv_geometry((1, 8, 12, 13), (6, 8, 3, 3), stride, padding, dilation)
        out.append(g._replace(n=_batch(g.taps * g.ho * g.wo)))
    return out


def _im2col_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(0)
    return [dispatch.Example((rng.standard_normal((g.n, g.c, g.h, g.w)).astype(dt), g))
            for g, dt in zip(_geometries(), (np.float32, np.float64, np.float32))]


def _col2im_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(1)
    return [dispatch.Example((rng.standard_normal((g.taps, g.positions)).astype(dt), g))
            for g, dt in zip(_geometries(), (np.float64, np.float32, np.float64))]


def _output_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(2)
    out = []
    for kind, groups, dt in [("tied", 1, np.float32), ("untied", 1, np.float64), ("none", 2, np.float32)]:
        g = I.conv_geometry((1, 4, 10, 10), (6, 4 // groups, 3, 3), 1, 1, 1, groups)
        g = g._replace(n=_batch(g.f * g.ho * g.wo))
        z = rng.standard_normal((groups, g.f // groups, g.positions)).astype(dt)
        b = {"tied": rng.standard_normal(g.f), "untied": rng.standard_normal((g.f, g.ho, g.wo)), "none": None}[kind]
        out.append(dispatch.Example((z, None if b is None else b.astype(dt), kind, g)))
    return out


def _filters_first_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(3)
    n = _batch(6 * 9 * 11)
    return [dispatch.Example((rng.standard_normal((n, 6, 9, 11)).astype(np.float32),)),
            dispatch.Example((rng.standard_normal((n, 6, 9, 11)),), {"width": 14})]


dispatch.register(dispatch.Variant(
    op="im2col", name="batch split", forward=im2col_split,
    applies=lambda x, g: split.splittable(g.n, g.taps * g.positions),
    examples=_im2col_examples, mirrors="functional.im2col.im2col_rows",
    doc="the column copy in slices of the batch on parallel threads (NumPy path)"))
dispatch.register(dispatch.Variant(
    op="col2im", name="batch split", forward=col2im_split,
    applies=lambda dcols, g: split.splittable(g.n, dcols.size),
    examples=_col2im_examples, mirrors="functional.im2col.col2im_rows",
    doc="col2im's strided additions in slices of the batch on parallel threads (NumPy path)"))
dispatch.register(dispatch.Variant(
    op="conv2d_output", name="batch split", forward=output_split,
    applies=lambda z, b, kind, g: split.splittable(g.n, g.f * g.positions),
    examples=_output_examples, mirrors="functional.conv.output_rows",
    doc="the output's NCHW copy and bias in slices of the batch on parallel threads (NumPy path)"))
dispatch.register(dispatch.Variant(
    op="conv2d_filters_first", name="batch split", forward=filters_first_split,
    applies=lambda dout, width=None: split.splittable(
        dout.shape[0], dout.shape[0] * dout.shape[1] * dout.shape[2] * (dout.shape[3] if width is None else width)),
    examples=_filters_first_examples, mirrors="functional.conv.filters_first_rows",
    doc="δ's copy in the products' layout in slices of the batch on parallel threads (NumPy path)"))
