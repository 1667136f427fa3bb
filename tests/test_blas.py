"""deltaprop.runtime.blas: MKL-backed products equal np.matmul for every layout the layers use, and decline the rest."""
import numpy as np
import pytest

from deltaprop.runtime import blas

from conftest import need_mkl, rel_err


@pytest.fixture
def restore_backend(monkeypatch):
    """Undo a test's patches of the module, then put back the backend in use before it."""
    was = blas.backend()
    yield
    monkeypatch.undo()
    blas.set_backend(was)


@pytest.fixture(params=["numpy", "mkl", "mkl-ctypes"])
def backend(request, monkeypatch, restore_backend):
    """NumPy; MKL through the numba wrappers; MKL through ctypes (as without numba), every size."""
    try:
        blas.set_backend(request.param.split("-")[0])
    except blas.BlasError as exc:
        need_mkl(exc)
    if request.param == "mkl-ctypes":
        monkeypatch.setattr(blas, "_via_numba", False)
        monkeypatch.setattr(blas, "CTYPES_MIN_MACS", 0)
    return request.param


def _check(a, b, out=None):
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    got = blas.matmul(a, b, out=out)
    assert got.dtype == a.dtype and got.shape == want.shape
    tol = 1e-5 if a.dtype == np.float32 else 1e-12
    assert rel_err(got, want) < tol
    if out is not None:
        assert got is out
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_layouts(backend, dtype, rng):
    a = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal((5, 3)).astype(dtype)
    _check(a, b)
    _check(np.asfortranarray(a), b)                  # transposed storage of a
    _check(a, np.asfortranarray(b))
    _check(b.T, a.T)                                  # both transposed views
    _check(a[:, :4], b[:4])                           # row slices of wider arrays: leading dimension 5, 3
    _check(a[::2], b)                                 # every other row: leading dimension 10
    _check(a[:1], b)                                  # one row
    _check(a, b[:, :1])                               # one column
    _check(a, b, out=np.empty((7, 3), dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_products(backend, dtype, rng):
    a = rng.standard_normal((7, 5)).astype(dtype)
    v5, v7 = rng.standard_normal(5).astype(dtype), rng.standard_normal(7).astype(dtype)
    _check(a, v5)
    _check(v7, a)                                     # ones @ δ: the bias gradient
    _check(a.T, v7)
    _check(v5, a.T)
    _check(a, rng.standard_normal(10).astype(dtype)[::2])   # strided vector


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_products(backend, dtype, rng):
    w = rng.standard_normal((4, 6)).astype(dtype)
    x = rng.standard_normal((3, 6, 5)).astype(dtype)
    _check(w, x)                                      # one weight matrix broadcast over the batch
    _check(x.transpose(0, 2, 1), w.T)
    cols = rng.standard_normal((6, 3 * 5)).astype(dtype)
    per_sample = cols.reshape(6, 3, 5).transpose(1, 0, 2)   # conv's per-sample view of the column matrix
    _check(w, per_sample, out=np.empty((3, 4, 5), dtype))
    _check(rng.standard_normal((3, 4, 6)).astype(dtype), x)
    _check(rng.standard_normal((1, 4, 6)).astype(dtype), x)  # batch of one broadcast


def test_unsupported_cases_fall_back_to_numpy(backend, rng):
    a = rng.standard_normal((4, 3)).astype(np.float32)
    i = (rng.standard_normal((4, 3)) * 10).astype(np.int64)
    np.testing.assert_array_equal(blas.matmul(i, i.T), i @ i.T)                 # integers
    np.testing.assert_array_equal(blas.matmul(a[:0], a.T), np.zeros((0, 4), np.float32))   # empty
    mixed = blas.matmul(a, a.T.astype(np.float64))                                # mixed dtypes: NumPy's promotion
    assert mixed.dtype == np.float64
    _check(a[:, ::-1], a.T)                                                       # negative strides
    x4 = rng.standard_normal((2, 2, 4, 3)).astype(np.float32)
    _check(x4, a.T)                                                               # 4-D
    with pytest.raises(ValueError):
        blas.matmul(a, a)                                                         # NumPy's own shape error
    with pytest.raises(ValueError):
        blas.matmul(a, a.T, out=np.empty((3, 3), np.float32))


def test_set_backend_rejects_unknown_names():
    with pytest.raises(blas.BlasError, match="expected 'auto', 'mkl' or 'numpy'"):
        blas.set_backend("cublas")


def test_info_reports_the_choice():
    info = blas.info()
    assert info["backend"] == blas.backend() in ("mkl", "numpy")
    assert info["calls"] in (("numba", "ctypes") if info["backend"] == "mkl" else ("numpy",))
    assert info["cpu_vendor"] in ("intel", "amd", "other")


def test_auto_takes_the_cached_choice_and_never_measures(monkeypatch, restore_backend, tmp_path):
    """``set_backend("auto")`` (the first product's choice) reads the cache of ``deltaprop.tune()``: the cached
    library when there is one, else NumPy's BLAS marked unmeasured; it never times anything."""
    from deltaprop.runtime import cache, calibrate, machine
    monkeypatch.setenv("DELTAPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(machine, "mkl_candidates", lambda: [str(tmp_path / "libmkl_rt.so.2")])

    def no_measuring(*args, **kwargs):
        raise AssertionError("the first use measured")
    monkeypatch.setattr(calibrate, "measure", no_measuring)
    assert blas.set_backend("auto") == "numpy"
    assert blas.info()["choice"]["uncalibrated"] and not (tmp_path / "blas.json").exists()
    cache.store(blas.cache_path(), cache.machine_key(), {"choice": "numpy", "reason": "measured: test"}, "choice",
                blas.LIBRARIES, 0.0)
    assert blas.set_backend("auto") == "numpy"
    assert blas.info()["choice"]["cached"] and blas.info()["choice"]["reason"] == "measured: test"


def test_mkl_request_without_the_library_names_the_problem(monkeypatch, restore_backend):
    monkeypatch.setattr(blas, "_lib", None)
    monkeypatch.setattr(blas.machine, "mkl_candidates", lambda: [])
    with pytest.raises(blas.BlasError, match="libmkl_rt was not found"):
        blas.set_backend("mkl")
    assert blas.set_backend("auto") == "numpy"


def test_small_products_stay_with_numpy_without_numba(monkeypatch, rng, restore_backend):
    try:
        blas.set_backend("mkl")
    except blas.BlasError as exc:
        need_mkl(exc)
    monkeypatch.setattr(blas, "_via_numba", False)
    called = []
    monkeypatch.setitem(blas._funcs, "sgemm", lambda *args: called.append(args))
    monkeypatch.setattr(blas, "_jitted", {})              # callers built before would hold the real function
    a = rng.standard_normal((4, 3)).astype(np.float32)
    _check(a, a.T)                                        # 48 multiply-adds: NumPy
    assert not called
    big = np.ones((64, 64), np.float32)
    blas.matmul(big, big)                                 # 262144 multiply-adds: MKL
    assert len(called) == 1 and called[0][3:6] == (64, 64, 64)


def _aligned_copy(a, offset):
    """a copied into a buffer at ``offset`` float32 elements past a 64-byte boundary."""
    buf = np.empty(a.size + 64, np.float32)
    base = (-buf.ctypes.data % 64) // 4
    v = buf[base + offset: base + offset + a.size].reshape(a.shape)
    v[...] = a
    return v


def test_results_do_not_depend_on_memory_alignment(backend, rng):
    """Resumed runs must equal uninterrupted ones bit for bit, and their arrays sit at other addresses."""
    x = rng.standard_normal((64, 784)).astype(np.float32)
    w = rng.standard_normal((256, 784)).astype(np.float32)
    d = rng.standard_normal((64, 256)).astype(np.float32)
    ref_f = blas.matmul(_aligned_copy(x, 0), _aligned_copy(w, 0).T)
    ref_b = blas.matmul(_aligned_copy(d, 0).T, _aligned_copy(x, 0))
    for off in (1, 3, 5, 8, 15):
        assert np.array_equal(blas.matmul(_aligned_copy(x, off), _aligned_copy(w, (off * 7) % 16).T), ref_f)
        assert np.array_equal(blas.matmul(_aligned_copy(d, off).T, _aligned_copy(x, (off * 3) % 16)), ref_b)


def test_an_old_mkl_without_the_needed_functions_is_refused(monkeypatch, tmp_path, restore_backend):
    """A libmkl_rt that loads but lacks cblas_?gemm_batch_strided (MKL before 2020) is named, not used."""
    fake = tmp_path / "libmkl_rt.so"
    fake.write_bytes(b"")

    class _OldLib:
        cblas_sgemm = cblas_dgemm = cblas_sgemv = cblas_dgemv = object()

    monkeypatch.setattr(blas, "_lib", None)
    monkeypatch.setattr(blas.machine, "mkl_candidates", lambda: [str(fake)])
    monkeypatch.setattr(blas.ctypes, "CDLL", lambda path: _OldLib())
    with pytest.raises(blas.BlasError, match="lacks cblas_sgemm_batch_strided"):
        blas.set_backend("mkl")
    assert blas.set_backend("auto") == "numpy"


def test_repeated_products_reuse_a_plan_keyed_by_layout(backend, rng):
    """The second call of a 2-D product skips the layout checks (a plan per dtypes, shapes and strides); a
    same-shaped operand with other strides or another dtype gets its own plan, and set_backend drops them all."""
    a = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    bt = np.ascontiguousarray(b.T).T                 # same shape as b, transposed strides
    v = rng.standard_normal(6).astype(np.float32)
    for _ in range(2):                               # first call plans, second uses the plan
        _check(a, b)
        _check(a, bt)
        _check(a.astype(np.float64), b.astype(np.float64))
        _check(v, a)                                 # vector @ matrix (the bias gradients' ones @ δ)
        _check(a, b[:, 0])                           # matrix @ strided vector
        _check(a.T, v)
    keys = [k for k in blas._plans if k[1] == (6, 5)]
    if backend == "numpy" or blas._small_for_ctypes(6 * 5 * 4):
        assert not keys                              # products NumPy runs are not planned
        return
    assert len(keys) == 4                            # b, its transposed layout, float64, a @ vector
    blas.set_backend(blas.backend())
    assert not blas._plans
