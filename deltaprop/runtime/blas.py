"""Matrix products through the fastest BLAS on this machine: ``blas.matmul`` is ``np.matmul`` for the shapes
the layers use, run by Intel oneMKL when it serves this CPU better than NumPy's own BLAS.

NumPy's PyPI wheels call OpenBLAS. On Intel CPUs, oneMKL (PyPI package ``mkl``, installed by the ``fast`` extra
on x86-64; PyTorch's CPU build links the same library) runs the products of the dense and convolutional layers
faster: on this project's 2-core Xeon the MLP's forward product 784→256 at batch 64 took 142 µs against 222 µs
(``bench/README.md`` has the measured table). Which one is faster depends on the CPU, the libraries' versions and
the core count, so ``auto`` is measured (``runtime.calibrate``, by ``deltaprop.tune()``).

Choice of library (``DELTAPROP_BLAS``, or ``set_backend`` at run time), made on first use (the first product or
parallel kernel, ``ensure``) or by ``deltaprop.tune()``, never at import:

- ``auto`` (default): the choice measured on this machine and cached (``blas.json``); until ``deltaprop.tune()``
  (which the ``deltaprop`` command runs) has measured it, NumPy's own BLAS (``auto_choice``). The first product
  never measures;
- ``mkl``: MKL wherever it loads (an error names the problem when it does not);
- ``numpy``: always ``np.matmul``.

The threads of the products are set up with the library by ``runtime.threads`` (the one thread policy): MKL on
GNU OpenMP shares one pool with the numba kernels; NumPy's BLAS keeps its own and numba's threads sleep between
kernels.

MKL is called through ``ctypes`` (``cblas_?gemm``, ``cblas_?gemm_batch_strided``, ``cblas_?gemv``) on the arrays'
own memory: row-major operands, or transposed views of them, are passed with the transpose flag and leading
dimension, never copied. Anything else (other dtypes, odd strides, empty or huge shapes, more than 3 dimensions)
goes to ``np.matmul``, which gives the same result up to float rounding.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from . import cache, machine, malloc, numba_loader, settings, threads
from ..errors import DeltapropError
# the thread rules products and passes follow live in ``threads``; these names are kept here for their callers
from .threads import (OPENBLAS_PASS_MIN, RELEASE_BEFORE_KERNEL, before_parallel_kernel,  # noqa: F401
                      disable_openblas_release, enable_openblas_release, max_threads, openblas_stopper,
                      release_threads)

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_INT_MAX = 2 ** 31 - 1          # MKL's LP64 interface: 32-bit sizes
_FLOATS = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}
BACKENDS = ("auto", "mkl", "numpy")   # the values of DELTAPROP_BLAS and set_backend
LIBRARIES = ("mkl", "numpy")          # what ``auto`` chooses between
DEFAULT = "numpy"                     # ``auto`` before this machine was measured (see ``auto_choice``)

_lib = None                     # the loaded libmkl_rt (or None)
_funcs: Dict[str, object] = {}  # "sgemm" -> ctypes function, ...
_jitted: Dict[Tuple[str, bool], object] = {}  # ("sgemm", via numba) -> caller, built on first use
# Products seen before (matrix–matrix and matrix–vector), by operand dtypes, shapes and strides: (a function of
# the operands and the output that calls MKL with the flags, sizes and leading dimensions found, the output's
# shape). A training step repeats the same dozen products; the plan skips the layout checks.
_plans: Dict[tuple, tuple] = {}
_PLANS_MAX = 512
_use_mkl = False
_via_numba = False
_backend = "numpy"
_ready = False                  # a library was chosen (first use, ``ensure``, ``set_backend`` or ``choose``)
_ensuring = False
_choice: Dict[str, object] = {}  # how the library was chosen (``auto_choice``'s or the calibration's record)
CTYPES_MIN_MACS = 1 << 18       # OpenBLAS's own one-thread limit (65536 × GEMM_MULTITHREAD_THRESHOLD 4)
_load_error: Optional[str] = None
_spin = threads.openblas        # NumPy's OpenBLAS threads as the numba path tracks them


class BlasError(DeltapropError):
    """The requested BLAS library cannot be used."""


def _load() -> Optional[str]:
    """Load libmkl_rt, put it on its threading layer (``threads.choose_mkl_threading``) and declare its functions;
    returns None, or why it failed."""
    global _lib
    if _lib is not None:
        return None
    paths = machine.mkl_candidates()
    if not paths:
        return "libmkl_rt was not found (pip install mkl)"
    errors = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    else:
        return "libmkl_rt did not load: " + "; ".join(errors)
    missing = [name for t in "sd" for name in (f"cblas_{t}gemm", f"cblas_{t}gemm_batch_strided", f"cblas_{t}gemv")
               if not hasattr(lib, name)]
    if missing:
        return f"{path} lacks {', '.join(missing)} (oneMKL 2020 or newer is needed)"
    threads.choose_mkl_threading(lib)
    P, I = ctypes.c_void_p, ctypes.c_int
    for t, real in (("s", ctypes.c_float), ("d", ctypes.c_double)):
        gemm = getattr(lib, f"cblas_{t}gemm")
        gemm.argtypes = [I, I, I, I, I, I, real, P, I, P, I, real, P, I]
        gemm.restype = None
        batch = getattr(lib, f"cblas_{t}gemm_batch_strided")
        batch.argtypes = [I, I, I, I, I, I, real, P, I, I, P, I, I, real, P, I, I, I]
        batch.restype = None
        gemv = getattr(lib, f"cblas_{t}gemv")
        gemv.argtypes = [I, I, I, I, real, P, I, P, I, real, P, I]
        gemv.restype = None
        _funcs[t + "gemm"], _funcs[t + "batch"], _funcs[t + "gemv"] = gemm, batch, gemv
    _lib = lib
    return None


def _np_matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """``np.matmul``, noting for ``threads.before_parallel_kernel`` that OpenBLAS's threads may now spin."""
    c = np.matmul(a, b, out=out)
    if _spin.stop is not None:
        _spin.spinning = True
    return c


