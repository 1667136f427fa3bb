"""Convolution geometry and the two copies around a convolution's one matrix product (docs/conv.md).

``im2col`` lays the input out as a (C·kh·kw, N·Ho·Wo) matrix, one row per kernel tap and one column per
output position::

    cols[c, a, b, n, i, j] = x[n, c, i·s_h + a·d_h − p_top, j·s_w + b·d_w − p_left]   (0 outside x)

so the Conv forward pass (docs/equations.md §3) is ``W (F, C·kh·kw) @ cols``. ``col2im`` is its adjoint: it adds
every column entry back onto the input pixel it was copied from (the scatter half of Conv-1).

These are the references: one NumPy pass over the whole batch each. ``im2col_rows`` and ``col2im_rows`` compute
the samples ``lo:hi`` of it, so that a variant that runs slices of the batch at once (``deltaprop.fast``) does
the same arithmetic; the numba loops there give the same numbers too.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import dispatch
from ..errors import ShapeError

IntPair = Union[int, Sequence[int]]


class ConvGeometry(NamedTuple):
    """Every size of one 2-D convolution. Padding is (top, bottom, left, right)."""
    n: int
    c: int
    h: int
    w: int
    f: int
    groups: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dh: int
    dw: int
    ho: int
    wo: int

    @property
    def taps(self) -> int:
        """Rows of the column matrix: C·kh·kw."""
        return self.c * self.kh * self.kw

    @property
    def positions(self) -> int:
        """Columns of the column matrix: N·Ho·Wo."""
        return self.n * self.ho * self.wo


def pair(v: IntPair, name: str) -> Tuple[int, int]:
    """An int or a pair of ints as a pair (PyTorch's ``_pair``)."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(u) for u in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t


def padding4(p: Union[int, Sequence[int]]) -> Tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right) from an int, a pair (rows, cols) or a 4-tuple."""
    if isinstance(p, (int, np.integer)):
        return (int(p),) * 4
    t = tuple(int(u) for u in p)
    if len(t) == 2:
        return t[0], t[0], t[1], t[1]
    if len(t) == 4:
        return t
    raise ValueError(f"padding must be an int, a pair or (top, bottom, left, right), got {p!r}")


def conv_geometry(x_shape: Tuple[int, ...], w_shape: Tuple[int, ...], stride: IntPair = 1,
                  padding: Union[int, Sequence[int]] = 0, dilation: IntPair = 1, groups: int = 1) -> ConvGeometry:
    """Check the shapes of a 2-D convolution and return its geometry; errors name what does not fit."""
    if len(x_shape) != 4:
        raise ShapeError(f"conv2d: input must be (N, C, H, W), got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ShapeError(f"conv2d: weight must be (out_channels, in_channels/groups, kh, kw), got {tuple(w_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    f, cg, kh, kw = (int(s) for s in w_shape)
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    pt, pb, pl, pr = padding4(padding)
    groups = int(groups)
    if min(sh, sw, dh, dw, groups, kh, kw) < 1 or min(pt, pb, pl, pr) < 0:
        raise ValueError(f"conv2d: stride, dilation, groups and kernel must be ≥ 1 and padding ≥ 0, got "
                         f"stride={(sh, sw)}, dilation={(dh, dw)}, groups={groups}, kernel={(kh, kw)}, "
                         f"padding={(pt, pb, pl, pr)}")
    if cg * groups != c:
        raise ShapeError(f"conv2d: expected input with {cg * groups} channels (weight {tuple(w_shape)}, "
                         f"groups={groups}), got {c} channels (input shape {tuple(x_shape)})")
    if f % groups:
        raise ShapeError(f"conv2d: groups={groups} must divide out_channels={f}")
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = h + pt + pb, w + pl + pr
    if hp < ekh or wp < ekw:
        raise ShapeError(f"conv2d: input {h}×{w} (padded {hp}×{wp}) is smaller than the "
                         f"{'dilated ' if max(dh, dw) > 1 else ''}kernel {ekh}×{ekw}")
    return ConvGeometry(n, c, h, w, f, groups, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw,
                        (hp - ekh) // sh + 1, (wp - ekw) // sw + 1)


def zero_padded(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """x (n, C, H, W) with g's zero padding around each map (one copy), or x itself without padding."""
    if not (g.pt or g.pb or g.pl or g.pr):
        return x
    xp = np.zeros((x.shape[0], g.c, g.h + g.pt + g.pb, g.w + g.pl + g.pr), dtype=x.dtype)
    xp[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x
    return xp


def tap_range(k_off: int, pad: int, size: int, stride: int, out: int) -> Tuple[int, int, int]:
    """Output indices i0..i1 (exclusive) whose input index i·stride + k_off − pad lies in [0, size);
    returns (i0, i1, first input index)."""
    start = pad - k_off
    i0 = max(0, -(-start // stride))
    i1 = min(out, (size - 1 + start) // stride + 1) if size - 1 + start >= 0 else 0
    return i0, max(i0, i1), i0 * stride - start


def column_blocks(cols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The (C·kh·kw, N·Ho·Wo) column matrix as its (C, kh, kw, N, Ho, Wo) view."""
    return cols.reshape(g.c, g.kh, g.kw, g.n, g.ho, g.wo)


@dispatch.op("im2col")
def im2col(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The (C·kh·kw, N·Ho·Wo) column matrix of ``x`` (layout in the module docstring): Conv forward (§3) is one
    matrix product with it."""
    cols = np.empty((g.c, g.kh, g.kw, g.n, g.ho, g.wo), dtype=x.dtype)
    im2col_rows(x, g, cols, 0, g.n)
    return cols.reshape(g.taps, g.positions)


def im2col_rows(x: np.ndarray, g: ConvGeometry, cols: np.ndarray, lo: int, hi: int) -> None:
    """The columns of samples lo:hi into ``cols`` (C, kh, kw, N, Ho, Wo): a strided window view of the padded
    input, copied once in the order the matrix product reads it (rows = taps, columns = positions)."""
    xp = zero_padded(x[lo:hi], g)
    win = sliding_window_view(xp, (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::g.sh, ::g.sw, ::g.dh, ::g.dw]          # (n, C, Ho, Wo, kh, kw)
    np.copyto(cols[:, :, :, lo:hi], win.transpose(1, 4, 5, 0, 2, 3))


@dispatch.op("col2im")
def col2im(dcols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Adjoint of ``im2col``: dx[n, c, y, x] = Σ of the column entries copied from (n, c, y, x) (Conv-1's scatter)."""
    dx = np.zeros((g.n, g.c, g.h, g.w), dtype=dcols.dtype)
    col2im_rows(column_blocks(dcols, g), g, dx, 0, g.n)
    return dx


def col2im_rows(d: np.ndarray, g: ConvGeometry, dx: np.ndarray, lo: int, hi: int) -> None:
    """Adds the columns of samples lo:hi (``d`` is the whole (C, kh, kw, N, Ho, Wo) block) into their input
    gradient ``dx`` (N, C, H, W): for each tap (a, b) one strided slice addition, taps in order."""
    for a in range(g.kh):
        i0, i1, y0 = tap_range(a * g.dh, g.pt, g.h, g.sh, g.ho)
        if i1 <= i0:
            continue
        y1 = y0 + (i1 - i0 - 1) * g.sh + 1
        for b in range(g.kw):
            j0, j1, x0 = tap_range(b * g.dw, g.pl, g.w, g.sw, g.wo)
            if j1 <= j0:
                continue
            x1 = x0 + (j1 - j0 - 1) * g.sw + 1
            dx[lo:hi, :, y0:y1:g.sh, x0:x1:g.sw] += d[:, a, b, lo:hi, i0:i1, j0:j1].transpose(1, 0, 2, 3)
