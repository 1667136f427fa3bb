"""Conv-1 on the NumPy path for stride 1 by wide rows: δ laid out with rows as wide as the padded input.

The reference computes Conv-1 as ``col2im(Wᵀ δ)``, and col2im adds, for each kernel tap, a block of rows of Wo
values each (K² strided slice additions). With stride 1, output (i, j) under tap (a, b) lands on padded pixel
(i + a·d_h, j + b·d_w), flat index (i·Wp + j) + (a·d_h·Wp + b·d_w). So if δ is first copied with rows Wp wide,
zeros in the columns j ≥ Wo, then each tap of ``Wᵀ δ`` is one contiguous run of Ho·Wp values per (c, n) added at
one shifted offset, and the zero columns add nothing where they land. The product grows by Wp/Wo; the additions
become long contiguous runs. Measured on a 2-vCPU Xeon: LeNet's second layer's col2im 1.5 → 0.55 ms.

With numba the parallel col2im loops are faster (``fast/im2col_numba.py``'s Conv-1 variant outranks this one).
The wide product sums the same terms as the reference's; the test holds them within float rounding.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .. import dispatch
from ..dispatch import matmul
from ..functional import conv as C
from ..functional import im2col as I
from ..functional.im2col import ConvGeometry
from . import split


def col2im_wide(dcols: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``col2im`` for stride 1 from columns laid out with rows as wide as the padded input: ``dcols`` is
    (C·kh·kw, N·Ho·Wp), zero in the columns j ≥ Wo. Each tap is one shifted run of Ho·Wp values per (c, n);
    the slices of the batch may run on parallel threads (``split.map_batch``)."""
    if g.sh != 1 or g.sw != 1:
        raise ValueError("col2im_wide needs stride 1")
    hp, wp = g.h + g.pt + g.pb, g.w + g.pl + g.pr
    run = g.ho * wp
    d = dcols.reshape(g.c, g.kh, g.kw, g.n, run)
    flat = np.zeros((g.c, g.n, hp * wp + (g.kw - 1) * g.dw), dtype=dcols.dtype)
    dx = np.empty((g.n, g.c, g.h, g.w), dtype=dcols.dtype)

    def part(lo, hi):
        f = flat[:, lo:hi]
        for a in range(g.kh):
            for b in range(g.kw):
                off = a * g.dh * wp + b * g.dw
                f[:, :, off:off + run] += d[:, a, b, lo:hi]
        dxp = f[:, :, :hp * wp].reshape(g.c, hi - lo, hp, wp)[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w]
        np.copyto(dx[lo:hi], dxp.transpose(1, 0, 2, 3))
    split.map_batch(part, g.n, d.size)
    return dx


def input_grad_wide(dout: np.ndarray, w2: np.ndarray, g: ConvGeometry, d: Optional[np.ndarray] = None) -> np.ndarray:
    """Conv-1 = col2im(Wᵀ δ) with δ in rows Wp wide (``d``, δ in the narrow layout, is not needed)."""
    G, fg = g.groups, g.f // g.groups
    wide = C.filters_first(dout, g.w + g.pl + g.pr)                       # (F, N, Ho, Wp), zeros beyond Wo
    dcols = matmul(w2.transpose(0, 2, 1), wide.reshape(G, fg, -1))       # (G, Cg·kh·kw, N·Ho·Wp)
    return col2im_wide(dcols.reshape(g.taps, -1), g)


def _stride_one(dout: np.ndarray, w2: np.ndarray, g: ConvGeometry, d: Optional[np.ndarray] = None) -> bool:
    return g.sh == 1 and g.sw == 1


def _examples() -> List[dispatch.Example]:
    rng = np.random.default_rng(4)
    out = []
    for k, (xs, ws, p, dil, groups) in enumerate([((2, 3, 9, 10), (4, 3, 3, 3), 1, 1, 1),
                                                   ((1, 4, 11, 9), (6, 2, 3, 2), (0, 1, 2, 0), 1, 2),
                                                   ((2, 2, 10, 13), (3, 2, 3, 3), 2, 2, 1),
                                                   ((3, 3, 8, 8), (5, 3, 5, 5), 0, 1, 1)]):
        g = I.conv_geometry(xs, ws, 1, p, dil, groups)
        dt = (np.float32, np.float64)[k % 2]
        dout = rng.standard_normal((g.n, g.f, g.ho, g.wo)).astype(dt)
        w2 = rng.standard_normal((groups, g.f // groups, g.taps // groups)).astype(dt)
        out.append(dispatch.Example((dout, w2, g)))
    return out


dispatch.register(dispatch.Variant(
    op="conv2d_input_grad", name="wide rows", forward=input_grad_wide, applies=_stride_one,
    exact=False, rtol=1e-5, atol=1e-5, examples=_examples, mirrors="functional.conv.input_grad",
    doc="Conv-1 for stride 1 with δ in rows as wide as the padded input: each tap one contiguous run (NumPy path)"))