def _kernel(key: str):
    """The caller of one MKL function ("sgemm", "dbatch", "sgemv", ...) with the arguments of ``_gemm``,
    ``_gemv`` and ``_gemm_batch``: compiled by numba on first use when ``_via_numba``, else the same Python
    function calling through ctypes.

    A ctypes call with ``.ctypes.data`` pointers costs about 10 µs on the project's machine, as much as a
    64×128×10 product; through numba the call costs what ``np.matmul``'s does. Operands are typed as
    any-layout arrays, so one compiled version serves C-ordered arrays, transposed views and slices.
    Not cached on disk: the function's address is compiled in."""
    fn = _jitted.get((key, _via_numba))
    if fn is not None:
        return fn
    t, kind = key[0], key[1:]
    # numba needs constants of the array's dtype; ctypes converts Python floats itself
    one, zero = (np.float32(1.0), np.float32(0.0)) if t == "s" and _via_numba else (1.0, 0.0)
    c_fn = _funcs[key]
    if kind == "gemm":
        def f(ta, tb, m, n, k, a, lda, b, ldb, c):
            c_fn(_ROW_MAJOR, ta, tb, m, n, k, one, a.ctypes.data, lda, b.ctypes.data, ldb, zero, c.ctypes.data, n)
    elif kind == "batch":
        def f(ta, tb, m, n, k, a, lda, sa, b, ldb, sb, c, nb):
            c_fn(_ROW_MAJOR, ta, tb, m, n, k, one, a.ctypes.data, lda, sa, b.ctypes.data, ldb, sb, zero,
                 c.ctypes.data, n, m * n, nb)
    else:
        def f(trans, rows, cols, a, lda, x, incx, y):
            c_fn(_ROW_MAJOR, trans, rows, cols, one, a.ctypes.data, lda, x.ctypes.data, incx, zero, y.ctypes.data, 1)
    if _via_numba:
        import numba
        dt = numba.float32 if t == "s" else numba.float64
        i = numba.int64
        sig = {"gemm": (i, i, i, i, i, dt[:, :], i, dt[:, :], i, dt[:, :]),
               "batch": (i, i, i, i, i, dt[:, :, :], i, i, dt[:, :, :], i, i, dt[:, :, :], i),
               "gemv": (i, i, i, dt[:, :], i, dt[:], i, dt[:])}[kind]
        f = numba.njit(sig, nogil=True, cache=False)(f)
    _jitted[(key, _via_numba)] = f
    return f


