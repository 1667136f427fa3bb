"""Optional numba acceleration (extra ``deltaprop[fast]``). Kernels decorated with ``jit`` compile lazily
when numba is importable and ``DELTAPROP_NUMBA`` is not "0"; otherwise callers use their NumPy path,
which gives the same numbers.

Parallel kernels (``jit(parallel=True)``, loops over ``prange``) run on numba's threading layer, set up by
``deltaprop.threads`` before the first one runs: GNU OpenMP shared with MKL's products, or with a wait policy
that lets the threads sleep between kernels when NumPy's BLAS runs the products on its own threads
(docs/core.md, "One pool of threads"). Nothing here imports numba at import time: ``prange`` and the
``inline`` helpers are bound to numba's when the first kernel compiles.

Each parallel kernel also has a serial compilation of the same code, used for small arrays (below
``PARALLEL_MIN``, where starting the threads costs more than it saves) and in a process forked after
threads were started (GNU OpenMP cannot be used again in such a child; see ``in_forked_child``). Elementwise
kernels give the same numbers on every route.
"""
from __future__ import annotations

import os
import types
from typing import Callable, Optional

from .settings import env_flag, env_int

# The loop of parallel kernels: ``range`` here; a kernel module's ``prange`` is rebound to numba's (which numba
# knows by identity) just before its first kernel compiles, so ``import deltaprop`` does not import numba.
prange = range

_numba = None
_imported = None                  # the numba module once imported, kept when ``set_enabled(False)`` comes later
_checked = False
_wanted: Optional[bool] = None   # set_enabled's choice; None: DELTAPROP_NUMBA decides
_forked = False
_serial_only = False              # numba has no usable threading layer: parallel kernels run their serial build
_pending_inline = []              # ``inline`` helpers declared before numba was imported
# elements: below this a parallel kernel runs its serial compilation (DELTAPROP_PARALLEL_MIN overrides it)
PARALLEL_MIN = env_int("DELTAPROP_PARALLEL_MIN", 1 << 15)


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked from one that had imported deltaprop: parallel kernels run serially there
    (an OpenMP pool started by the parent cannot be reused after ``fork``)."""
    return _forked


def disable_parallel() -> None:
    """Run every parallel kernel's serial build (numba found no threading layer it can use)."""
    global _serial_only
    _serial_only = True


def omp_available() -> bool:
    """Whether numba's parallel kernels run on GNU OpenMP (``libgomp``), the pool MKL can share; known once
    ``deltaprop.threads`` started the pools (False before)."""
    from . import threads
    return numba_module() is not None and str(threads.describe().get("numba_layer")) == "omp" \
        and _omp_vendor() == "GNU"


def _omp_vendor() -> str:
    try:
        from numba.np.ufunc import omppool
    except ImportError:
        return ""
    return getattr(omppool, "openmp_vendor", "")


def numba_module():
    """The numba module, or None when it is absent or disabled (DELTAPROP_NUMBA=0)."""
    global _numba, _checked, _imported
    if not _checked:
        _checked = True
        _numba = None
        if env_flag("DELTAPROP_NUMBA", True) if _wanted is None else _wanted:
            try:
                import numba  # noqa: F401
                _numba = _imported = numba
                _register_inline()
            except ImportError:
                _numba = None
    return _numba


def _register_inline() -> None:
    from numba.extending import register_jitable
    while _pending_inline:
        register_jitable(_pending_inline.pop())


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
    if _numba is not None:
        from numba.extending import register_jitable
        return register_jitable(fn)
    _pending_inline.append(fn)     # registered when numba is imported (``numba_module``)
    return fn


def _largest(args) -> Optional[int]:
    """The most elements of any array among ``args`` (None when there is none): a parallel kernel's size."""
    sizes = [a.size for a in args if hasattr(a, "size") and hasattr(a, "shape")]
    return max(sizes) if sizes else None


def jit(fn: Callable = None, **options) -> Callable:
    """``numba.njit(cache=True, fastmath=False, **options)`` applied lazily on first call.

    The wrapper's ``.compiled()`` returns the compiled function, or None without numba. With
    ``parallel=True``, ``.compiled(n)`` returns the parallel compilation for ``n >= PARALLEL_MIN`` elements
    and the serial one (the same code, ``prange`` as ``range``) for smaller ``n``, in a forked child, or where
    ``blas.before_parallel_kernel`` says so (OpenBLAS's threads still spinning after a product).

    Calling the wrapper runs the kernel (a parallel one chooses by its largest array argument, ``_largest``).
    A backward follows the path its forward chose: called after
    ``set_enabled(False)`` in a process where numba was imported (a cache a numba forward made), it runs
    the serial compilation rather than failing; it raises only where numba was never imported.
    """
    parallel = bool(options.pop("parallel", False))

    def deco(f: Callable):
        state = {}

        def compiled(n: Optional[int] = None) -> Optional[Callable]:
            nb = numba_module()
            if nb is None:
                return None
            par = parallel and not _forked and not _serial_only and (n is None or n >= PARALLEL_MIN)
            if par and n is not None:
                from . import blas
                par = blas.before_parallel_kernel(n)
            c = state.get(par)
            if c is None:
                if par:
                    from . import blas
                    from . import threads
                    blas.ensure()          # the pools are set up before numba starts its threads
                    threads.start_kernels()
                    if _serial_only:
                        return compiled(n)
                c = build(nb, par)
            return c

        def build(nb, par: bool) -> Callable:
            if f.__globals__.get("prange") is range:
                f.__globals__["prange"] = nb.prange
            # numba's on-disk cache keys by qualified name, not by flags: the serial build of a
            # parallel kernel is compiled from a renamed copy so the two never load each other's code
            src = _renamed(f, "__serial") if parallel and not par else f
            c = state[par] = nb.njit(cache=True, parallel=par, **options)(src)
            return c

        def call(*args):
            c = compiled(_largest(args) if parallel else None)
            if c is None:
                if _imported is None:
                    raise RuntimeError(f"{f.__name__}: numba is not available; use the NumPy path")
                c = state.get(False) or build(_imported, False)   # switched off since the forward
            return c(*args)
        call.compiled = compiled
        call.parallel = parallel
        call.py = f
        call.__name__ = f.__name__
        call.__doc__ = f.__doc__
        return call
    return deco(fn) if fn is not None else deco
