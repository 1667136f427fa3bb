"""``conv2d_forward(..., keep_cols=False)``: the cache keeps x instead of the im2col columns, the forward builds
the columns a few samples at a time and the backward builds them again, also in chunks (fast/conv_chunked.py,
``COLS_CHUNK_BYTES``), or the direct loops run (fast/conv_direct.py). Against the one-product path that keeps the columns and against the naive loops
(docs/equations.md §3, Conv-1..3), float64, with the numba kernels on and off; the chunk size is lowered so
that small tensors are split."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from deltaprop.fast import conv_chunked as K
from deltaprop.functional import conv as C

CASES = [  # (x shape, w shape, stride, padding, bias)
    ((4, 3, 8, 7), (16, 3, 3, 3), 1, 1, "tied"),
    ((4, 2, 9, 9), (17, 2, 3, 3), 2, 1, "tied"),
    ((4, 4, 7, 6), (16, 4, 1, 1), 1, 0, None),
    ((4, 3, 6, 7), (16, 3, 3, 3), 1, 1, "untied"),
]


@pytest.mark.parametrize("chunk", [1, 2, 3])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_chunked_columns_match_kept_columns_and_naive(rng, numba_mode, monkeypatch, case, chunk):
    xs, ws, stride, pad, bias = CASES[case]
    x, w = rng.normal(size=xs), rng.normal(size=ws)
    ho = (xs[2] + 2 * pad - ws[2]) // stride + 1
    wo = (xs[3] + 2 * pad - ws[3]) // stride + 1
    b = None if bias is None else rng.normal(size=(ws[0],) if bias == "tied" else (ws[0], ho, wo))
    taps = xs[1] * ws[2] * ws[3]
    monkeypatch.setattr(K, "COLS_CHUNK_BYTES", chunk * taps * ho * wo * 8)     # `chunk` samples of columns
    g = C.conv_geometry(x.shape, w.shape, stride, pad)
    assert K.chunk_samples(g, 8) == chunk < xs[0]                            # the chunked paths are taken
    z_keep, cache_keep = C.conv2d_forward(x, w, b, stride, pad, keep_cols=True)
    z, cache = C.conv2d_forward(x, w, b, stride, pad, keep_cols=False)
    assert cache.cols is None and cache.x is x and isinstance(cache, K.ChunkedCache)
    dout = rng.normal(size=z.shape)
    for need_dx in (True, False):
        got = C.conv2d_backward(dout, cache, need_dx=need_dx)
        keep = C.conv2d_backward(dout, cache_keep, need_dx=need_dx)
        for a, e in zip(got, keep):
            assert (a is None) == (e is None)
            if a is not None:
                assert a.shape == e.shape and rel_err(a, e) < 1e-12
    if chunk != 1:
        return
    zn, cn = C.conv2d_forward_naive(x, w, b, stride, pad)
    dxn, dwn, dbn = C.conv2d_backward_naive(dout, cn)
    dx, dw, db = C.conv2d_backward(dout, cache)
    assert rel_err(z, zn) < 1e-12 and rel_err(z_keep, zn) < 1e-12
    assert rel_err(dx, dxn) < 1e-12 and rel_err(dw, dwn) < 1e-12
    assert (db is None) == (dbn is None) and (db is None or rel_err(db, dbn) < 1e-12)


def test_chunked_float32_stays_float32(rng, monkeypatch):
    x = rng.normal(size=(4, 3, 8, 8)).astype(np.float32)
    w = rng.normal(size=(16, 3, 3, 3)).astype(np.float32)
    monkeypatch.setattr(K, "COLS_CHUNK_BYTES", 27 * 64 * 4)
    z, cache = C.conv2d_forward(x, w, None, 1, 1, keep_cols=False)
    dx, dw, db = C.conv2d_backward(np.ones_like(z), cache)
    assert z.dtype == dx.dtype == dw.dtype == np.float32 and db is None


@pytest.mark.parametrize("shape,pad,mode,bias,kernel", [((2, 3, 66, 64), 1, "cross_correlation", "tied", (5, 3, 3)),
                                                          ((1, 4, 64, 70), (0, 2, 1, 0), "convolution", None, (5, 3, 3)),
                                                          ((2, 2, 67, 66), 0, "cross_correlation", "untied", (4, 3, 3)),
                                                          ((1, 2, 66, 65), (2, 1, 0, 2), "convolution", "tied", (3, 5, 4))])
def test_direct_loops_match_columns(rng, shape, pad, mode, bias, kernel):
    """fast/conv_direct.py (numba, few taps on a large map) against the im2col product, float64: the 3×3
    loops (odd and even filter counts, asymmetric padding) and the general rows (a 5×4 kernel)."""
    pytest.importorskip("numba")
    from deltaprop.runtime import jit as _numba
    from deltaprop.fast import conv_direct
    x, w = rng.normal(size=shape), rng.normal(size=(kernel[0], shape[1], kernel[1], kernel[2]))
    g = C.conv_geometry(x.shape, w.shape, 1, pad)
    f = kernel[0]
    b = None if bias is None else rng.normal(size=(f,) if bias == "tied" else (f, g.ho, g.wo))
    before, taps = _numba.enabled(), conv_direct._max_taps
    try:
        _numba.set_enabled(True)
        conv_direct.set_max_taps(conv_direct.MAX_TAPS)          # the loops on, whatever this machine measured
        assert conv_direct.applies(g)
        z, cache = C.conv2d_forward(x, w, b, 1, pad, mode=mode, keep_cols=False)
        ref, _ = C.conv2d_forward(x, w, b, 1, pad, mode=mode, keep_cols=True)      # the product path
        _numba.set_enabled(False)
        assert not conv_direct.applies(g)
        ref_np, _ = C.conv2d_forward(x, w, b, 1, pad, mode=mode, keep_cols=False)
        _numba.set_enabled(True)
        assert not conv_direct.applies(g._replace(sh=2)) and not conv_direct.applies(g._replace(ho=8, wo=8))
    finally:
        _numba.set_enabled(before)
        conv_direct.set_max_taps(taps)
    assert rel_err(z, ref) < 1e-13 and rel_err(z, ref_np) < 1e-13
    assert cache.cols is None and cache.x is x and isinstance(cache, conv_direct.DirectCache)


def test_direct_3x3_float32(rng):
    """The 3×3 loops in float32 (yolov3-tiny's first layers' case): within float32 rounding of the product,
    and float32 out."""
    pytest.importorskip("numba")
    from deltaprop.fast import conv_direct
    x = rng.normal(size=(2, 3, 64, 72)).astype(np.float32)
    w = rng.normal(size=(7, 3, 3, 3)).astype(np.float32)
    g = C.conv_geometry(x.shape, w.shape, 1, 1)
    z = conv_direct.conv2d_direct(x, w, g)
    ref, _ = C.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 1)
    assert z.dtype == np.float32 and z.shape == ref.shape and rel_err(z, ref) < 1e-6
