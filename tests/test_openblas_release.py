"""Stopping NumPy's OpenBLAS's spinning threads (``blas_thread_shutdown_``) so that deltaprop's own threads get the
cores; the next product starts them again and computes the same numbers.

- numba path (``blas.enable_openblas_release``): after a product with many outputs that ran long, since the
  numba kernels over its output follow;
- NumPy path (``blas.release_threads``): before a large pass is split over threads (``functional/_split.py``)."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop import blas
from deltaprop.functional import _numba, _split


@pytest.fixture
def numpy_blas(monkeypatch):
    was = blas.backend()
    blas.set_backend("numpy")
    yield
    blas.disable_openblas_release()
    blas.set_backend(was)


def test_large_products_release_small_ones_do_not(numpy_blas, monkeypatch):
    pytest.importorskip("numba")
    calls = []
    monkeypatch.setattr(blas, "_openblas_shutdown", lambda: calls.append(1) or 0)
    monkeypatch.setattr(_numba, "enabled", lambda: True)
    monkeypatch.setattr(blas, "RELEASE_MIN_SECONDS", 0.0)       # the outputs decide
    side = 1 << 11                                              # 2^22 outputs ≥ RELEASE_MIN_OUT
    assert side * side >= blas.RELEASE_MIN_OUT
    a = np.ones((side, 8), np.float32)
    b = np.ones((8, side), np.float32)
    assert blas.matmul(a, b)[0, 0] == 8 and calls == [1]
    blas.matmul(a[:64], b[:, :64])                              # 4096 outputs: the threads keep spinning
    assert calls == [1]
    monkeypatch.setattr(blas, "RELEASE_MIN_SECONDS", 1e9)       # many outputs, but a short product: no release
    blas.matmul(a, b)
    assert calls == [1]
    monkeypatch.setattr(blas, "RELEASE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(_numba, "enabled", lambda: False)       # the NumPy path releases before splits instead
    blas.matmul(a, b)
    assert calls == [1]


def test_the_real_release_restarts_and_computes_the_same(numpy_blas, monkeypatch):
    """The real blas_thread_shutdown_ of NumPy's OpenBLAS between large products: each product still equals
    NumPy's (and nothing hangs)."""
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "1")
    what = blas.enable_openblas_release()
    if blas._openblas_path() is None:
        assert what == "off (no OpenBLAS library loaded)"     # NumPy built on another BLAS: nothing to release
        return
    assert what.startswith("on") and blas._openblas_shutdown is not None
    monkeypatch.setattr(_numba, "enabled", lambda: True)
    g = np.random.default_rng(0)
    a, b = g.random((1500, 300), dtype=np.float32), g.random((300, 1500), dtype=np.float32)
    ref = np.matmul(a, b)
    for _ in range(3):
        assert np.array_equal(blas.matmul(a, b), ref)


def test_switched_off_by_the_setting(numpy_blas, monkeypatch):
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "0")
    assert blas.enable_openblas_release() == "off (DELTAPROP_OPENBLAS_RELEASE=0)"
    assert blas._openblas_shutdown is None


def test_numpy_path_releases_before_large_split_passes_only(numpy_blas, monkeypatch):
    calls = []
    monkeypatch.setattr(blas, "_openblas_found", (lambda: calls.append(1) or 0, "on (test)"))
    monkeypatch.delenv("DELTAPROP_OPENBLAS_RELEASE", raising=False)
    assert blas.release_threads(blas.OPENBLAS_PASS_MIN) and calls == [1]
    assert not blas.release_threads(blas.OPENBLAS_PASS_MIN - 1) and calls == [1]   # a restart costs more
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "0")
    assert not blas.release_threads(blas.OPENBLAS_PASS_MIN) and calls == [1]


def test_numpy_path_splits_large_passes_on_openblas(numpy_blas, monkeypatch):
    """With the products on OpenBLAS, a large NumPy-path pass is split over the cores after the release (it was
    never split before: OpenBLAS's spinning threads held the second core)."""
    calls = []
    monkeypatch.setattr(blas, "_openblas_found", (lambda: calls.append(1) or 0, "on (test)"))
    monkeypatch.setattr(_numba, "enabled", lambda: False)
    monkeypatch.setattr(_split, "ENABLED", True)
    monkeypatch.setattr(blas, "max_threads", lambda: 2)
    assert _split.ranges(8, blas.OPENBLAS_PASS_MIN) == [(0, 4), (4, 8)] and calls == [1]
    assert _split.ranges(8, blas.OPENBLAS_PASS_MIN // 2) is None and calls == [1]


def test_numpy_path_real_release_computes_the_same(numpy_blas, monkeypatch):
    """The real shutdown before a split pass, then products: each equals NumPy's, and nothing hangs."""
    monkeypatch.delenv("DELTAPROP_OPENBLAS_RELEASE", raising=False)
    stop, what = blas.openblas_stopper()
    if blas._openblas_path() is None:
        assert stop is None and what == "off (no OpenBLAS library loaded)"
        return
    g = np.random.default_rng(1)
    a, b = g.random((700, 300), dtype=np.float32), g.random((300, 900), dtype=np.float32)
    ref = np.matmul(a, b)
    for _ in range(3):
        assert blas.release_threads(blas.OPENBLAS_PASS_MIN)
        assert np.array_equal(blas.matmul(a, b), ref)
