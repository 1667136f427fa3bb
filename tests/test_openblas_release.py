"""Stopping NumPy's OpenBLAS's spinning threads (``blas_thread_shutdown_``) so that deltaprop's own threads get the
cores; the next product starts them again and computes the same numbers.

- numba path (``threads.enable_openblas_release``): before a large parallel kernel that follows a product; a
  smaller one runs its serial build;
- NumPy path (``threads.release_threads``): before a large pass is split over threads (``fast/split.py``).

The rules live in ``runtime.threads`` (the one thread policy); ``runtime.blas`` keeps their names for callers."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop.runtime import blas, threads
from deltaprop.runtime import jit as _numba
from deltaprop.fast import split as _split


@pytest.fixture
def numpy_blas(monkeypatch):
    was = blas.backend()
    blas.set_backend("numpy")
    yield
    threads.disable_openblas_release()
    blas.set_backend(was)


def test_large_kernels_release_small_ones_run_serially(numpy_blas, monkeypatch):
    """After a product, a parallel kernel over at least RELEASE_BEFORE_KERNEL elements stops OpenBLAS's threads
    and runs in parallel; a smaller one runs serially (their spinning thread holds the other core); with no
    product since the last stop, every kernel runs in parallel."""
    pytest.importorskip("numba")
    calls = []
    monkeypatch.setattr(threads.openblas, "stop", lambda: calls.append(1) or 0)
    big, small = threads.RELEASE_BEFORE_KERNEL, threads.RELEASE_BEFORE_KERNEL - 1
    a = np.ones((4, 8), np.float32)
    blas.matmul(a, a.T)
    assert threads.before_parallel_kernel(small) is False and calls == []
    assert threads.parallel_build(small) is False and calls == []           # what a kernel asks: serial
    assert threads.before_parallel_kernel(big) is True and calls == [1]
    assert threads.before_parallel_kernel(small) is True and calls == [1]    # stopped since: parallel again
    blas.matmul(a, a.T)
    assert threads.before_parallel_kernel(big) is True and calls == [1, 1]
    threads.disable_openblas_release()                                       # off: always parallel, no stops
    blas.matmul(a, a.T)
    assert threads.before_parallel_kernel(small) is True and calls == [1, 1]


def test_kernels_ask_before_they_run(numpy_blas, monkeypatch):
    """``jit``'s parallel kernels take the serial build where ``threads.before_parallel_kernel`` says so."""
    pytest.importorskip("numba")
    from deltaprop.fast import elementwise_numba as ew
    asked = []
    monkeypatch.setattr(threads, "before_parallel_kernel", lambda n: asked.append(n) or False)
    n = max(_numba.PARALLEL_MIN, 1 << 16)
    serial = ew._relu_fwd.compiled(1)                       # below PARALLEL_MIN: serial, nothing asked
    assert asked == [] and ew._relu_fwd.compiled(n) is serial and asked == [n]
    monkeypatch.setattr(threads, "before_parallel_kernel", lambda n: True)
    if not (threads.serial_only() or threads.in_forked_child()):
        assert ew._relu_fwd.compiled(n) is not serial


def test_the_real_release_restarts_and_computes_the_same(numpy_blas, monkeypatch):
    """The real blas_thread_shutdown_ of NumPy's OpenBLAS between large products: each product still equals
    NumPy's (and nothing hangs)."""
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "1")
    what = threads.enable_openblas_release()
    if threads._openblas_path() is None:
        assert what == "off (no OpenBLAS library loaded)"     # NumPy built on another BLAS: nothing to release
        return
    assert what.startswith("on") and threads.openblas.stop is not None
    g = np.random.default_rng(0)
    a, b = g.random((1500, 300), dtype=np.float32), g.random((300, 1500), dtype=np.float32)
    ref = np.matmul(a, b)
    for _ in range(3):
        assert np.array_equal(blas.matmul(a, b), ref)
        assert threads.before_parallel_kernel(threads.RELEASE_BEFORE_KERNEL)  # the real stop


def test_switched_off_by_the_setting(numpy_blas, monkeypatch):
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "0")
    assert threads.enable_openblas_release() == "off (DELTAPROP_OPENBLAS_RELEASE=0)"
    assert threads.openblas.stop is None


def test_numpy_path_releases_before_large_split_passes_only(numpy_blas, monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "_openblas_found", (lambda: calls.append(1) or 0, "on (test)"))
    monkeypatch.delenv("DELTAPROP_OPENBLAS_RELEASE", raising=False)
    assert threads.release_threads(threads.OPENBLAS_PASS_MIN) and calls == [1]
    assert not threads.release_threads(threads.OPENBLAS_PASS_MIN - 1) and calls == [1]   # a restart costs more
    monkeypatch.setenv("DELTAPROP_OPENBLAS_RELEASE", "0")
    assert not threads.release_threads(threads.OPENBLAS_PASS_MIN) and calls == [1]
    assert blas.release_threads is threads.release_threads          # the name its callers use


def test_numpy_path_splits_large_passes_on_openblas(numpy_blas, monkeypatch):
    """With the products on OpenBLAS, a large NumPy-path pass is split over the cores after the release (it was
    never split before: OpenBLAS's spinning threads held the second core)."""
    calls = []
    monkeypatch.setattr(threads, "_openblas_found", (lambda: calls.append(1) or 0, "on (test)"))
    monkeypatch.setattr(_numba, "enabled", lambda: False)
    monkeypatch.setattr(_split, "ENABLED", True)
    monkeypatch.setattr(blas, "max_threads", lambda: 2)                      # either name a caller uses
    monkeypatch.setattr(threads, "max_threads", lambda: 2)
    assert _split.ranges(8, blas.OPENBLAS_PASS_MIN) == [(0, 4), (4, 8)] and calls == [1]
    assert _split.ranges(8, blas.OPENBLAS_PASS_MIN // 2) is None and calls == [1]


def test_numpy_path_real_release_computes_the_same(numpy_blas, monkeypatch):
    """The real shutdown before a split pass, then products: each equals NumPy's, and nothing hangs."""
    monkeypatch.delenv("DELTAPROP_OPENBLAS_RELEASE", raising=False)
    stop, what = threads.openblas_stopper()
    if threads._openblas_path() is None:
        assert stop is None and what == "off (no OpenBLAS library loaded)"
        return
    g = np.random.default_rng(1)
    a, b = g.random((700, 300), dtype=np.float32), g.random((300, 900), dtype=np.float32)
    ref = np.matmul(a, b)
    for _ in range(3):
        assert blas.release_threads(blas.OPENBLAS_PASS_MIN)
        assert np.array_equal(blas.matmul(a, b), ref)
