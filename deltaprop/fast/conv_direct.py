"""Direct convolution for layers with few input taps on large maps (numba only), docs/equations.md §3 forward.

``z[n,f,i,j] = Σ_c Σ_{a,b} w[f,c,a,b] · x[n, c, i + a − p_top, j + b − p_left]`` (stride 1, no dilation, one
group), computed as it is written: for each output row, every tap adds ``w[f,c,a,b]`` times one shifted input
row into the output row (a contiguous, vectorised loop), the columns that would read padding skipped. Where
C·kh·kw is small (yolov3-tiny's first two layers: 27 and 144 taps on 416² and 208² maps) the im2col product
``W (F, C·kh·kw) @ cols`` is bound by memory (the column matrix is kh·kw times the input and the product has a
short inner dimension); the direct loops read each input row from cache for all filters and write no columns.
The parallel loop runs over (sample, output row) pairs: disjoint writes. Same function as ``conv2d_forward``
(sums in another order).

3×3 kernels take ``_direct_3x3``: two filters at a time and all nine taps of an output in one expression,
over a zero-padded copy of the input (no bounds tests), which loads each input value once for both filters and
stores each output row once per channel. Other sizes take ``_direct_rows``, one tap at a time.

Registered as the variant ``conv2d/direct loops`` for calls that keep x rather than the columns
(``keep_cols=False``, a cfg network's layers: the backward builds the columns from x, as ``conv_chunked`` and
``conv_products`` do). Whether the loops beat the product depends on the CPU and the BLAS library. On a 2-vCPU AMD
EPYC with OpenBLAS, ``_direct_rows`` ran yolov3-tiny's layers 0 and 2 2.5× and 1.3× faster. On a 2-vCPU Intel Xeon
(AVX-512) it was 2–6× slower with either library. ``_direct_3x3`` there runs layer 0 (3→16) 1.2–1.9× faster than
im2col and the product, and layer 2 (16→32) about as fast. So the largest tap count they serve is this machine's
choice, made outside any kernel: the runtime measures it (``deltaprop.tune()``) and calls ``set_max_taps``; without
``tune()`` the first convolution the loops could serve reads the cached choice (never measuring); nothing measured:
the loops are not used. ``DELTAPROP_CONV_DIRECT`` = ``on`` (up to ``MAX_TAPS``) or ``off`` overrides it. The choice is the variant's switch in ``dispatch`` (``max_taps() == 0``: off),
so ``deltaprop.dispatch.disabled_variants()`` names the loops where this machine does not use them.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .. import dispatch
from ..errors import ConfigError
from ..functional import conv as C
from ..functional.conv import ConvCache
from ..functional.im2col import ConvGeometry, zero_padded
from ..runtime import jit as _numba
from ..runtime import settings as _env
from ..runtime.jit import prange
from . import conv_chunked, conv_products

KEY = "conv2d/direct loops"
MAX_TAPS = 160           # C·kh·kw at most this many (and at most ``max_taps()``) ...
MIN_POSITIONS = 64 * 64  # ... on maps of at least this many output positions: the direct loops
SETTINGS = ("auto", "on", "off")   # the values of DELTAPROP_CONV_DIRECT
KERNELS = "rows, 3x3 two filters"  # what the loops are: part of the calibration's cache key (a change re-measures)
_max_taps: Optional[int] = None    # the choice made with ``set_max_taps``; None: DELTAPROP_CONV_DIRECT's
_limit = MAX_TAPS                  # the largest tap count served while the variant is on
_bad_setting: Optional[ConfigError] = None   # DELTAPROP_CONV_DIRECT's error, raised when the loops are asked for
_pending = False                   # auto, nothing chosen yet: the first call the loops could serve reads the cache


def _from_setting() -> int:
    """``DELTAPROP_CONV_DIRECT``: ``on`` serves up to ``MAX_TAPS`` taps; ``off``, and ``auto`` while nothing was
    measured, none. A bad value raises ConfigError naming the variable."""
    return MAX_TAPS if _env.env_choice("DELTAPROP_CONV_DIRECT", "auto", SETTINGS) == "on" else 0


def set_max_taps(n: Optional[int]) -> None:
    """Serve layers of at most ``n`` taps by the direct loops (0: none, the variant switched off): the choice the
    runtime makes from its measurement where ``DELTAPROP_CONV_DIRECT`` is ``auto`` (``on`` and ``off`` are the
    user's). None: back to ``DELTAPROP_CONV_DIRECT`` (read again now; a bad value raises ConfigError); under
    ``auto`` the choice is then pending: the first call the loops could serve reads this machine's cached choice
    (``_resolve``), never measuring."""
    global _max_taps, _limit, _bad_setting, _pending
    taps = _from_setting() if n is None else max(0, int(n))
    _max_taps, _bad_setting = (None if n is None else taps), None
    _pending = n is None and _env.env_choice("DELTAPROP_CONV_DIRECT", "auto", SETTINGS) == "auto"
    if taps:
        _limit = min(taps, MAX_TAPS)
    dispatch.set_enabled(taps > 0 or _pending, KEY)


def _resolve() -> None:
    """Under ``auto`` with nothing chosen yet: put this machine's cached choice in use (``fast/tune_conv_direct``
    through the runtime's tunables: a cache read, no measurement; 0 taps where nothing was measured)."""
    global _pending
    if _pending:
        _pending = False
        from ..runtime import tunables
        if tunables.choose("direct_conv", measure=False) is None:
            set_max_taps(0)


def _setting_at_import() -> None:
    """``set_max_taps(None)`` when the package is imported. A bad DELTAPROP_CONV_DIRECT is raised where the loops
    are first asked for (``max_taps``, or a convolution they could serve), so that the command line reports it as
    a user's mistake rather than failing at import."""
    global _bad_setting
    try:
        set_max_taps(None)
    except ConfigError as exc:
        _bad_setting = exc
        dispatch.set_enabled(True, KEY)     # the variant is asked, and raises


def max_taps() -> int:
    """The largest C·kh·kw the direct loops serve now (0: none). Never measures (a pending ``auto`` choice is read
    from the cache: ``_resolve``)."""
    if _bad_setting is not None:
        raise _bad_setting
    _resolve()
    return _limit if KEY not in dispatch.disabled_variants() else 0


def eligible(g: ConvGeometry) -> bool:
    """The geometry the loops handle, whatever the machine: stride 1, no dilation, one group, at most
    ``MAX_TAPS`` taps, at least ``MIN_POSITIONS`` output positions."""
    return (g.groups == 1 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1
            and g.taps <= MAX_TAPS and g.ho * g.wo >= MIN_POSITIONS)


def applies(g: ConvGeometry) -> bool:
    """Whether a convolution that keeps x runs the direct loops here: numba on, ``eligible`` and within this
    machine's ``max_taps``."""
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


@_numba.jit(parallel=True)
def _direct_3x3(xp, w, out):
    """``_direct_rows`` for 3×3 kernels on the zero-padded input ``xp`` (no bounds to test): two filters at a
    time, each output cell the sum of its nine taps in one expression, added to the row once per channel. The
    nine input values are loaded once for both filters and the 18 weights sit in registers. That turns the
    loop from store-bound (``_direct_rows``: one load and one store of the output per multiply-add) into
    load-bound: 1.8× faster than im2col and OpenBLAS's product for 3→16 channels on a Xeon, 1.1–1.2× for
    16→32, slower from 32 channels on (the runtime's measurement decides: ``set_max_taps``)."""
    n_, c_ = xp.shape[0], xp.shape[1]
    f_ = w.shape[0]
    ho, wo = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for t in prange(n_ * ho):
        n = t // ho
        i = t - n * ho
        for f in range(0, f_ - 1, 2):
            ra = out[n, f, i]
            rb = out[n, f + 1, i]
            for j in range(wo):
                ra[j] = zero
                rb[j] = zero
            for c in range(c_):
                a0, a1, a2 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                a3, a4, a5 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                a6, a7, a8 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                b0, b1, b2 = w[f + 1, c, 0, 0], w[f + 1, c, 0, 1], w[f + 1, c, 0, 2]
                b3, b4, b5 = w[f + 1, c, 1, 0], w[f + 1, c, 1, 1], w[f + 1, c, 1, 2]
                b6, b7, b8 = w[f + 1, c, 2, 0], w[f + 1, c, 2, 1], w[f + 1, c, 2, 2]
                r0 = xp[n, c, i]
                r1 = xp[n, c, i + 1]
                r2 = xp[n, c, i + 2]
                for j in range(wo):
                    x0, x1, x2 = r0[j], r0[j + 1], r0[j + 2]
                    x3, x4, x5 = r1[j], r1[j + 1], r1[j + 2]
                    x6, x7, x8 = r2[j], r2[j + 1], r2[j + 2]
                    ra[j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4 + a5 * x5 + a6 * x6 + a7 * x7 + a8 * x8
                    rb[j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4 + b5 * x5 + b6 * x6 + b7 * x7 + b8 * x8
        if f_ % 2 == 1:                     # the last filter of an odd count alone
            f = f_ - 1
            ra = out[n, f, i]
            for j in range(wo):
                ra[j] = zero
            for c in range(c_):
                a0, a1, a2 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                a3, a4, a5 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                a6, a7, a8 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                r0 = xp[n, c, i]
                r1 = xp[n, c, i + 1]
                r2 = xp[n, c, i + 2]
                for j in range(wo):
                    ra[j] += (a0 * r0[j] + a1 * r0[j + 1] + a2 * r0[j + 2] + a3 * r1[j] + a4 * r1[j + 1]
                              + a5 * r1[j + 2] + a6 * r2[j] + a7 * r2[j + 1] + a8 * r2[j + 2])


def conv2d_direct(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The (N, F, Ho, Wo) cross-correlation of x with w (no bias) by the direct loops (``_direct_3x3`` for 3×3
    kernels, ``_direct_rows`` otherwise); ``applies(g)`` must hold."""
    dt = np.result_type(x, w)
    out = np.empty((g.n, g.f, g.ho, g.wo), dtype=dt)
    w = np.ascontiguousarray(w, dtype=dt)
    if g.kh == 3 and g.kw == 3:
        # the padded copy holds C·(H+p)·(W+p) values, small beside the columns it replaces
        xp = np.ascontiguousarray(zero_padded(x.astype(dt, copy=False), g))
        _direct_3x3.compiled(out.size)(xp, w, out)
    else:
        _direct_rows.compiled(out.size)(np.ascontiguousarray(x), w, out, g.pt, g.pl)
    return out


class DirectCache(ConvCache):
    """``conv2d_loops``' cache: the reference's fields with x kept and no columns."""
    __slots__ = ()


def conv2d_loops(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation",
                 keep_cols: bool = False) -> Tuple[np.ndarray, DirectCache]:
    """Conv forward by the direct loops (the kernel turned first in convolution mode), then the bias."""
    g, kind, w2 = C.prepare(x, w, b, stride, padding, dilation, groups, mode)
    out = conv2d_direct(x, C.oriented(w, mode), g)
    C.add_bias(out, b, kind)
    return out, DirectCache(None, w2, g, mode, kind, x)


def loops_backward(dout: np.ndarray, cache: ConvCache, need_dx: bool = True) -> conv_products.Grads:
    """The loops write no columns: the backward builds them from x, a chunk of samples at a time where the
    batch's columns are large (``conv_chunked``), else whole (``conv_products.per_sample_backward``: the loops'
    maps are large, so the per-sample products' backward)."""
    g, x = cache.geometry, cache.x
    if conv_chunked.chunk_samples(g, x.dtype.itemsize) < g.n:
        return conv_chunked.chunked_backward(dout, cache, need_dx)
    return conv_products.per_sample_backward(dout, cache, need_dx)


def _applies(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray] = None, stride=(1, 1), padding=(0, 0),
             dilation=(1, 1), groups: int = 1, mode: str = "cross_correlation", keep_cols: bool = True) -> bool:
    """x kept (``keep_cols=False``), numba on, an ``eligible`` geometry within the taps the loops serve; whether
    this machine uses them is the variant's switch (``set_max_taps``)."""
    if keep_cols or not _numba.enabled():
        return False
    g = conv_products.geometry(x, w, stride, padding, dilation, groups)
    if not eligible(g):
        return False
    if _bad_setting is not None:
        raise _bad_setting
    return g.taps <= max_taps()


def _examples() -> List[dispatch.Example]:
    """The 3×3 loops (odd and even filter counts, asymmetric padding, convolution mode, untied bias) and the
    general rows (a 5×4 kernel), float32 and float64, at most 27 taps (any machine's choice serves them)."""
    rng = np.random.default_rng(8)
    out = []
    for k, (shape, pad, mode, bias, kernel) in enumerate([
            ((2, 3, 66, 64), 1, "cross_correlation", "tied", (5, 3, 3)),
            ((1, 3, 64, 70), (0, 2, 1, 0), "convolution", None, (4, 3, 3)),
            ((2, 2, 67, 66), 0, "cross_correlation", "untied", (4, 3, 3)),
            ((1, 1, 66, 65), (2, 1, 0, 2), "convolution", "tied", (3, 5, 4))]):
        dt = (np.float32, np.float64)[k % 2]
        f = kernel[0]
        g = C.conv_geometry(shape, (f, shape[1]) + kernel[1:], 1, pad)
        x = rng.standard_normal(shape).astype(dt)
        w = rng.standard_normal((f, shape[1]) + kernel[1:]).astype(dt)
        b = {"tied": rng.standard_normal(f), "untied": rng.standard_normal((f, g.ho, g.wo)), None: None}[bias]
        out.append(dispatch.Example((x, w, None if b is None else b.astype(dt)),
                                    dict(padding=pad, mode=mode, keep_cols=False)))
    return out


dispatch.register(dispatch.Variant(
    op="conv2d", name="direct loops", forward=conv2d_loops, applies=_applies, backward=loops_backward,
    caches=(DirectCache,), priority=30, examples=_examples,
    # the loops sum each output's taps in another order, and a thin layer's backward sums Conv-3 per sample: in
    # float32, sums of ~8·10³ products of unit normals (entries up to ~2·10²) differ by up to ~10⁻⁴
    exact=False, rtol=1e-5, atol=1e-3,
    mirrors="functional.conv.conv2d_forward",
    doc="few taps on a large map, x kept: the convolution as direct numba loops, no columns (this machine's choice)"))
_setting_at_import()
