"""blas.enable_openblas_release: with NumPy's OpenBLAS and numba's kernels, a product with many outputs stops
OpenBLAS's spinning threads after it (they would hold the cores the numba kernels that follow need); the next
product starts them again and computes the same numbers."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop import blas
from deltaprop.functional import _numba


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
    side = 1 << 11                                              # 2^22 outputs ≥ RELEASE_MIN_OUT
    a = np.ones((side, 8), np.float32)
    b = np.ones((8, side), np.float32)
    assert blas.matmul(a, b)[0, 0] == 8 and calls == [1]
    blas.matmul(a[:64], b[:, :64])                              # 4096 outputs: the threads keep spinning
    assert calls == [1]
    monkeypatch.setattr(_numba, "enabled", lambda: False)       # the NumPy path: nothing follows on 2 cores
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