def _small_for_ctypes(macs: int) -> bool:
    """Without numba a product this small costs less in NumPy than the ctypes call into MKL."""
    return not _via_numba and macs < CTYPES_MIN_MACS


def setting() -> str:
    """``DELTAPROP_BLAS``: "auto" (default), "mkl" or "numpy"; a ``ConfigError`` naming the variable and the
    allowed values for anything else."""
    return settings.get("DELTAPROP_BLAS")


def cache_path() -> Path:
    """Where ``auto``'s measured choice is kept: ``blas.json`` in the cache folder (``runtime.cache``)."""
    return cache.path("blas.json")


def auto_choice() -> Dict[str, object]:
    """The library for ``auto`` and why, without measuring: {"choice", "reason", ...}.

    - ``DELTAPROP_CALIBRATE=0`` or MKL not installed: NumPy's own BLAS;
    - the choice cached for this machine (``cache.machine_key``), measured earlier by ``deltaprop.tune()``;
    - else ``DEFAULT``, NumPy's own BLAS, marked ``"uncalibrated": True`` (``deltaprop.tune()`` measures then).
      NumPy's is the safe default: always there, nothing extra loaded into the process (MKL brings its own
      OpenMP and a threading layer that cannot be undone), the library the test suite runs, and never far off;
      MKL was the slower library on the AMD host of issue 17, so guessing it could cost more than it gains."""
    if not settings.get("DELTAPROP_CALIBRATE"):
        return {"choice": "numpy", "reason": "DELTAPROP_CALIBRATE=0: no measurement, NumPy's own BLAS"}
    if not machine.mkl_candidates():
        return {"choice": "numpy", "reason": "MKL is not installed (pip install mkl, or the fast extra)"}
    hit = cache.lookup(cache_path(), cache.machine_key(), "choice", LIBRARIES)
    if hit is not None:
        return hit
    return {"choice": DEFAULT, "uncalibrated": True,
            "reason": "not measured on this machine yet: NumPy's own BLAS until deltaprop.tune() (run by every "
                      "deltaprop command and deltaprop info) measures both libraries"}


def set_backend(name: str = "auto") -> str:
    """Choose the library for ``matmul``: "auto", "mkl" or "numpy"; returns the one in use ("mkl"/"numpy").
    ``auto`` takes ``auto_choice()`` (the cached measurement, else NumPy's BLAS; never measures).
    With numba (and ``DELTAPROP_NUMBA`` not 0) MKL is called through compiled wrappers; without it through
    ctypes, whose ~10 µs per call only pays off on products of at least ``CTYPES_MIN_MACS`` multiply-adds
    (smaller ones stay with NumPy, whose BLAS runs them on one thread). The threads are set up for the library
    chosen first in the process (``threads.start_for``); a later switch keeps them."""
    name = str(name).lower()
    if name not in BACKENDS:
        raise BlasError(f"set_backend: expected 'auto', 'mkl' or 'numpy', got {name!r}")
    if name == "auto":
        return choose(auto_choice())
    return choose({"choice": name, "reason": "set by DELTAPROP_BLAS or set_backend"})


def choose(record: Dict[str, object]) -> str:
    """Put ``record["choice"]`` in use and keep ``record`` as the reason (``info()["choice"]``)."""
    global _ready, _choice
    _ready = True
    _choice = dict(record)
    return use(str(record["choice"]))


def choice() -> Dict[str, object]:
    """The record of how the library in use was chosen ({} before the first choice)."""
    return dict(_choice)


def ready() -> bool:
    """Whether a library was chosen in this process."""
    return _ready


def use(name: str) -> str:
    """Put ``name`` ("mkl" or "numpy") in use for ``matmul``, starting the threads for it if none run yet
    (``set_backend`` without the record; the calibration times each library through it)."""
    global _use_mkl, _via_numba, _backend, _load_error
    _use_mkl = False
    threads.products_on("numpy")
    _plans.clear()
    threads.start_for(name)
    if name == "mkl":
        _load_error = _load()
        if _load_error:
            _backend = "numpy"
            raise BlasError(f"MKL requested but unusable: {_load_error}")
        _use_mkl = True
    _via_numba = _use_mkl and numba_loader.numba_module() is not None
    _backend = "mkl" if _use_mkl else "numpy"
    threads.products_on(_backend)
    return _backend


