"""Settings read from environment variables, with an error that names the variable when one is malformed.

Every ``DELTAPROP_*`` setting of the package is read through these functions (once, where it is used):
``env_int`` for counts and sizes, ``env_flag`` for on/off switches, ``env_choice`` for one of a few names,
``env_path`` for folders; ``user_cache_dir`` is where the package keeps what it downloads or measures.
docs/core.md lists the settings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """``int($name)``, or ``default`` when the variable is unset or empty; a ``ConfigError`` naming the variable
    when it is not a whole number of at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: expected a whole number of at least {minimum}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """An on/off switch: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case), ``default``
    when unset or empty; a ``ConfigError`` naming the variable otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected 1 or 0 (also true/false, yes/no, on/off)")


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (compared in lower case; returned as listed), or ``default`` when unset or empty; a
    ``ConfigError`` naming the variable and the allowed values otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")


def env_path(name: str) -> Optional[Path]:
    """The folder or file named by ``$name`` (``~`` expanded), or None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deltaprop``, or ``~/.cache/deltaprop`` when XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deltaprop"
