"""The parallel numba kernels (``jit(parallel=True)``): same numbers as the NumPy path on both routes, the
serial build for small arrays and forked children, the user's threading choices kept, and fork safety (the pools
themselves: tests/test_threads.py)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deltaprop import backend
from deltaprop.runtime import blas
from deltaprop.errors import NonFiniteError
from deltaprop.fast import elementwise_numba as ew
from deltaprop.runtime import jit as _numba
from deltaprop.functional import activation as A
from conftest import require_numba

SIZES = [(3, 5), (64, 256), (300, 200)]       # serial route, serial route, parallel route (≥ PARALLEL_MIN)


def _with_specials(shape, dtype, rng):
    z = rng.standard_normal(shape).astype(dtype)
    flat = z.reshape(-1)
    flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, -1e-30]
    return z


def test_sizes_cover_both_routes():
    assert np.prod(SIZES[0]) < _numba.PARALLEL_MIN <= np.prod(SIZES[2])


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernels_match_numpy_bit_for_bit(shape, dtype, rng, numba_mode):
    with np.errstate(invalid="ignore"):
        z = _with_specials(shape, dtype, rng)
        y, (mask,) = A.relu_forward(z)
        y_np, mask_np = z * (z > 0), z > 0
    assert y.dtype == dtype and np.array_equal(mask, mask_np)
    # same values, same signs of zero, NaN where NumPy has NaN
    assert np.array_equal(y, y_np, equal_nan=True) and np.array_equal(np.signbit(y), np.signbit(y_np))
    dy = _with_specials(shape, dtype, rng)
    with np.errstate(invalid="ignore"):
        dz = A.relu_backward(dy, A.ReluCache(mask))
        dz_np = dy * mask_np
    assert np.array_equal(dz, dz_np, equal_nan=True) and np.array_equal(np.signbit(dz), np.signbit(dz_np))


def test_relu_kernels_decline_what_they_cannot_do(rng):
    require_numba()
    z = rng.standard_normal((40, 30)).astype(np.float32)
    assert ew.relu_forward(z[:, ::2]) is None                       # not contiguous
    assert ew.relu_forward(z.astype(np.float16)) is None
    assert ew.relu_backward(z, np.ones((40, 30), np.uint8)) is None  # mask of another dtype
    assert ew.relu_backward(z, np.ones((30, 40), bool)) is None      # mask of another shape
    y, mask = ew.relu_forward(z)                                     # and does what it can
    assert np.array_equal(y, np.maximum(z, 0)) and np.array_equal(mask, z > 0)


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_count_matches_numpy(shape, dtype, rng):
    require_numba()
    x = rng.standard_normal(shape).astype(dtype)
    assert ew.count_nonfinite(x) == 0
    bad = rng.choice(x.size, size=min(7, x.size), replace=False)
    x.reshape(-1)[bad] = np.array([np.nan, np.inf, -np.inf, np.nan, np.inf, -np.nan, np.inf])[:len(bad)]
    x.reshape(-1)[0 if 0 not in bad else 1] = np.finfo(dtype).max        # the largest finite value is finite
    assert ew.count_nonfinite(x) == x.size - np.count_nonzero(np.isfinite(x)) == len(bad)
    assert ew.count_nonfinite(x[:, ::2]) is None                          # strided: NumPy's scan


@pytest.mark.parametrize("shape", [(4, 3), (300, 200)])
def test_check_array_names_the_count_on_both_paths(shape, rng, numba_mode):
    x = rng.standard_normal(shape).astype(np.float32)
    assert backend.check_array(x, "batch", finite=True) is x
    x[1, 2] = np.nan
    x[-1, (shape[1] - 1) // 2 * 2] = -np.inf      # an even column, so the strided view below keeps it
    with pytest.raises(NonFiniteError, match=r"batch contains 2 NaN or infinite value\(s\)"):
        backend.check_array(x, "batch", finite=True)
    with pytest.raises(NonFiniteError, match="2 NaN"):
        backend.check_array(x[:, ::2], "batch", finite=True)          # not contiguous: NumPy's scan


def test_parallel_kernels_choose_their_build_by_size_and_fork(monkeypatch):
    require_numba()
    kernel = ew._relu_bwd
    assert kernel.parallel
    small, large = kernel.compiled(_numba.PARALLEL_MIN - 1), kernel.compiled(_numba.PARALLEL_MIN)
    assert small is not large
    assert small.py_func.__qualname__.endswith("__serial")          # its own on-disk cache entry
    assert large.py_func.__qualname__ == "_relu_bwd"
    from deltaprop.runtime import threads
    monkeypatch.setattr(threads, "_forked", True)
    assert kernel.compiled(10 ** 9) is small and _numba.in_forked_child()


def test_user_threading_choices_are_kept(tmp_path):
    code = textwrap.dedent("""
        import deltaprop.runtime.blas as b, deltaprop.runtime.jit as n
        n.numba_module()
        import numba
        print(b.info()["mkl_threading"], numba.config.THREADING_LAYER_PRIORITY)
    """)
    env = dict(os.environ, DELTAPROP_BLAS="mkl", MKL_THREADING_LAYER="SEQUENTIAL",
               NUMBA_THREADING_LAYER_PRIORITY="workqueue omp tbb")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    layer, priority = out.stdout.split(" ", 1)
    assert layer == "sequential" and priority.strip().startswith("['workqueue'")


def test_a_forked_child_can_train_after_the_parent_used_the_pool():
    """GNU OpenMP's pool does not survive fork: the child must run MKL and the kernels without it (no hang)."""
    require_numba()
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    code = textwrap.dedent("""
        import os, numpy as np
        from deltaprop.runtime import blas
        from deltaprop.functional import activation as A
        from deltaprop.fast.sgd_numba import sgd_momentum_update
        a = np.ones((300, 300), np.float32)
        w, g, buf = np.ones(10 ** 6, np.float32), np.ones(10 ** 6, np.float32), np.zeros(10 ** 6, np.float32)
        def work():
            r = blas.matmul(a, a)
            assert sgd_momentum_update(w, g, buf, 0.1, 0.9, 0.0, 0.0, False, False)
            y, _ = A.relu_forward(w.reshape(1000, 1000) - 0.5)
            return float(r[0, 0]), float(y.sum())
        parent = work()
        pid = os.fork()
        if pid == 0:
            child = work()
            os._exit(0 if child[0] == 300.0 else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), work()[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "300.0"]
