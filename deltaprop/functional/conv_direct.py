"""Direct convolution for layers with few input taps on large maps (numba only), docs/equations.md §3 forward.

``z[n,f,i,j] = Σ_c Σ_{a,b} w[f,c,a,b] · x[n, c, i + a − p_top, j + b − p_left]`` (stride 1, no dilation, one
group), computed as it is written: for each output row, every tap adds ``w[f,c,a,b]`` times one shifted input
row into the output row (a contiguous, vectorised loop), the columns that would read padding skipped. Where
C·kh·kw is small (yolov3-tiny's first two layers: 27 and 144 taps on 416² and 208² maps) the im2col product
``W (F, C·kh·kw) @ cols`` is bound by memory (the column matrix is kh·kw times the input and the product has a
short inner dimension); the direct loops read each input row from cache for all filters and write no columns.
The parallel loop runs over (sample, output row) pairs: disjoint writes. Same function as ``conv2d_forward``
(sums in another order).

Whether the loops beat the product depends on the CPU and the BLAS library: on a 2-vCPU AMD EPYC with OpenBLAS
they ran yolov3-tiny's layers 0 and 2 2.5× and 1.3× faster, on a 2-vCPU Intel Xeon (AVX-512) 2–6× slower with
either library. So the largest tap count they serve (``max_taps``) is measured once per machine and library
(``deltaprop.calibrate.direct_conv_taps``, cached beside the BLAS choice) on first use; ``DELTAPROP_CONV_DIRECT``
= ``auto`` (default), ``on`` (up to ``MAX_TAPS``) or ``off`` overrides it, and ``DELTAPROP_CALIBRATE=0`` means
``off`` under ``auto`` (the test suite: no result depends on the machine).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import _env
from . import _numba
from ._numba import prange
from .im2col import ConvGeometry

MAX_TAPS = 160           # C·kh·kw at most this many (and at most ``max_taps()``) ...
MIN_POSITIONS = 64 * 64  # ... on maps of at least this many output positions: the direct loops
SETTINGS = ("auto", "on", "off")   # the values of DELTAPROP_CONV_DIRECT
_max_taps: Optional[int] = None    # chosen on first use (``max_taps``)


def max_taps() -> int:
    """The largest C·kh·kw the direct loops serve on this machine: ``MAX_TAPS`` (``on``), 0 (``off``), or under
    ``auto`` the calibrated choice (measured on first use, cached per machine and BLAS library)."""
    global _max_taps
    if _max_taps is None:
        setting = _env.env_choice("DELTAPROP_CONV_DIRECT", "auto", SETTINGS)
        if setting == "auto":
            _max_taps = 0                      # the product path while measuring (and should measuring fail)
            from .. import calibrate
            _max_taps = int(calibrate.direct_conv_taps()["max_taps"])
        else:
            _max_taps = MAX_TAPS if setting == "on" else 0
    return _max_taps


def set_max_taps(n: Optional[int]) -> None:
    """Serve layers of at most ``n`` taps by the direct loops (0: none); None chooses again on next use."""
    global _max_taps
    _max_taps = None if n is None else int(n)


def eligible(g: ConvGeometry) -> bool:
    """The geometry the loops handle, whatever the machine: stride 1, no dilation, one group, at most
    ``MAX_TAPS`` taps, at least ``MIN_POSITIONS`` output positions."""
    return (g.groups == 1 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1
            and g.taps <= MAX_TAPS and g.ho * g.wo >= MIN_POSITIONS)


def applies(g: ConvGeometry) -> bool:
    """Whether ``conv2d_forward`` should use the direct loops for this geometry: numba on, ``eligible`` and
    within this machine's ``max_taps``."""
    return _numba.enabled() and eligible(g) and g.taps <= max_taps()


@_numba.jit(parallel=True)
def _direct_rows(x, w, out, pt, pl):
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for t in prange(n_ * ho):
        n = t // ho
        i = t - n * ho
        for f in range(f_):
            row = out[n, f, i]
            for j in range(wo):
                row[j] = zero
            for c in range(c_):
                for a in range(kh):
                    y = i + a - pt
                    if y < 0 or y >= h_:
                        continue
                    xr = x[n, c, y]
                    for b in range(kw):
                        wv = w[f, c, a, b]
                        off = b - pl
                        j0 = max(0, -off)
                        j1 = min(wo, w_ - off)
                        rs = row[j0:j1]
                        xs = xr[j0 + off:j1 + off]
                        for j in range(j1 - j0):
                            rs[j] += wv * xs[j]


def conv2d_direct(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The (N, F, Ho, Wo) cross-correlation of x with w (no bias) by the direct loops; ``applies(g)`` must hold."""
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=np.result_type(x, w))
    _direct_rows.compiled(out.size)(np.ascontiguousarray(x), np.ascontiguousarray(w, dtype=out.dtype), out,
                                    g.pt, g.pl)
    return out
