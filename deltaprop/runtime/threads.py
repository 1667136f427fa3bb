"""The threads of the matrix products and of the parallel numba kernels: one pool, or pools that yield.

Two thread pools that spin on the same cores starve each other: on a 2-core AMD EPYC, numba's GNU OpenMP
threads, spinning after every parallel kernel (OpenMP's default wait policy), took the core NumPy's OpenBLAS
threads needed, and a training step ran 4–13× slower than with numba off (issue 17, docs/core.md "One pool of
threads"). What ``start`` sets up, before any pool exists, depends on the library of the products:

- ``shared``: MKL runs on GNU OpenMP (``libgomp``), the pool numba's kernels use: one pool whose threads stay
  hot between products and kernels (OpenMP's default wait policy);
- ``passive``: NumPy's BLAS (OpenBLAS) keeps its own pthreads: ``libgomp`` is loaded with
  ``OMP_WAIT_POLICY=PASSIVE``, so numba's threads sleep as soon as a kernel ends and never sit on a core the
  products need. When ``libgomp`` was loaded before deltaprop could set that (a wait policy is read once, when
  the library loads), numba's kernels go to its ``workqueue`` layer, whose threads do not spin either.

Nothing happens at import: ``start`` runs on first use (the first product or parallel kernel), or from
``deltaprop.tune()``. The environment is restored right after the pool started, so child processes see the
variables as the user left them. ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``NUMBA_THREADING_LAYER`` and
``NUMBA_THREADING_LAYER_PRIORITY``, when set by the user, are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Dict, List, Optional

_started: Optional[str] = None       # the design in use once started: "shared", "passive"
_record: Dict[str, object] = {}      # what start() found and did (``describe``)
_gomp = None                         # the loaded libgomp (RTLD_GLOBAL), or None
_USER_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_OMP_FIRST = ["omp", "tbb", "workqueue"]


def loaded_library_paths() -> List[str]:
    """Paths of the shared libraries mapped into this process, in the order they were mapped, each once (Linux
    ``/proc/self/maps``; empty elsewhere)."""
    out: Dict[str, None] = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and ".so" in parts[-1]:
                    out[parts[-1]] = None
    except OSError:
        pass
    return list(out)


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
    """The libgomp handle once ``start`` loaded it (for ``blas``'s GNU threading layer), else None."""
    return _gomp


def started() -> Optional[str]:
    """The design in use ("shared" or "passive"), or None before the first use."""
    return _started


def start(design: str) -> str:
    """Set up the pools for ``design`` ("shared": MKL and numba on one GNU OpenMP pool; "passive": numba's threads
    sleep between kernels) once per process, before any pool exists; later calls return the design in use."""
    global _started, _gomp
    if _started is not None:
        return _started
    if design not in ("shared", "passive"):
        raise ValueError(f"threads.start: unknown design {design!r}")
    from . import jit as _numba
    _started = design
    _record.update({"design": design, "libgomp_loaded_before": _gomp_loaded(),
                    "user_wait_vars": {k: os.environ[k] for k in _USER_WAIT_VARS if k in os.environ}})
    if _numba.numba_module() is not None:
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
    from . import jit as _numba
    nb = _numba.numba_module()
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
            _numba.disable_parallel()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _record["wait_policy"] = _wait_policy(_started, user_set, _record["libgomp_loaded_before"], passive_ok)
    if _started == "passive":
        from . import blas
        _record["openblas_release"] = blas.enable_openblas_release()


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
