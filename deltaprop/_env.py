"""Settings read from environment variables, with an error that names the variable when one is malformed.

Every ``DELTAPROP_*`` setting of the package is read through these functions (once, where it is used):
``env_int`` for counts and sizes, ``env_flag`` for on/off switches."""
from __future__ import annotations

import os

from .errors import ConfigError


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
