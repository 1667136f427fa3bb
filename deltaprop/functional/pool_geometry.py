"""Pooling window geometry (docs/equations.md §4) and the strided views the pooling kernels are built from.

Windows: kernel (kh, kw), stride, dilation (max only), padding as an int, a pair or a 4-tuple
(top, bottom, left, right), and PyTorch's ``ceil_mode`` rule (the last window must start inside the input
or the top/left padding). Darknet's ``[maxpool]`` geometry is ``darknet_maxpool_padding``. Each kernel offset
(a, b) of a window is one strided view of the padded input the size of the output (``window_view``);
``window_sum``/``scatter_sum`` add over them (average and Lp pooling, their backward).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ShapeError

IntOr2 = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


def pair2(v: IntOr2, name: str) -> Tuple[int, int]:
    """(v, v) for an int, the pair itself for a pair of ints (a kernel size, stride or dilation of §4); a
    ValueError naming ``name`` otherwise."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t


def pool_padding(padding: Padding) -> Tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right) from an int, a pair (ph, pw) or a 4-tuple."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        out = (p, p, p, p)
    else:
        t = tuple(int(a) for a in padding)
        if len(t) == 2:
            out = (t[0], t[0], t[1], t[1])
        elif len(t) == 4:
            out = t
        else:
            raise ValueError(f"padding must be an int, a pair or (top, bottom, left, right), got {padding!r}")
    if min(out) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return out


def pool_output_size(size: int, k: int, s: int, pad_lo: int, pad_hi: int, d: int = 1,
                     ceil_mode: bool = False) -> int:
    """PyTorch's rule: ⌊ or ⌈(size + pads − d(k−1) − 1)/s⌉ + 1; in ceil mode the last window must start
    inside the input or the low padding (``(out − 1)·s < size + pad_lo``)."""
    span = size + pad_lo + pad_hi - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pad_lo:
        out -= 1
    return out


def darknet_maxpool_padding(h: int, w: int, size: int, stride: int, padding: int) -> Tuple[int, int, int, int]:
    """Darknet's ``[maxpool]`` geometry (§10, "Darknet maxpool") as (top, bottom, left, right) padding for the kernels.

    Darknet's output is ⌊(w + padding − size)/stride⌋ + 1 and its windows start at −⌊padding/2⌋, so the
    padding is asymmetric (less on the top/left); cells outside the input count as −∞. The bottom/right
    padding returned is exactly what the last window reaches (0 if it stays inside), so the kernels give
    Darknet's output size with ``ceil_mode=False``. yolov3-tiny's layer 11 (13×13, size 2, stride 1,
    padding 1) gives (0, 1, 0, 1) and keeps 13×13.
    """
    if size < 1 or stride < 1 or padding < 0:
        raise ValueError(f"[maxpool]: need size ≥ 1, stride ≥ 1, padding ≥ 0; got size={size}, "
                         f"stride={stride}, padding={padding}")
    lo = padding // 2
    pads = []
    for n in (h, w):
        out = (n + padding - size) // stride + 1
        if out < 1:
            raise ShapeError(f"[maxpool] size={size} padding={padding} does not fit an input of {h}×{w}")
        pads.append(max(0, (out - 1) * stride + size - lo - n))
    return lo, pads[0], lo, pads[1]


class PoolGeometry(NamedTuple):
    """Everything a pooling kernel needs about its windows. ``hp``/``wp`` is the extent of the padded
    input the windows read: rows −pt … hp − pt − 1 (it may stop short of the input's end)."""
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    h: int
    w: int
    ho: int
    wo: int

    @property
    def hp(self) -> int:
        """Rows of the padded input the windows read: (Ho − 1)·sh + (kh − 1)·dh + 1 (§4)."""
        return (self.ho - 1) * self.sh + (self.kh - 1) * self.dh + 1

    @property
    def wp(self) -> int:
        """Columns of the padded input the windows read: (Wo − 1)·sw + (kw − 1)·dw + 1 (§4)."""
        return (self.wo - 1) * self.sw + (self.kw - 1) * self.dw + 1

    @property
    def disjoint(self) -> bool:
        """No two windows share a cell (so the backward can assign instead of add)."""
        return self.sh >= (self.kh - 1) * self.dh + 1 and self.sw >= (self.kw - 1) * self.dw + 1

    @property
    def tiles(self) -> bool:
        """Windows cover every cell of the padded extent exactly once (k == s, no dilation gaps)."""
        return self.sh == self.kh and self.sw == self.kw and self.dh == 1 and self.dw == 1

    @property
    def offsets(self):
        """(a, b, index) for each kernel offset, in row-major window order (the tie rule's order)."""
        return [(a, b, a * self.kw + b) for a in range(self.kh) for b in range(self.kw)]

    @property
    def live_offsets(self):
        """The ``offsets`` that read an input cell in some window, in the same order; the others read
        padding only (−∞ or 0 in every window), so the kernels skip them and a window far larger than its
        input costs what it reads: Darknet's ``[maxpool] stride=255`` on 14×12 has 65,025 offsets, 168 live."""
        rows = _live_taps(self.kh, self.sh, self.dh, self.pt, self.h, self.ho)
        cols = _live_taps(self.kw, self.sw, self.dw, self.pl, self.w, self.wo)
        return [(a, b, a * self.kw + b) for a in rows for b in cols]


