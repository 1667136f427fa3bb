"""The NumPy path's batch split over threads (``fast/split.py``): when it applies, that it covers the
batch, that errors come back, and that every split kernel gives bit-identical numbers to one pass."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import deltaprop as dp
from conftest import need_mkl
from deltaprop import models, nn, optim
from deltaprop.runtime import blas
from deltaprop.functional import im2col as I, norm_fused as NF, pool as P
from deltaprop.runtime import jit as _numba
from deltaprop.fast import split as _split
from deltaprop.fast.col2im_wide import col2im_wide

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture
def numpy_path():
    before = _numba.enabled()
    _numba.set_enabled(False)
    yield
    _numba.set_enabled(before)


@pytest.fixture
def mkl_numpy_path():
    """The NumPy path (numba off) with its products through MKL, the one set-up in which it splits passes;
    numba and the library in use before are put back after. Skips only where MKL is not installed."""
    numba_before, backend_before = _numba.enabled(), blas.backend()
    _numba.set_enabled(False)
    try:
        blas.set_backend("mkl")
    except blas.BlasError as exc:
        _numba.set_enabled(numba_before)
        need_mkl(exc)
    yield
    _numba.set_enabled(numba_before)
    blas.set_backend(backend_before)


@pytest.fixture
def forced(mkl_numpy_path, monkeypatch):
    """Split every pass (size limit 1) into three slices, with MKL running the products.

    In use a pass splits only after ``blas.release_threads`` handed MKL's GNU OpenMP threads back. Where this
    process's MKL runs on Intel OpenMP instead (its threading layer is fixed when MKL first loads: set by
    MKL_THREADING_LAYER, or chosen so because libgomp was loaded before deltaprop), the release is taken as
    done: it changes which threads are idle, never a number, and the numbers are what these tests check."""
    if not blas.release_threads():
        monkeypatch.setattr(blas, "release_threads", lambda size=0: True)
    monkeypatch.setattr(_split, "SPLIT_MIN", 1)
    monkeypatch.setattr(blas, "max_threads", lambda: 3)   # three slices: an uneven split, two worker threads
    calls = []
    real = _split.run
    monkeypatch.setattr(_split, "run", lambda fn, parts: calls.append(len(parts)) or real(fn, parts))
    return calls


def _whole(fn):
    """fn() with splitting off: the reference numbers."""
    mp = pytest.MonkeyPatch()
    mp.setattr(_split, "ENABLED", False)
    try:
        return fn()
    finally:
        mp.undo()


def _same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=True)
    elif a is not None and not isinstance(a, (str, int, float, bool)):
        return
    else:
        assert a == b


def test_ranges_cover_the_batch_in_order(forced):
    assert _split.ranges(7, 100) == [(0, 3), (3, 5), (5, 7)]
    assert _split.ranges(2, 100) == [(0, 1), (1, 2)]       # never more slices than rows
    assert _split.ranges(1, 100) is None


def test_ranges_decline(numpy_path, monkeypatch):
    monkeypatch.setattr(blas, "release_threads", lambda size=0: True)
    monkeypatch.setattr(blas, "max_threads", lambda: 2)
    assert _split.ranges(8, _split.SPLIT_MIN - 1) is None          # too small
    assert _split.ranges(8, _split.SPLIT_MIN) == [(0, 4), (4, 8)]
    _split.set_enabled(False)
    try:
        assert _split.ranges(8, _split.SPLIT_MIN) is None          # turned off
    finally:
        _split.set_enabled(True)
    monkeypatch.setattr(blas, "max_threads", lambda: 1)
    assert _split.ranges(8, _split.SPLIT_MIN) is None              # one thread
    monkeypatch.setattr(blas, "max_threads", lambda: 2)
    monkeypatch.setattr(blas, "release_threads", lambda size=0: False)
    assert _split.ranges(8, _split.SPLIT_MIN) is None              # products' threads would keep spinning


def test_ranges_decline_with_numba(monkeypatch):
    if _numba.numba_module() is None:
        pytest.skip("numba absent or turned off (DELTAPROP_NUMBA=0)")
    monkeypatch.setattr(blas, "release_threads", lambda size=0: True)
    monkeypatch.setattr(blas, "max_threads", lambda: 2)
    assert _split.ranges(8, 1 << 30) is None                       # numba's kernels are parallel already


def test_run_orders_results_and_raises_after_all_finish(forced):
    seen = []

    def fn(lo, hi):
        seen.append((lo, threading.current_thread().name))
        if lo == 3:
            raise ValueError("slice 3 failed")
        return hi - lo
    assert _split.run(lambda lo, hi: (lo, hi), [(0, 2), (2, 5), (5, 9)]) == [(0, 2), (2, 5), (5, 9)]
    with pytest.raises(ValueError, match="slice 3 failed"):
        _split.run(fn, [(0, 3), (3, 5), (5, 7)])
    assert sorted(lo for lo, _ in seen) == [0, 3, 5]               # the others still ran to the end
    assert any(name.startswith("deltaprop-split") for _, name in seen)


def test_a_split_inside_a_slice_runs_whole(forced):
    inner = _split.map_batch(lambda lo, hi: _split.ranges(8, 100), 4, 100)
    assert inner == [None, None, None]


@pytest.mark.parametrize("k,s,p,ceil", [(2, 2, 0, False), (3, 2, 1, False), (3, 1, 1, False), (2, 2, 0, True)])
def test_max_pool_split_is_bit_identical(forced, k, s, p, ceil):
    x = np.random.default_rng(0).standard_normal((5, 3, 11, 12)).astype(np.float32)
    x[:, :, ::3, ::2] = 0.25                                         # ties: first maximum wins
    ref_out, ref_cache = _whole(lambda: P.max_pool2d_forward(x, k, s, p, ceil_mode=ceil))
    d = np.random.default_rng(1).standard_normal(ref_out.shape).astype(np.float32)
    ref_dx = _whole(lambda: P.max_pool2d_backward(d, ref_cache))
    out, cache = P.max_pool2d_forward(x, k, s, p, ceil_mode=ceil)
    dx = P.max_pool2d_backward(d, cache)
    _same((out, cache.idx, dx), (ref_out, ref_cache.idx, ref_dx))
    assert len(forced) == 2


@pytest.mark.parametrize("kwargs", [dict(stride=1, padding=1), dict(stride=2, padding=(0, 2)),
                                    dict(stride=1, padding=2, dilation=2)])
def test_im2col_col2im_split_is_bit_identical(forced, kwargs):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 9, 10))
    g = I.conv_geometry(x.shape, (4, 3, 3, 3), **kwargs)
    cols = I.im2col(x, g)
    ref_cols = _whole(lambda: I.im2col(x, g))
    d = rng.standard_normal(cols.shape)
    _same((cols, I.col2im(d, g)), (ref_cols, _whole(lambda: I.col2im(d, g))))
    if g.sh == 1 and g.sw == 1:
        wp = g.w + g.pl + g.pr
        wide = np.zeros((g.taps, g.n * g.ho * wp))
        wide.reshape(g.taps, g.n, g.ho, wp)[..., :g.wo] = d.reshape(g.taps, g.n, g.ho, g.wo)
        _same(col2im_wide(wide, g), _whole(lambda: col2im_wide(wide, g)))
    assert forced


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("leaky", 0.1), ("leaky", 1.5), ("linear", 0.0)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("pool", [False, True])
def test_batchnorm_act_split_is_bit_identical(forced, activation, slope, training, pool):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 4, 8, 10)) * 2 + 0.5).astype(np.float32)
    gamma = rng.standard_normal(4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    fwd = NF.batchnorm_act_maxpool2_forward if pool else NF.batchnorm_act_forward
    bwd = NF.batchnorm_act_maxpool2_backward if pool else NF.batchnorm_act_backward

    def run():
        rm, rv = np.full(4, 0.2, np.float32), np.full(4, 1.3, np.float32)
        y, cache = fwd(x, gamma, beta, rm, rv, training, 0.1, 1e-5, activation, slope)
        d = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
        grads = bwd(d, cache, True, True)
        return y, grads, rm, rv
    _same(run(), _whole(run))
    assert len(forced) >= 3


def test_convbn_training_steps_split_are_bit_identical(forced):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, 6)

    def train():
        dp.manual_seed(0)
        model = models.build("convbn", input_size=16)
        loss = nn.CrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            loss(model(x), y)
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
        return [p.data.copy() for p in model.parameters()]
    _same(train(), _whole(train))
    assert len(forced) > 10


@pytest.mark.parametrize("f,groups,stride,bias", [(20, 1, 1, True), (20, 1, 2, False), (8, 2, 1, True),
                                                  (4, 1, 1, True)])
def test_conv2d_split_is_bit_identical(forced, f, groups, stride, bias):
    from deltaprop.functional import conv as C
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 4, 9, 9))
    w = rng.standard_normal((f, 4 // groups, 3, 3))
    b = rng.standard_normal(f) if bias else None

    def run():
        z, cache = C.conv2d_forward(x, w, b, stride=stride, padding=1, groups=groups)
        d = np.random.default_rng(7).standard_normal(z.shape)
        return z, C.conv2d_backward(d, cache)
    _same(run(), _whole(run))
    assert forced
