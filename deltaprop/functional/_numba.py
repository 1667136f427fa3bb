"""Optional numba acceleration (extra ``deltaprop[fast]``). Kernels decorated with ``jit`` compile lazily
when numba is importable and ``DELTAPROP_NUMBA`` is not "0"; otherwise callers use their NumPy path,
which gives the same numbers.

Parallel kernels (``jit(parallel=True)``, loops over ``numba.prange``) run on numba's OpenMP threading layer,
which is GNU OpenMP (``libgomp``). ``deltaprop.blas`` then runs MKL on the same libgomp (MKL's GNU threading
layer): the matrix products and the parallel kernels share one pool of threads, which stay hot between them.
With two pools (MKL's Intel OpenMP and numba's), each pool's idle threads spin on the cores the other needs,
and the parallel kernels measured no faster than serial ones. ``NUMBA_THREADING_LAYER`` or
``NUMBA_THREADING_LAYER_PRIORITY``, when set, are left as they are.

Each parallel kernel also has a serial compilation of the same code, used for small arrays (below
``PARALLEL_MIN``, where starting the threads costs more than it saves) and in a process forked after
threads were started (GNU OpenMP cannot be used again in such a child; see ``in_forked_child``). Elementwise
kernels give the same numbers on every route.
"""
from __future__ import annotations

import os
import types
from typing import Callable, Optional

from .._env import env_flag, env_int

try:            # the loop of parallel kernels (numba knows it by identity); plain ``range`` without numba
    from numba import prange
except Exception:  # pragma: no cover - numba absent or broken: kernels are then never compiled
    prange = range

_numba = None
_checked = False
_wanted: Optional[bool] = None   # set_enabled's choice; None: DELTAPROP_NUMBA decides
_forked = False
# elements: below this a parallel kernel runs its serial compilation (DELTAPROP_PARALLEL_MIN overrides it)
PARALLEL_MIN = env_int("DELTAPROP_PARALLEL_MIN", 1 << 15)
_OMP_FIRST = ["omp", "tbb", "workqueue"]


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked from one that had imported deltaprop: parallel kernels run serially there
    (an OpenMP pool started by the parent cannot be reused after ``fork``)."""
    return _forked


def _prefer_omp(numba) -> None:
    """Put numba's OpenMP layer first, unless the user chose a threading layer."""
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    try:
        numba.config.THREADING_LAYER_PRIORITY = list(_OMP_FIRST)
    except AttributeError:  # pragma: no cover - numba older than 0.55
        pass


def omp_available() -> bool:
    """Whether numba's parallel kernels will run on GNU OpenMP (``libgomp``), the pool MKL can share."""
    nb = numba_module()
    if nb is None:
        return False
    layer = os.environ.get("NUMBA_THREADING_LAYER", "")
    if layer and layer not in ("omp", "default", "safe", "forksafe"):
        return False
    try:
        from numba.np.ufunc import omppool
    except ImportError:
        return False
    return getattr(omppool, "openmp_vendor", "") == "GNU"


def numba_module():
    """The numba module, or None when it is absent or disabled (DELTAPROP_NUMBA=0)."""
    global _numba, _checked
    if not _checked:
        _checked = True
        _numba = None
        if env_flag("DELTAPROP_NUMBA", True) if _wanted is None else _wanted:
            try:
                import numba  # noqa: F401
                _numba = numba
                _prefer_omp(numba)
            except ImportError:
                _numba = None
    return _numba


def enabled() -> bool:
    """True when numba kernels will be used."""
    return numba_module() is not None


def set_enabled(flag: bool) -> None:
    """Turn the numba kernels on or off at run time (tests compare both paths)."""
    global _numba, _checked, _wanted
    _wanted = bool(flag)
    if flag:
        _checked = False
        numba_module()
    else:
        _numba, _checked = None, True


def _renamed(f: Callable, suffix: str) -> Callable:
    """A copy of function ``f`` whose ``__qualname__`` ends with ``suffix``."""
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    return g


def inline(fn: Callable) -> Callable:
    """A helper of kernels, compiled with each ``jit`` kernel that calls it (numba's ``register_jitable``; LLVM
    inlines it, and the kernels measured as fast as with the lines written out); the plain function where numba
    is not installed. numba's own ``inline="always"`` raised SSA warnings and made a kernel 8× slower.

    Call it only from kernels of its own module: numba's on-disk cache checks the kernel's source file, so a
    change to a helper in another module would leave the cached kernels that inline it stale."""
    try:
        from numba.extending import register_jitable
    except ImportError:
        return fn
    return register_jitable(fn)


def jit(fn: Callable = None, **options) -> Callable:
    """``numba.njit(cache=True, fastmath=False, **options)`` applied lazily on first call.

    The wrapper's ``.compiled()`` returns the compiled function, or None without numba. With
    ``parallel=True``, ``.compiled(n)`` returns the parallel compilation for ``n >= PARALLEL_MIN`` elements
    and the serial one (the same code, ``prange`` as ``range``) for smaller ``n`` or in a forked child.
    """
    parallel = bool(options.pop("parallel", False))

    def deco(f: Callable):
        state = {}

        def compiled(n: Optional[int] = None) -> Optional[Callable]:
            nb = numba_module()
            if nb is None:
                return None
            par = parallel and not _forked and (n is None or n >= PARALLEL_MIN)
            c = state.get(par)
            if c is None:
                # numba's on-disk cache keys by qualified name, not by flags: the serial build of a
                # parallel kernel is compiled from a renamed copy so the two never load each other's code
                src = _renamed(f, "__serial") if parallel and not par else f
                c = state[par] = nb.njit(cache=True, parallel=par, **options)(src)
            return c

        def call(*args):
            c = compiled()
            if c is None:
                raise RuntimeError(f"{f.__name__}: numba is not available; use the NumPy path")
            return c(*args)
        call.compiled = compiled
        call.parallel = parallel
        call.py = f
        call.__name__ = f.__name__
        call.__doc__ = f.__doc__
        return call
    return deco(fn) if fn is not None else deco
