"""Matrix products through the fastest BLAS on this machine: ``blas.matmul`` is ``np.matmul`` for the shapes
the layers use, run by Intel oneMKL when it serves this CPU better than NumPy's own BLAS.

NumPy's PyPI wheels call OpenBLAS. On Intel CPUs, oneMKL (PyPI package ``mkl``, installed by the ``fast`` extra
on x86-64; PyTorch's CPU build links the same library) runs the products of the dense and convolutional layers
faster: on this project's 2-core Xeon the MLP's forward product 784→256 at batch 64 took 142 µs against 222 µs
(``bench/README.md`` has the measured table). Which one is faster depends on the CPU, the libraries' versions and
the core count, so ``auto`` measures it.

Choice of library (``DELTAPROP_BLAS``, or ``set_backend`` at run time), made on first use (the first product),
never at import:

- ``auto`` (default): the faster of the two on this machine, measured once by ``deltaprop.calibrate`` (the
  engine's products with the numba kernels in between, well under a second) and cached per machine; NumPy's
  own BLAS when MKL is not installed;
- ``mkl``: MKL wherever it loads (an error names the problem when it does not);
- ``numpy``: always ``np.matmul``.

The threads of the products are set up with the library (``deltaprop.threads``): MKL on GNU OpenMP shares one
pool with the numba kernels; NumPy's BLAS keeps its own and numba's threads sleep between kernels.

MKL is called through ``ctypes`` (``cblas_?gemm``, ``cblas_?gemm_batch_strided``, ``cblas_?gemv``) on the arrays'
own memory: row-major operands, or transposed views of them, are passed with the transpose flag and leading
dimension, never copied. Anything else (other dtypes, odd strides, empty or huge shapes, more than 3 dimensions)
goes to ``np.matmul``, which gives the same result up to float rounding.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .settings import env_choice, env_flag
from ..errors import DeltapropError

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_INT_MAX = 2 ** 31 - 1          # MKL's LP64 interface: 32-bit sizes
_FLOATS = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}
BACKENDS = ("auto", "mkl", "numpy")   # the values of DELTAPROP_BLAS and set_backend

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
_ready = False                  # a library was chosen (first use, ``ensure``, or ``set_backend``)
_ensuring = False
_choice: Dict[str, object] = {}  # how the library was chosen (``deltaprop.calibrate``'s record for ``auto``)
CTYPES_MIN_MACS = 1 << 18       # OpenBLAS's own one-thread limit (65536 × GEMM_MULTITHREAD_THRESHOLD 4)
_load_error: Optional[str] = None
_threading: Optional[str] = None  # MKL's threading layer once chosen: "gnu", "intel", or MKL_THREADING_LAYER's value
_MKL_THREADING_GNU = 3            # MKL_Set_Threading_Layer codes: INTEL 0, SEQUENTIAL 1, PGI 2, GNU 3, TBB 4
_OMP_PAUSE_SOFT = 1               # omp_pause_resource_t (OpenMP 5.0)
_pause = None                     # libgomp's omp_pause_resource_all (OpenMP 5.0) when MKL runs on libgomp


class BlasError(DeltapropError):
    """The requested BLAS library cannot be used."""


def _candidates() -> List[str]:
    """Places where pip, conda or the system put ``libmkl_rt``."""
    names = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "mkl_rt.2.dll", "mkl_rt.dll", "libmkl_rt.dylib"]
    dirs = []
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, sys.exec_prefix]):
        dirs += [Path(prefix) / "lib", Path(prefix) / "Library" / "bin"]
    try:
        import site
        dirs.append(Path(site.getuserbase()) / "lib")
    except Exception:  # pragma: no cover - site can be unusual in embedded interpreters
        pass
    out = [str(d / n) for d in dirs for n in names if (d / n).exists()]
    found = ctypes.util.find_library("mkl_rt")
    if found:
        out.append(found)
    return out


@functools.lru_cache(maxsize=None)
def _cpu_vendor() -> str:
    """'intel', 'amd' or 'other' (from /proc/cpuinfo, else the platform string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return "intel" if v == "GenuineIntel" else "amd" if v == "AuthenticAMD" else "other"
    except OSError:
        pass
    import platform
    p = platform.processor().lower()
    return "intel" if "intel" in p else "amd" if "amd" in p else "other"


def _load() -> Optional[str]:
    """Load libmkl_rt and declare its functions; returns None, or why it failed."""
    global _lib
    if _lib is not None:
        return None
    paths = _candidates()
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
    _choose_threading(lib)
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


def _choose_threading(lib) -> None:
    """Run MKL on GNU OpenMP (``libgomp``) when it can: one pool of threads, which the library can hand back.

    - With numba's parallel kernels on GNU OpenMP (``functional/_numba.py``), the products and the kernels
      share that one pool.
    - Without numba (the NumPy path), GNU OpenMP's pool can be released between products
      (``release_threads``), so the NumPy passes can use the cores while MKL is idle; Intel OpenMP's threads
      spin for 200 ms after each product and take a core from any other thread.

    Must come before MKL's first call; ``deltaprop.threads`` has loaded ``libgomp`` by then.
    ``MKL_THREADING_LAYER``, when set, is left to MKL; when ``libgomp`` did not load, or numba's kernels run on
    another layer, MKL keeps its default (Intel OpenMP)."""
    global _threading, _pause
    if "MKL_THREADING_LAYER" in os.environ:
        _threading = os.environ["MKL_THREADING_LAYER"].lower()
        return
    from . import threads
    from . import jit as _numba
    _threading = "intel"
    if not hasattr(lib, "MKL_Set_Threading_Layer"):
        return
    gomp = threads.gomp()
    if gomp is None or not (_numba.omp_available() or _numba.numba_module() is None):
        return
    lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
    lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
    if lib.MKL_Set_Threading_Layer(_MKL_THREADING_GNU) == _MKL_THREADING_GNU:
        _threading = "gnu"
        _pause = getattr(gomp, "omp_pause_resource_all", None)
        if _pause is not None:
            _pause.argtypes = [ctypes.c_int]
            _pause.restype = ctypes.c_int


def release_threads(size: int = 0) -> bool:
    """Let the products' threads go before a NumPy pass of ``size`` elements is split over threads
    (``functional/_split.py``), so that the slices get the cores; the next product starts them again.

    - MKL on GNU OpenMP: ``omp_pause_resource_all``, for any size (measured: no slower).
    - NumPy's OpenBLAS: ``blas_thread_shutdown_`` (``openblas_stopper``) for passes of at least
      ``OPENBLAS_PASS_MIN`` elements. On a 2-vCPU Xeon the yolov3-tiny NumPy-path training step at 320 went from
      831 to 732 ms. Releasing for every split pass (2^18 elements) made LeNet's step 16% slower and the conv-BN
      net's 5%: a restart costs 0.1–0.2 ms, and now and then tens of ms.

    True when released. False with Intel OpenMP, whose idle threads keep spinning; for a smaller pass on
    OpenBLAS; or with ``DELTAPROP_OPENBLAS_RELEASE=0``. Called from the thread that runs the products. Never
    needed with numba: its kernels share MKL's pool, or follow ``enable_openblas_release``."""
    if _use_mkl:
        return _pause is not None and _pause(_OMP_PAUSE_SOFT) == 0   # set only when MKL runs on libgomp
    if size < OPENBLAS_PASS_MIN:
        return False
    stop, _ = openblas_stopper()
    if stop is None:
        return False
    stop()
    return True


OPENBLAS_PASS_MIN = 1 << 21     # NumPy path: OpenBLAS's threads are stopped before a split pass this large
RELEASE_BEFORE_KERNEL = 1 << 20  # numba path: ... before a parallel kernel over this many elements
_openblas_spinning = False      # numba path: a product ran since OpenBLAS's threads were last stopped
_openblas_shutdown = None       # NumPy's OpenBLAS's ``blas_thread_shutdown_`` once releasing is on (numba)
_openblas_found = None          # (blas_thread_shutdown_ or None, what), looked up once (``openblas_stopper``)


def _openblas_path() -> Optional[str]:
    """The first OpenBLAS library mapped into this process (NumPy's), or None."""
    from . import threads
    return next((p for p in threads.loaded_library_paths() if "openblas" in os.path.basename(p).lower()), None)


def openblas_stopper() -> Tuple[Optional[Callable[[], int]], str]:
    """NumPy's OpenBLAS's ``blas_thread_shutdown_`` (stops its threads; its next product starts them again), or
    None, and a line saying which: off under ``DELTAPROP_OPENBLAS_RELEASE=0``, without an OpenBLAS library or
    without the function. The library is looked up once per process."""
    global _openblas_found
    if not env_flag("DELTAPROP_OPENBLAS_RELEASE", True):
        return None, "off (DELTAPROP_OPENBLAS_RELEASE=0)"
    if _openblas_found is None:
        path = _openblas_path()
        if path is None:
            _openblas_found = (None, "off (no OpenBLAS library loaded)")
        else:
            try:
                fn = ctypes.CDLL(path).blas_thread_shutdown_
                fn.restype, fn.argtypes = ctypes.c_int, []
                _openblas_found = (fn, f"on ({os.path.basename(path)}: blas_thread_shutdown_)")
            except (OSError, AttributeError):
                _openblas_found = (None, f"off ({os.path.basename(path)} has no blas_thread_shutdown_)")
    return _openblas_found


def enable_openblas_release() -> str:
    """With NumPy's OpenBLAS and numba's kernels (``threads``' passive design): after a product, OpenBLAS's
    threads spin for about 2²⁸ cycles on the core that the numba kernels which follow need, and a parallel
    kernel run then is no faster than a serial one, often slower. So from here on each parallel kernel asks
    ``before_parallel_kernel`` first. A kernel over at least ``RELEASE_BEFORE_KERNEL`` elements stops OpenBLAS's
    threads (``blas_thread_shutdown_``; the next product starts them again) and runs in parallel. A smaller one
    runs its serial build on the core the product's caller holds.

    Measured on a 2-vCPU Xeon, paired in one process, against stopping them after each product of 2^20 outputs
    that ran 2 ms:

    - yolov3-tiny with numba: inference at 416, batch 1, 47.2 → 40.3 ms; at 320, batch 1, 27.8 → 25.8 ms;
      training at 320, 662 → 626 ms;
    - the conv-BN net's step: 21.7 → 20.3 ms;
    - LeNet and the MLP: unchanged or faster.

    Each restart costs 0.1–0.2 ms, and now and then tens of ms, so smaller kernels do not pay for one. Stopping
    before every parallel kernel of 2^20 elements while the small ones stayed parallel made the conv-BN step
    28 ms and LeNet's 27% slower.

    Needs no other thread to run an OpenBLAS product meanwhile (deltaprop's own threads do not).
    ``DELTAPROP_OPENBLAS_RELEASE=0`` turns it off. Returns what was done."""
    global _openblas_shutdown, _openblas_spinning
    fn, what = openblas_stopper()
    if fn is None:
        return what
    _openblas_shutdown, _openblas_spinning = fn, True
    return (f"on (before parallel kernels of at least 2^{RELEASE_BEFORE_KERNEL.bit_length() - 1} elements; "
            f"smaller ones run serially after a product)")


def disable_openblas_release() -> None:
    """Leave OpenBLAS's threads alone: every parallel kernel runs in parallel (tests compare both)."""
    global _openblas_shutdown, _openblas_spinning
    _openblas_shutdown, _openblas_spinning = None, False


def _np_matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """``np.matmul``, noting for ``before_parallel_kernel`` that OpenBLAS's threads may now spin."""
    global _openblas_spinning
    c = np.matmul(a, b, out=out)
    if _openblas_shutdown is not None:
        _openblas_spinning = True
    return c


def before_parallel_kernel(size: int) -> bool:
    """Whether a parallel numba kernel over ``size`` elements should run in parallel, called just before it
    runs (``_numba.jit``). With releasing on (``enable_openblas_release``) and a product since OpenBLAS's
    threads were last stopped: stop them and say yes for at least ``RELEASE_BEFORE_KERNEL`` elements, say no
    (the serial build) below. Otherwise yes."""
    global _openblas_spinning
    if not _openblas_spinning or _openblas_shutdown is None:
        return True
    if size < RELEASE_BEFORE_KERNEL:
        return False
    _openblas_shutdown()
    _openblas_spinning = False
    return True


def max_threads() -> int:
    """The number of threads MKL's products run on (its own setting, or threadpoolctl's limit); the CPU count
    when MKL is not in use."""
    if _use_mkl and _lib is not None and hasattr(_lib, "MKL_Get_Max_Threads"):
        return max(1, int(_lib.MKL_Get_Max_Threads()))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _after_fork_in_child() -> None:
    """A forked child cannot use the parent's OpenMP pool (GNU OpenMP would hang): MKL runs on one thread."""
    if _lib is not None and _threading == "gnu" and hasattr(_lib, "MKL_Set_Num_Threads"):
        _lib.MKL_Set_Num_Threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    return env_choice("DELTAPROP_BLAS", "auto", BACKENDS)


def set_backend(name: str = "auto") -> str:
    """Choose the library for ``matmul``: "auto", "mkl" or "numpy"; returns the one in use ("mkl"/"numpy").
    ``auto`` takes the calibrated choice (``deltaprop.calibrate``: cached per machine, measured on a miss).
    With numba (and ``DELTAPROP_NUMBA`` not 0) MKL is called through compiled wrappers; without it through
    ctypes, whose ~10 µs per call only pays off on products of at least ``CTYPES_MIN_MACS`` multiply-adds
    (smaller ones stay with NumPy, whose BLAS runs them on one thread). The threads are set up for the library
    chosen first in the process (``deltaprop.threads``); a later switch keeps them."""
    global _ready, _choice
    name = str(name).lower()
    if name not in BACKENDS:
        raise BlasError(f"set_backend: expected 'auto', 'mkl' or 'numpy', got {name!r}")
    _ready = True
    if name == "auto":
        from . import calibrate
        _choice = calibrate.choose()
        name = str(_choice["choice"])
    else:
        _choice = {"choice": name, "reason": "set by DELTAPROP_BLAS or set_backend"}
    return use(name)


def use(name: str) -> str:
    """Put ``name`` ("mkl" or "numpy") in use for ``matmul``, starting the threads for it if none run yet
    (``set_backend`` without the calibration; ``deltaprop.calibrate`` times each library through it)."""
    global _use_mkl, _via_numba, _backend, _load_error
    from . import threads
    from . import jit as _numba
    _use_mkl = False
    _plans.clear()
    if name == "mkl":
        if threads.started() is None:
            threads.start("shared")
        _load_error = _load()
        if _load_error:
            raise BlasError(f"MKL requested but unusable: {_load_error}")
        _use_mkl = True
    elif _numba.numba_module() is not None and threads.started() is None:
        threads.start("passive")
    _via_numba = _use_mkl and _numba.numba_module() is not None
    _backend = "mkl" if _use_mkl else "numpy"
    return _backend


def ensure() -> str:
    """Choose the library (``DELTAPROP_BLAS``, default ``auto``) and set up the threads, once per process: on the
    first product, the first parallel kernel, or ``deltaprop.tune()``. Also keeps freed memory for reuse
    (``deltaprop._malloc``). Returns the library in use."""
    global _ensuring
    if _ready or _ensuring:
        return _backend
    _ensuring = True
    try:
        from . import malloc as _malloc
        _malloc.tune()
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
    from . import threads
    ensure()
    return {"backend": _backend, "calls": ("numba" if _via_numba else "ctypes") if _use_mkl else "numpy",
            "cpu_vendor": _cpu_vendor(), "mkl_loaded": _lib is not None,
            "mkl_error": _load_error, "mkl_threading": _threading,
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

