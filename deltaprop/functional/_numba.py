"""Optional numba acceleration (extra ``deltaprop[fast]``). Kernels decorated with ``jit`` compile lazily
when numba is importable and ``DELTAPROP_NUMBA`` is not "0"; otherwise callers use their NumPy path,
which gives the same numbers."""
from __future__ import annotations

import os
from typing import Callable, Optional

_numba = None
_checked = False


def numba_module():
    """The numba module, or None when it is absent or disabled (DELTAPROP_NUMBA=0)."""
    global _numba, _checked
    if not _checked:
        _checked = True
        if os.environ.get("DELTAPROP_NUMBA", "1") != "0":
            try:
                import numba  # noqa: F401
                _numba = numba
            except ImportError:
                _numba = None
    return _numba


def enabled() -> bool:
    """True when numba kernels will be used."""
    return numba_module() is not None


def set_enabled(flag: bool) -> None:
    """Turn the numba kernels on or off at run time (tests compare both paths)."""
    global _numba, _checked
    if flag:
        _checked = False
        os.environ["DELTAPROP_NUMBA"] = "1"
        numba_module()
    else:
        _numba, _checked = None, True


def jit(fn: Callable = None, **options) -> Callable:
    """``numba.njit(cache=True, fastmath=False, **options)`` applied lazily on first call.

    The wrapper's ``.compiled()`` returns the compiled function, or None without numba.
    """
    def deco(f: Callable):
        state = {"c": None}

        def compiled() -> Optional[Callable]:
            nb = numba_module()
            if nb is None:
                return None
            if state["c"] is None:
                state["c"] = nb.njit(cache=True, **options)(f)
            return state["c"]

        def call(*args):
            c = compiled()
            if c is None:
                raise RuntimeError(f"{f.__name__}: numba is not available; use the NumPy path")
            return c(*args)
        call.compiled = compiled
        call.py = f
        call.__name__ = f.__name__
        call.__doc__ = f.__doc__
        return call
    return deco(fn) if fn is not None else deco
