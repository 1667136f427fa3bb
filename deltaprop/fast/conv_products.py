"""Convolutions as products shaped for the layer: one product per sample, and Conv-3 in the orientation that
suits the weight's width (docs/conv.md).

- **Per-sample products** (``conv2d``): the reference multiplies W (F, C·kh·kw) by the whole column matrix, giving
  (F, N·Ho·Wo), and copies that into NCHW. For a layer with one group and few filters (fewer than
  ``THIN_FILTERS`` with at least 64 output positions) or a large map (at least ``PER_SAMPLE_POSITIONS``
  positions), one product per sample, W @ cols_n (C·kh·kw, Ho·Wo), writes each sample's (F, Ho, Wo) output in
  place: no transposing copy. Measured on the project's 2-vCPU Xeon: a single (6, 50176) product (LeNet's first
  layer) ran at a third of the speed; on the conv-BN net's layers per sample was equal or faster than one product
  and the copy (its training step about 3% faster with numba, commit c1f88d0). Its backward: for the thin layers
  Conv-3 per sample too, dW = Σ_n δ_n cols_nᵀ (the (N, F, C·kh·kw) products summed by a product with ones), and
  Conv-2 as Σ_n then Σ_{i,j} by products; for the others the reference's backward.
- **Conv-3 transposed** (``conv2d_weight_grad``): the reference computes dW = δ colsᵀ, written in place. A weight
  with fewer than ``WIDE_WEIGHT`` entries (F·C·kh·kw), and every grouped one, is computed as (cols δᵀ)ᵀ, a
  transposed view of the small result. Measured on a 2-vCPU Xeon (OpenBLAS / MKL): yolov3-tiny's 512→1024 layer
  at 320, batch 8, 29.5 / 23.1 ms in place against 57.6 / 55.8 ms with the transposing copy the other order
  needs; its 3→16 layer 14.7 / 8.8 ms as a transposed view against 24.8 / 11.6 ms in place.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import numpy as np

from .. import dispatch
from ..dispatch import matmul
from ..functional import conv as C
from ..functional import im2col as I
from ..functional.conv import ConvCache
from ..functional.im2col import ConvGeometry

THIN_FILTERS = 16            # fewer filters (one group, ≥ THIN_POSITIONS positions): per-sample products both ways
THIN_POSITIONS = 64
PER_SAMPLE_POSITIONS = 256   # at least this many output positions (one group): per-sample products in the forward
WIDE_WEIGHT = 1 << 16        # F·C·kh·kw from which Conv-3 is δ @ colsᵀ in place (below: (cols @ δᵀ)ᵀ)
Grads = Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]


@functools.lru_cache(maxsize=1024)
def _geometry(x_shape, w_shape, stride, padding, dilation, groups: int) -> ConvGeometry:
    return I.conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)


def geometry(x: np.ndarray, w: np.ndarray, stride, padding, dilation, groups: int) -> ConvGeometry:
    """``conv_geometry`` of a call, remembered for the variants' ``applies`` (each conv call asks several)."""
    try:
        return _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    except TypeError:                       # a list among the arguments: not hashable
        return I.conv_geometry(x.shape, w.shape, stride, padding, dilation, groups)


def thin(g: ConvGeometry) -> bool:
    """Few filters and one group on a map of at least ``THIN_POSITIONS``: per-sample products both ways."""
    return g.groups == 1 and g.f < THIN_FILTERS and g.ho * g.wo >= THIN_POSITIONS


def per_sample_forward(g: ConvGeometry) -> bool:
    """Forward per sample (writes NCHW directly, no transposing copy): thin layers and large maps, one group."""
    return g.groups == 1 and (thin(g) or g.ho * g.wo >= PER_SAMPLE_POSITIONS)


def per_sample(cols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The column matrix as N stacked (C·kh·kw, Ho·Wo) matrices (a strided view, no copy)."""
    return cols.reshape(g.taps, g.n, g.ho * g.wo).transpose(1, 0, 2)


class PerSampleCache(ConvCache):
    """``conv2d_per_sample``'s cache: the reference's fields (``ConvCache``)."""
    __slots__ = ()


def conv2d_per_sample(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1), padding=(0, 0),
                      dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation",
                      keep_cols: bool = True) -> Tuple[np.ndarray, PerSampleCache]:
    """Conv forward with one product per sample, each writing its (F, Ho, Wo) output in place."""
    g, kind, w2 = C.prepare(x, w, b, stride, padding, dilation, groups, mode)
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=np.result_type(x, w))
    cols = I.im2col(x, g)
    matmul(w2[0], per_sample(cols, g), out=out.reshape(g.n, g.f, -1))
    C.add_bias(out, b, kind)
    return out, C.make_cache(cols, w2, g, mode, kind, x, keep_cols, PerSampleCache)


def per_sample_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True) -> Grads:
    """The backward of the per-sample forward. Thin layers: Conv-3 per sample, dW = Σ_n δ_n cols_nᵀ; Conv-2 as
    Σ_n δ (then Σ_{i,j}) by products with ones; Conv-1 by ``input_grad``. Other layers: the reference's."""
    cols, w2, g, mode, kind, x = cache
    if not thin(g):
        return C.conv2d_backward.reference(dout, cache, need_dx)
    C.check_gradient(dout, g)
    if cols is None:
        cols = I.im2col(x, g)
    dt = dout.dtype
    ones_n = np.ones(g.n, dtype=dt)
    dn = np.ascontiguousarray(dout).reshape(g.n, g.f, -1)
    per = matmul(dn, per_sample(cols, g).transpose(0, 2, 1))               # (N, F, C·kh·kw)
    dw2 = matmul(ones_n, per.reshape(g.n, -1)).reshape(g.f, -1)
    db = None
    if kind != "none":
        s = matmul(ones_n, dn.reshape(g.n, -1)).reshape(g.f, g.ho, g.wo)     # Σ_n δ
        db = s if kind == "untied" else matmul(s.reshape(g.f, -1), np.ones(g.ho * g.wo, dtype=dt))
    dw = C.kernel_gradient(dw2, g, mode)
    del cols, per                       # the columns are not needed for Conv-1: lower the peak
    return (C.input_grad(dout, w2, g) if need_dx else None), dw, db


def applies_per_sample(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1),
                       padding=(0, 0), dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation",
                       keep_cols: bool = True) -> bool:
    """Thin layers and large maps with one group (``per_sample_forward``)."""
    return per_sample_forward(geometry(x, w, stride, padding, dilation, groups))


