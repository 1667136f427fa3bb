"""Whether the numba kernels are used: numba is imported when a kernel first asks for it (never by ``import
deltaprop``), unless ``DELTAPROP_NUMBA=0`` or ``set_enabled(False)``; the ``inline`` helpers declared before that
are registered with it then. ``runtime.jit`` builds the kernels on this; ``runtime.threads`` starts numba's pool."""
from __future__ import annotations

from typing import Callable, Optional

from . import settings

_numba = None                     # the numba module while the kernels are used, else None
_imported = None                  # the numba module once imported, kept when ``set_enabled(False)`` comes later
_checked = False
_wanted: Optional[bool] = None    # set_enabled's choice; None: DELTAPROP_NUMBA decides
_pending_inline = []              # ``inline`` helpers declared before numba was imported


def numba_module():
    """The numba module, or None when it is absent or disabled (DELTAPROP_NUMBA=0, ``set_enabled(False)``)."""
    global _numba, _checked, _imported
    if not _checked:
        _checked = True
        _numba = None
        if settings.get("DELTAPROP_NUMBA") if _wanted is None else _wanted:
            try:
                import numba  # noqa: F401
                _numba = _imported = numba
                _register_inline()
            except ImportError:
                _numba = None
    return _numba


def imported():
    """The numba module if it was ever imported in this process (even if switched off since), else None."""
    return _imported


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
