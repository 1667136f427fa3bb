"""Optional numba acceleration (extra ``deltaprop[fast]``). Kernels decorated with ``jit`` compile lazily
when numba is importable and ``DELTAPROP_NUMBA`` is not "0" (``numba_loader``); otherwise callers use their NumPy
path, which gives the same numbers.

Parallel kernels (``jit(parallel=True)``, loops over ``prange``) run on numba's threading layer, set up by
``runtime.threads`` before the first one runs: GNU OpenMP shared with MKL's products, or with a wait policy that
lets the threads sleep between kernels when NumPy's BLAS runs the products on its own threads (docs/runtime.md,
"Threads"). Nothing here imports numba at import time: ``prange`` and the ``inline`` helpers are bound to numba's
when the first kernel compiles.

Each parallel kernel also has a serial compilation of the same code, which runs where ``threads.parallel_build``
says so: small arrays (below ``PARALLEL_MIN``, where starting the threads costs more than it saves), a process
forked after threads were started (GNU OpenMP cannot be used again in such a child; ``in_forked_child``), and
OpenBLAS's threads still spinning after a product. Elementwise kernels give the same numbers on every route.
"""
from __future__ import annotations

import types
from typing import Callable, Optional

from . import blas, numba_loader, threads
# kept here for the kernels' modules: numba's switch, and the thread rules they run under
from .numba_loader import enabled, inline, numba_module, set_enabled  # noqa: F401
from .threads import PARALLEL_MIN, disable_parallel, in_forked_child, omp_available  # noqa: F401

# The loop of parallel kernels: ``range`` here; a kernel module's ``prange`` is rebound to numba's (which numba
# knows by identity) just before its first kernel compiles, so ``import deltaprop`` does not import numba.
prange = range


def _renamed(f: Callable, suffix: str) -> Callable:
    """A copy of function ``f`` whose ``__qualname__`` ends with ``suffix``."""
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + suffix
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    return g


def _largest(args) -> Optional[int]:
    """The most elements of any array among ``args`` (None when there is none): a parallel kernel's size."""
    sizes = [a.size for a in args if hasattr(a, "size") and hasattr(a, "shape")]
    return max(sizes) if sizes else None


def jit(fn: Callable = None, **options) -> Callable:
    """``numba.njit(cache=True, fastmath=False, **options)`` applied lazily on first call.

    The wrapper's ``.compiled()`` returns the compiled function, or None without numba. With
    ``parallel=True``, ``.compiled(n)`` returns the parallel compilation where ``threads.parallel_build(n)``
    allows it (``n >= PARALLEL_MIN``, not in a forked child, OpenBLAS's threads not spinning after a product)
    and the serial one (the same code, ``prange`` as ``range``) otherwise.

    Calling the wrapper runs the kernel (a parallel one chooses by its largest array argument, ``_largest``).
    A backward follows the path its forward chose: called after
    ``set_enabled(False)`` in a process where numba was imported (a cache a numba forward made), it runs
    the serial compilation rather than failing; it raises only where numba was never imported.
    """
    parallel = bool(options.pop("parallel", False))

    def deco(f: Callable):
        state = {}

        def compiled(n: Optional[int] = None) -> Optional[Callable]:
            nb = numba_loader.numba_module()
            if nb is None:
                return None
            par = parallel and threads.parallel_build(n)
            c = state.get(par)
            if c is None:
                if par:
                    blas.ensure()          # the pools are set up before numba starts its threads
                    threads.start_kernels()
                    if threads.serial_only():
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
                imported = numba_loader.imported()
                if imported is None:
                    raise RuntimeError(f"{f.__name__}: numba is not available; use the NumPy path")
                c = state.get(False) or build(imported, False)   # switched off since the forward
            return c(*args)
        call.compiled = compiled
        call.parallel = parallel
        call.py = f
        call.__name__ = f.__name__
        call.__doc__ = f.__doc__
        return call
    return deco(fn) if fn is not None else deco