def ensure() -> str:
    """Choose the library (``DELTAPROP_BLAS``, default ``auto``) and set up the threads, once per process: on the
    first product, the first parallel kernel, or ``deltaprop.tune()``. Also keeps freed memory for reuse
    (``malloc``). Never measures. Returns the library in use."""
    global _ensuring
    if _ready or _ensuring:
        return _backend
    _ensuring = True
    try:
        malloc.tune()
        set_backend(setting())
    finally:
        _ensuring = False
    return _backend


def backend() -> str:
    """The library ``matmul`` uses: "mkl" or "numpy" (chosen now if not yet)."""
    ensure()
    return _backend


def info() -> Dict[str, object]:
    """What is in use and why (for ``deltaprop info`` and bench result lines); chooses the library if not yet."""
    ensure()
    return {"backend": _backend, "calls": ("numba" if _via_numba else "ctypes") if _use_mkl else "numpy",
            "cpu_vendor": machine.cpu_vendor(), "mkl_loaded": _lib is not None,
            "mkl_error": _load_error, "mkl_threading": threads.mkl_threading(),
            "setting": setting(), "choice": dict(_choice),
            "threads": threads.describe()}


# --- operand layouts -------------------------------------------------------------------------------

def _layout(shape: Tuple[int, int], strides: Tuple[int, int], s: int) -> Optional[Tuple[int, int]]:
    """(transpose flag, leading dimension) describing a (r, c) matrix to row-major BLAS, or None."""
    r, c = shape
    s0, s1 = strides
    if (s1 == s or c == 1) and (r == 1 or (s0 > 0 and s0 % s == 0 and s0 // s >= c)):
        return _NO_TRANS, (s0 // s if r > 1 else c)
    if (s0 == s or r == 1) and (c == 1 or (s1 > 0 and s1 % s == 0 and s1 // s >= r)):
        return _TRANS, (s1 // s if c > 1 else r)
    return None


def _batch_stride(x: np.ndarray, s: int) -> Optional[int]:
    st = x.strides[0]
    if x.shape[0] == 1:
        return 0
    return st // s if st >= 0 and st % s == 0 else None


def _ok(x: np.ndarray, dt: np.dtype) -> bool:
    return x.dtype == dt and x.flags.aligned and 0 < x.size and x.ndim in (1, 2, 3)


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for 1-D, 2-D and batched 3-D operands (a 2-D operand broadcast over the
    other's batch); run by MKL when it is the backend in use and the operands are float32/float64 of one
    dtype with row-major or transposed layouts. The result is a new C-contiguous array, or ``out``."""
    if not _use_mkl:
        if _ready or _ensuring or ensure() != "mkl":
            return _np_matmul(a, b, out)
    if out is None:
        plan = _plans.get(_plan_key(a, b))
        if plan is not None and a.flags.aligned and b.flags.aligned:
            run, shape = plan
            c = np.empty(shape, dtype=a.dtype)
            run(a, b, c)
            return c
    dt = a.dtype
    t = _FLOATS.get(dt)
    if t is None or not (_ok(a, dt) and _ok(b, dt)) or (out is not None and not (
            out.dtype == dt and out.flags.c_contiguous and out.flags.aligned)):
        return np.matmul(a, b, out=out)
    s = dt.itemsize
    if a.ndim == 2 and b.ndim == 2:
        return _gemm(t, a, b, out, s)
    if a.ndim + b.ndim == 3:
        return _gemv(t, a, b, out, s)
    if a.ndim >= 2 and b.ndim >= 2:
        return _gemm_batch(t, a, b, out, s)
    return np.matmul(a, b, out=out)


def _gemm(t: str, a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray], s: int) -> np.ndarray:
    (m, k), (k2, n) = a.shape, b.shape
    la, lb = _layout(a.shape, a.strides, s), _layout(b.shape, b.strides, s)
    if k != k2 or la is None or lb is None or max(m, n, k, la[1], lb[1]) > _INT_MAX:
        return np.matmul(a, b, out=out)
    if (out is not None and out.shape != (m, n)) or _small_for_ctypes(m * n * k):
        return np.matmul(a, b, out=out)       # a wrong ``out``: NumPy raises its own shape error
    kernel = _kernel(t + "gemm")
    ta, lda, tb, ldb = la[0], la[1], lb[0], lb[1]

    def run(a, b, c):
        kernel(ta, tb, m, n, k, a, lda, b, ldb, c)
    if out is None:
        out = np.empty((m, n), dtype=a.dtype)
        _remember(a, b, run, (m, n))
    run(a, b, out)
    return out


def _plan_key(a: np.ndarray, b: np.ndarray) -> tuple:
    """What a plan depends on: both operands' dtypes, shapes and strides."""
    return a.dtype, a.shape, a.strides, b.dtype, b.shape, b.strides


def _remember(a: np.ndarray, b: np.ndarray, run, shape: Tuple[int, ...]) -> None:
    """Keep the plan of a product that passed every check, for the next call with the same layout."""
    if len(_plans) >= _PLANS_MAX:
        _plans.clear()
    _plans[_plan_key(a, b)] = (run, shape)


def _gemv(t: str, a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray], s: int) -> np.ndarray:
    """matrix @ vector (y = A x) or vector @ matrix (y = Bᵀ x)."""
    if a.ndim == 2:
        mat, vec, want = a, b, (a.shape[0],)
        inner = a.shape[1]
        flip = False
    else:
        mat, vec, want = b, a, (b.shape[1],)
        inner = b.shape[0]
        flip = True
    lay = _layout(mat.shape, mat.strides, s)
    if vec.shape[0] != inner or lay is None or vec.strides[0] <= 0 or vec.strides[0] % s \
            or max(mat.shape[0], mat.shape[1], lay[1]) > _INT_MAX:
        return np.matmul(a, b, out=out)
    if (out is not None and out.shape != want) or _small_for_ctypes(mat.size):
        return np.matmul(a, b, out=out)
    # The stored matrix is (rows, cols) = mat.shape under NO_TRANS, mat.shape reversed under TRANS.
    trans, ld = lay
    rows, cols = mat.shape if trans == _NO_TRANS else mat.shape[::-1]
    op = trans if not flip else (_TRANS if trans == _NO_TRANS else _NO_TRANS)
    kernel, inc = _kernel(t + "gemv"), vec.strides[0] // s
    if flip:
        def run(v, m, c):
            kernel(op, rows, cols, m, ld, v, inc, c)
    else:
        def run(m, v, c):
            kernel(op, rows, cols, m, ld, v, inc, c)
    if out is None:
        out = np.empty(want, dtype=a.dtype)
        _remember(a, b, run, want)
    run(a, b, out)
    return out


def _gemm_batch(t: str, a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray], s: int) -> np.ndarray:
    batches = {x.shape[0] for x in (a, b) if x.ndim == 3}
    if len(batches - {1}) > 1:
        return np.matmul(a, b, out=out)       # batches that do not broadcast: NumPy raises its own error
    nb = max(batches)
    m, k = a.shape[-2:]
    k2, n = b.shape[-2:]
    la = _layout(a.shape[-2:], a.strides[-2:], s)
    lb = _layout(b.shape[-2:], b.strides[-2:], s)
    sa = _batch_stride(a, s) if a.ndim == 3 else 0
    sb = _batch_stride(b, s) if b.ndim == 3 else 0
    if k != k2 or la is None or lb is None or sa is None or sb is None \
            or max(m, n, k, la[1], lb[1], nb, sa, sb, m * n) > _INT_MAX:
        return np.matmul(a, b, out=out)
    if (out is not None and out.shape != (nb, m, n)) or _small_for_ctypes(m * n * k * nb):
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((nb, m, n), dtype=a.dtype)
    _kernel(t + "batch")(la[0], lb[0], m, n, k, a if a.ndim == 3 else a[None], la[1], sa,
                         b if b.ndim == 3 else b[None], lb[1], sb, out, nb)
    return out