def _live_taps(k: int, s: int, d: int, lo: int, n: int, out: int) -> list:
    """Along one axis, the kernel taps a whose cells a·d − lo + s·i (i = 0 … out − 1) include an input cell
    (0 ≤ · < n): the first i with a non-negative cell must exist and its cell be inside the input."""
    taps = []
    for a in range(k):
        r = a * d - lo
        i = 0 if r >= 0 else (-r + s - 1) // s
        if i < out and r + s * i < n:
            taps.append(a)
    return taps


def pool_geometry(shape: Tuple[int, ...], kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                  padding: Padding = 0, dilation: IntOr2 = 1, ceil_mode: bool = False,
                  name: str = "pool2d") -> PoolGeometry:
    """Check an NCHW input shape against the window parameters and return the geometry (errors named)."""
    if len(shape) != 4:
        raise ShapeError(f"{name}: expected an (N, C, H, W) input, got shape {tuple(shape)}")
    kh, kw = pair2(kernel_size, "kernel_size")
    sh, sw = pair2(kernel_size if stride is None else stride, "stride")
    dh, dw = pair2(dilation, "dilation")
    pt, pb, pl, pr = pool_padding(padding)
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise ValueError(f"{name}: kernel_size, stride and dilation must be ≥ 1, got kernel=({kh}, {kw}), "
                         f"stride=({sh}, {sw}), dilation=({dh}, {dw})")
    h, w = int(shape[2]), int(shape[3])
    ho = pool_output_size(h, kh, sh, pt, pb, dh, ceil_mode)
    wo = pool_output_size(w, kw, sw, pl, pr, dw, ceil_mode)
    if ho < 1 or wo < 1 or h < 1 or w < 1:
        raise ShapeError(f"{name}: input {h}×{w} (shape {tuple(shape)}) is smaller than the kernel "
                         f"{kh}×{kw} (dilation {dh}×{dw}, padding t{pt} b{pb} l{pl} r{pr}): output would be "
                         f"{ho}×{wo}")
    g = PoolGeometry(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, h, w, ho, wo)
    # Every window must hold at least one input cell (PyTorch enforces it as padding ≤ kernel/2).
    if (g.kh - 1) * dh < pt or (g.kw - 1) * dw < pl or (ho - 1) * sh - pt > h - 1 or (wo - 1) * sw - pl > w - 1:
        raise ShapeError(f"{name}: padding (t{pt} b{pb} l{pl} r{pr}) is too large for kernel {kh}×{kw}: "
                         f"some window would hold padding only")
    return g


def padded(x: np.ndarray, g: PoolGeometry, fill: float) -> np.ndarray:
    """The input rows −pt … hp − pt − 1 and columns likewise, ``fill`` outside: a view when no cell
    outside the input is read, else one copy."""
    n, c = x.shape[:2]
    if g.pt == 0 and g.pl == 0 and g.hp <= g.h and g.wp <= g.w:
        return x[:, :, :g.hp, :g.wp]
    xp = np.full((n, c, g.hp, g.wp), fill, dtype=x.dtype)
    rows = min(g.h, g.hp - g.pt)
    cols = min(g.w, g.wp - g.pl)
    xp[:, :, g.pt:g.pt + rows, g.pl:g.pl + cols] = x[:, :, :rows, :cols]
    return xp


def unpad(dxp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """The input-gradient from the padded extent's gradient (cells never read get 0)."""
    n, c = dxp.shape[:2]
    if g.pt == 0 and g.pl == 0 and g.hp == g.h and g.wp == g.w:
        return dxp
    dx = np.zeros((n, c, g.h, g.w), dtype=dxp.dtype)
    rows = min(g.h, g.hp - g.pt)
    cols = min(g.w, g.wp - g.pl)
    dx[:, :, :rows, :cols] = dxp[:, :, g.pt:g.pt + rows, g.pl:g.pl + cols]
    return dx


def window_view(xp: np.ndarray, g: PoolGeometry, a: int, b: int) -> np.ndarray:
    """The cells at kernel offset (a, b) of every window: a strided view of output size."""
    r0, c0 = a * g.dh, b * g.dw
    return xp[:, :, r0:r0 + g.sh * (g.ho - 1) + 1:g.sh, c0:c0 + g.sw * (g.wo - 1) + 1:g.sw]


def window_sum(xp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """Σ over each window of the padded input, added in row-major window order."""
    views = [window_view(xp, g, a, b) for a, b, _ in g.live_offsets]  # the others add zeros only
    s = views[0].copy()
    for v in views[1:]:
        s += v
    return s


def scatter_sum(d: np.ndarray, g: PoolGeometry, shape: Tuple[int, ...]) -> np.ndarray:
    """Adjoint of ``window_sum``: every cell of a window receives the window's ``d``; overlaps add up."""
    n, c = shape[:2]
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc((n, c, g.hp, g.wp), dtype=d.dtype)
    for a, b, _ in g.live_offsets:  # the others reach padding only, which unpad drops
        view = window_view(dxp, g, a, b)
        if g.disjoint:
            view[...] = d
        else:
            view += d
    return unpad(dxp, g)


def index_dtype(g: PoolGeometry) -> type:
    """The dtype of max pooling's arg-max indices (row-major within the window, §4): uint8 up to 256 cells,
    else int32."""
    return np.uint8 if g.kh * g.kw <= 256 else np.int32