def weight_grad_transposed(cols: np.ndarray, d: np.ndarray, groups: int = 1) -> np.ndarray:
    """Conv-3 as (cols δᵀ)ᵀ per group: a transposed view of the (C/G·kh·kw, F/G) products (one copy when
    grouped)."""
    if groups == 1:
        return matmul(cols, d.T).T
    f, p = d.shape
    per_group = matmul(cols.reshape(groups, -1, p), d.reshape(groups, f // groups, p).transpose(0, 2, 1))
    return per_group.transpose(0, 2, 1).reshape(f, -1)


def applies_transposed(cols: np.ndarray, d: np.ndarray, groups: int = 1) -> bool:
    """Grouped layers, and weights of fewer than ``WIDE_WEIGHT`` entries."""
    return groups > 1 or d.shape[0] * cols.shape[0] < WIDE_WEIGHT


# --- examples for tests/test_variants.py ------------------------------------------------------------------------

def _per_sample_examples() -> List[dispatch.Example]:
    """Thin (6 filters) and large-map layers; float32 and float64, stride, asymmetric padding, dilation,
    convolution mode, untied and no bias, the columns kept or not; the backward with and without dx."""
    rng = np.random.default_rng(5)
    out = []
    for k, (xs, f, kern, stride, pad, dil, mode, bias, keep) in enumerate([
            ((2, 3, 12, 12), 6, (3, 3), 1, 1, 1, "cross_correlation", "tied", True),       # thin
            ((2, 2, 20, 19), 5, (3, 2), 2, (0, 1, 2, 0), 1, "convolution", "untied", False),  # thin, strided
            ((2, 3, 18, 18), 20, (3, 3), 1, 1, 1, "cross_correlation", "tied", True),     # large map
            ((1, 4, 20, 21), 17, (3, 3), 1, 2, 2, "convolution", "none", False),         # large map, dilated
            ((2, 2, 16, 16), 16, (1, 1), 1, 0, 1, "cross_correlation", "untied", True)]):  # 1×1
        dt = (np.float32, np.float64)[k % 2]
        g = I.conv_geometry(xs, (f, xs[1]) + kern, stride, pad, dil)
        x = rng.standard_normal(xs).astype(dt)
        w = rng.standard_normal((f, xs[1]) + kern).astype(dt)
        b = {"tied": rng.standard_normal(f), "untied": rng.standard_normal((f, g.ho, g.wo)), "none": None}[bias]
        out.append(dispatch.Example((x, w, None if b is None else b.astype(dt)),
                                    dict(stride=stride, padding=pad, dilation=dil, mode=mode, keep_cols=keep),
                                    {} if k != 3 else {"need_dx": False}))
    return out


def _transposed_examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(6)
    out = []
    for k, (f, taps, p, groups) in enumerate([(16, 27, 300, 1), (7, 45, 64, 1), (8, 36, 50, 2), (9, 24, 40, 3)]):
        dt = (np.float32, np.float64)[k % 2]
        out.append(dispatch.Example((rng.standard_normal((taps, p)).astype(dt), rng.standard_normal((f, p)).astype(dt)),
                                    {"groups": groups} if groups > 1 else {}))
    return out


dispatch.register(dispatch.Variant(
    op="conv2d", name="per-sample products", forward=conv2d_per_sample, applies=applies_per_sample,
    backward=per_sample_backward, caches=(PerSampleCache,), priority=10,
    # products per sample, and thin layers' Conv-3 summed per sample: the same terms in another order
    exact=False, rtol=1e-5, atol=1e-5, examples=_per_sample_examples, mirrors="functional.conv.conv2d_forward",
    doc="one product per sample (thin layers, large maps): NCHW written in place; thin layers' Conv-3 per sample"))
dispatch.register(dispatch.Variant(
    op="conv2d_weight_grad", name="transposed product", forward=weight_grad_transposed, applies=applies_transposed,
    # the library may block the other orientation's sums differently
    exact=False, rtol=1e-5, atol=1e-5, examples=_transposed_examples, mirrors="functional.conv.weight_grad",
    doc="Conv-3 as (cols δᵀ)ᵀ for weights of fewer than 2^16 entries and grouped layers"))
