"""The thread policy of deltaprop, all of it: which pools run the matrix products and the parallel numba kernels,
when a kernel runs in parallel, when the products' threads are handed back, and how many threads there are.

Two thread pools that spin on the same cores starve each other: on a 2-core AMD EPYC, numba's GNU OpenMP
threads, spinning after every parallel kernel (OpenMP's default wait policy), took the core NumPy's OpenBLAS
threads needed, and a training step ran 4–13× slower than with numba off (issue 17, docs/runtime.md "Threads").
What ``start`` sets up, before any pool exists, depends on the library of the products (``design_for``):

- ``shared``: MKL runs on GNU OpenMP (``libgomp``), the pool numba's kernels use: one pool whose threads stay
  hot between products and kernels (OpenMP's default wait policy);
- ``passive``: NumPy's BLAS (OpenBLAS) keeps its own pthreads: ``libgomp`` is loaded with
  ``OMP_WAIT_POLICY=PASSIVE``, so numba's threads sleep as soon as a kernel ends and never sit on a core the
  products need. When ``libgomp`` was loaded before deltaprop could set that (a wait policy is read once, when
  the library loads), numba's kernels go to its ``workqueue`` layer, whose threads do not spin either.

Then, while the engine runs:

- a parallel kernel runs its serial build below ``PARALLEL_MIN`` elements, in a forked child, and where
  OpenBLAS's threads still spin after a product (``parallel_build``, ``before_parallel_kernel``);
- the products' threads are handed back before a NumPy pass is split over the cores (``release_threads``);
- ``max_threads`` is how many slices such a pass gets; ``limit_blas_threads`` caps the products' threads.

Nothing happens at import: ``start`` runs on first use (the first product or parallel kernel), or from
``deltaprop.tune()``. The environment is restored right after the pool started, so child processes see the
variables as the user left them. ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``NUMBA_THREADING_LAYER``,
``NUMBA_THREADING_LAYER_PRIORITY`` and ``MKL_THREADING_LAYER``, when set by the user, are left alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from typing import Callable, Dict, List, Optional, Tuple

from . import machine, numba_loader, settings

# elements: below this a parallel kernel runs its serial compilation (starting the threads costs more)
PARALLEL_MIN = settings.get("DELTAPROP_PARALLEL_MIN")
OPENBLAS_PASS_MIN = 1 << 21      # NumPy path: OpenBLAS's threads are stopped before a split pass this large
RELEASE_BEFORE_KERNEL = 1 << 20  # numba path: ... before a parallel kernel over this many elements

_started: Optional[str] = None       # the design in use once started: "shared", "passive"
_record: Dict[str, object] = {}      # what start() found and did (``describe``)
_gomp = None                         # the loaded libgomp (RTLD_GLOBAL), or None
_USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_OMP_FIRST = ["omp", "tbb", "workqueue"]
_on_mkl = False                      # the products run on MKL (``products_on``)
_mkl = None                          # libmkl_rt once loaded (``choose_mkl_threading``)
_mkl_threading: Optional[str] = None  # "gnu", "intel", or MKL_THREADING_LAYER's value
_MKL_THREADING_GNU = 3               # MKL_Set_Threading_Layer codes: INTEL 0, SEQUENTIAL 1, PGI 2, GNU 3, TBB 4
_OMP_PAUSE_SOFT = 1                  # omp_pause_resource_t (OpenMP 5.0)
_pause = None                        # libgomp's omp_pause_resource_all when MKL runs on libgomp
_forked = False                      # this process was forked after deltaprop was imported
_serial_only = False                 # numba has no usable threading layer: parallel kernels run serially
_openblas_found = None               # (blas_thread_shutdown_ or None, what), looked up once (``openblas_stopper``)


class OpenBLASSpin:
    """The numba path's view of NumPy's OpenBLAS threads: ``stop`` (``blas_thread_shutdown_``) while releasing is
    on (``enable_openblas_release``), and whether a product ran since they were last stopped (``spinning``, set by
    ``blas``'s NumPy product)."""
    __slots__ = ("stop", "spinning")

    def __init__(self) -> None:
        self.stop: Optional[Callable[[], int]] = None
        self.spinning = False


openblas = OpenBLASSpin()


# --- the pools --------------------------------------------------------------------------------------------------

def loaded_library_paths() -> List[str]:
    """Paths of the shared libraries mapped into this process, in order, each once (``machine``)."""
    return machine.loaded_library_paths()


def loaded_libraries() -> set:
    """File names of the shared libraries mapped into this process (``loaded_library_paths``)."""
    return {os.path.basename(p) for p in loaded_library_paths()}


def _gomp_loaded() -> bool:
    return any(name.startswith("libgomp.so") for name in loaded_libraries())


def _load_gomp():
    """``libgomp`` loaded with its symbols global (MKL's GNU threading layer links against it), or None."""
    for name in ("libgomp.so.1", ctypes.util.find_library("gomp")):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        except OSError:
            continue
    return None


def gomp():
    """The libgomp handle once ``start`` loaded it, else None."""
    return _gomp


def started() -> Optional[str]:
    """The design in use ("shared" or "passive"), or None before the first use."""
    return _started


def design_for(library: Optional[str]) -> Optional[str]:
    """The design for products on ``library``: "mkl" shares one GNU OpenMP pool with numba's kernels ("shared");
    "numpy" lets numba's threads sleep beside OpenBLAS's ("passive"), and needs no pool without numba (None);
    None (the calibration, which runs both libraries) "passive" with numba (safe beside either library), else
    "shared" (libgomp loaded for MKL's GNU layer)."""
    with_numba = numba_loader.numba_module() is not None
    if library == "mkl":
        return "shared"
    if library == "numpy":
        return "passive" if with_numba else None
    return "passive" if with_numba else "shared"


def start_for(library: Optional[str]) -> Optional[str]:
    """Start the pools for products on ``library`` (``design_for``) unless they run already; the design in use."""
    if _started is None:
        design = design_for(library)
        if design is not None:
            start(design)
    return _started


def start(design: str) -> str:
    """Set up the pools for ``design`` ("shared": MKL and numba on one GNU OpenMP pool; "passive": numba's threads
    sleep between kernels) once per process, before any pool exists; later calls return the design in use."""
    global _started, _gomp
    if _started is not None:
        return _started
    if design not in ("shared", "passive"):
        raise ValueError(f"threads.start: unknown design {design!r}")
    _started = design
    _record.update({"design": design, "libgomp_loaded_before": _gomp_loaded(),
                    "user_wait_vars": {k: os.environ[k] for k in _USER_WAIT_VARS if k in os.environ}})
    if numba_loader.numba_module() is not None:
        start_kernels()
    elif design == "shared":
        _gomp = _load_gomp()            # MKL's GNU threading layer needs it; OpenMP's default wait policy
    return _started


def start_kernels() -> None:
    """Start numba's pool for the design in use (``start`` does, or the first parallel kernel when numba was
    switched on later): the wait policy is in the environment only while libgomp loads and numba's threads start."""
    global _gomp
    if _record.get("numba_layer") is not None or _started is None:
        return
    nb = numba_loader.numba_module()
    if nb is None:
        return
    user_set = _record["user_wait_vars"]
    saved = {k: os.environ.get(k) for k in _USER_WAIT_VARS}
    passive_ok = True
    if _started == "passive" and not user_set:
        if _gomp_loaded() and _gomp is None:
            passive_ok = False            # libgomp read its wait policy already: keep numba's kernels off it
        else:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        if _gomp is None and passive_ok:
            _gomp = _load_gomp()
        if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
            nb.config.THREADING_LAYER_PRIORITY = list(_OMP_FIRST) if passive_ok else ["workqueue", "tbb", "omp"]
        try:
            from numba.np.ufunc import parallel
            parallel._launch_threads()    # numba's pool starts now, while the variables are set
            _record["numba_layer"] = nb.threading_layer()
            _record["numba_threads"] = nb.get_num_threads()
        except Exception as exc:  # noqa: BLE001 - numba without a usable threading layer: kernels run serially
            _record["numba_layer"] = f"none ({type(exc).__name__}: {exc})"
            disable_parallel()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _record["wait_policy"] = _wait_policy(_started, user_set, _record["libgomp_loaded_before"], passive_ok)
    if _started == "passive":
        _record["openblas_release"] = enable_openblas_release()


def _wait_policy(design: str, user_set: dict, before: bool, passive_ok: bool) -> str:
    if user_set:
        return "as set by the user: " + ", ".join(f"{k}={v}" for k, v in user_set.items())
    if design == "shared":
        return ("OpenMP default (threads spin briefly, then sleep)" if not before
                else "as libgomp was loaded before deltaprop")
    if passive_ok:
        return "passive (OMP_WAIT_POLICY=PASSIVE while libgomp loaded)"
    return "libgomp was loaded before deltaprop: numba kernels moved to the workqueue layer"


def describe() -> Dict[str, object]:
    """What ``start`` set up: design, numba's threading layer and thread count, the wait policy and why."""
    out = {"design": _started}
    out.update(_record)
    if _started is None:
        out["wait_policy"] = "not started yet (first product or parallel kernel)"
    elif "wait_policy" not in out:
        out["wait_policy"] = ("OpenMP default (MKL's pool; numba off)" if _gomp is not None
                              else "no OpenMP pool (numba off, NumPy's BLAS)")
    return out


def omp_available() -> bool:
    """Whether numba's parallel kernels run on GNU OpenMP (``libgomp``), the pool MKL can share; known once the
    pools started (False before)."""
    return numba_loader.numba_module() is not None and str(describe().get("numba_layer")) == "omp" \
        and _omp_vendor() == "GNU"


def _omp_vendor() -> str:
    try:
        from numba.np.ufunc import omppool
    except ImportError:
        return ""
    return getattr(omppool, "openmp_vendor", "")


# --- MKL's threads --------------------------------------------------------------------------------------------

def choose_mkl_threading(lib) -> str:
    """Run MKL (``lib``, just loaded, before its first call) on GNU OpenMP (``libgomp``) when it can: one pool of
    threads, which the library can hand back. Returns the layer: "gnu", "intel", or ``MKL_THREADING_LAYER``'s.

    - With numba's parallel kernels on GNU OpenMP, the products and the kernels share that one pool.
    - Without numba (the NumPy path), GNU OpenMP's pool can be released between products (``release_threads``),
      so the NumPy passes can use the cores while MKL is idle; Intel OpenMP's threads spin for 200 ms after each
      product and take a core from any other thread.

    ``start`` has loaded ``libgomp`` by then. ``MKL_THREADING_LAYER``, when set, is left to MKL; when ``libgomp``
    did not load, or numba's kernels run on another layer, MKL keeps its default (Intel OpenMP)."""
    global _mkl, _mkl_threading, _pause
    _mkl = lib
    if "MKL_THREADING_LAYER" in os.environ:
        _mkl_threading = os.environ["MKL_THREADING_LAYER"].lower()
        return _mkl_threading
    _mkl_threading = "intel"
    if not hasattr(lib, "MKL_Set_Threading_Layer"):
        return _mkl_threading
    if _gomp is None or not (omp_available() or numba_loader.numba_module() is None):
        return _mkl_threading
    lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
    lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
    if lib.MKL_Set_Threading_Layer(_MKL_THREADING_GNU) == _MKL_THREADING_GNU:
        _mkl_threading = "gnu"
        _pause = getattr(_gomp, "omp_pause_resource_all", None)
        if _pause is not None:
            _pause.argtypes = [ctypes.c_int]
            _pause.restype = ctypes.c_int
    return _mkl_threading


def mkl_threading() -> Optional[str]:
    """MKL's threading layer once MKL loaded ("gnu", "intel", or ``MKL_THREADING_LAYER``'s value), else None."""
    return _mkl_threading


def products_on(library: str) -> None:
    """Told by ``blas.use``: the products now run on ``library`` ("mkl" or "numpy")."""
    global _on_mkl
    _on_mkl = library == "mkl"


def max_threads() -> int:
    """The number of threads MKL's products run on (its own setting, or threadpoolctl's limit); the usable cores
    when MKL is not in use. A NumPy pass split over the batch gets this many slices at most."""
    if _on_mkl and _mkl is not None and hasattr(_mkl, "MKL_Get_Max_Threads"):
        return max(1, int(_mkl.MKL_Get_Max_Threads()))
    return max(1, machine.usable_cores())


def kernel_threads() -> int:
    """The threads numba's parallel kernels run on (its pool, once started; else the usable cores): how many
    blocks a kernel that calls the library on each of its threads (``fast/cblas.py``) splits its work into. Not
    ``max_threads``: inside ``cblas.one_thread()`` MKL's own setting is 1."""
    return max(1, int(_record.get("numba_threads") or machine.usable_cores()))


def product_threads(requested: Optional[int], default: int) -> int:
    """The products' thread count for a command: ``requested`` (its ``--threads``) when given, else
    ``DELTAPROP_BLAS_THREADS``, else ``default`` (0: the library's own count)."""
    if requested:
        return int(requested)
    from_env = settings.get("DELTAPROP_BLAS_THREADS")
    return default if from_env is None else from_env


def limit_blas_threads(n: Optional[int]) -> "contextlib.AbstractContextManager":
    """A context limiting the BLAS library to ``n`` threads (through threadpoolctl, when installed); does nothing
    for ``n`` None/0 or without threadpoolctl."""
    if not n:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


# --- parallel kernels -----------------------------------------------------------------------------------------

def parallel_build(n: Optional[int]) -> bool:
    """Whether a parallel kernel over ``n`` elements (None: unknown) runs its parallel build: not below
    ``PARALLEL_MIN``, not in a forked child, not without a threading layer, and not while OpenBLAS's threads
    spin (``before_parallel_kernel``)."""
    par = not _forked and not _serial_only and (n is None or n >= PARALLEL_MIN)
    if par and n is not None:
        par = before_parallel_kernel(n)
    return par


def in_forked_child() -> bool:
    """True in a process forked from one that had imported deltaprop: parallel kernels run serially there
    (an OpenMP pool started by the parent cannot be reused after ``fork``)."""
    return _forked


def disable_parallel() -> None:
    """Run every parallel kernel's serial build (numba found no threading layer it can use)."""
    global _serial_only
    _serial_only = True


def serial_only() -> bool:
    """Whether ``disable_parallel`` was called."""
    return _serial_only


def _after_fork_in_child() -> None:
    """A forked child cannot use the parent's OpenMP pool (GNU OpenMP would hang): the kernels run serially and
    MKL on one thread."""
    global _forked
    _forked = True
    if _mkl is not None and _mkl_threading == "gnu" and hasattr(_mkl, "MKL_Set_Num_Threads"):
        _mkl.MKL_Set_Num_Threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- handing the products' threads back -----------------------------------------------------------------------

def release_threads(size: int = 0) -> bool:
    """Let the products' threads go before a NumPy pass of ``size`` elements is split over threads
    (``fast/split.py``), so that the slices get the cores; the next product starts them again.

    - MKL on GNU OpenMP: ``omp_pause_resource_all``, for any size (measured: no slower).
    - NumPy's OpenBLAS: ``blas_thread_shutdown_`` (``openblas_stopper``) for passes of at least
      ``OPENBLAS_PASS_MIN`` elements. On a 2-vCPU Xeon the yolov3-tiny NumPy-path training step at 320 went from
      831 to 732 ms. Releasing for every split pass (2^18 elements) made LeNet's step 16% slower and the conv-BN
      net's 5%: a restart costs 0.1–0.2 ms, and now and then tens of ms.

    True when released. False with Intel OpenMP, whose idle threads keep spinning; for a smaller pass on
    OpenBLAS; or with ``DELTAPROP_OPENBLAS_RELEASE=0``. Called from the thread that runs the products. Never
    needed with numba: its kernels share MKL's pool, or follow ``enable_openblas_release``."""
    if _on_mkl:
        return _pause is not None and _pause(_OMP_PAUSE_SOFT) == 0   # set only when MKL runs on libgomp
    if size < OPENBLAS_PASS_MIN:
        return False
    stop, _ = openblas_stopper()
    if stop is None:
        return False
    stop()
    return True


def _openblas_path() -> Optional[str]:
    """The first OpenBLAS library mapped into this process (NumPy's), or None."""
    return next((p for p in loaded_library_paths() if "openblas" in os.path.basename(p).lower()), None)


def openblas_stopper() -> Tuple[Optional[Callable[[], int]], str]:
    """NumPy's OpenBLAS's ``blas_thread_shutdown_`` (stops its threads; its next product starts them again), or
    None, and a line saying which: off under ``DELTAPROP_OPENBLAS_RELEASE=0``, without an OpenBLAS library or
    without the function. The library is looked up once per process."""
    global _openblas_found
    if not settings.get("DELTAPROP_OPENBLAS_RELEASE"):
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
    """With NumPy's OpenBLAS and numba's kernels (the passive design): after a product, OpenBLAS's threads spin
    for about 2²⁸ cycles on the core that the numba kernels which follow need, and a parallel kernel run then is
    no faster than a serial one, often slower. So from here on each parallel kernel asks
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
    fn, what = openblas_stopper()
    if fn is None:
        return what
    openblas.stop, openblas.spinning = fn, True
    return (f"on (before parallel kernels of at least 2^{RELEASE_BEFORE_KERNEL.bit_length() - 1} elements; "
            f"smaller ones run serially after a product)")


def disable_openblas_release() -> None:
    """Leave OpenBLAS's threads alone: every parallel kernel runs in parallel (tests compare both)."""
    openblas.stop, openblas.spinning = None, False


def before_parallel_kernel(size: int) -> bool:
    """Whether a parallel numba kernel over ``size`` elements should run in parallel, called just before it
    runs (``parallel_build``). With releasing on (``enable_openblas_release``) and a product since OpenBLAS's
    threads were last stopped: stop them and say yes for at least ``RELEASE_BEFORE_KERNEL`` elements, say no
    (the serial build) below. Otherwise yes."""
    if not openblas.spinning or openblas.stop is None:
        return True
    if size < RELEASE_BEFORE_KERNEL:
        return False
    openblas.stop()
    openblas.spinning = False
    return True
