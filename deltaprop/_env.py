"""Settings read from environment variables, with an error that names the variable when one is malformed."""
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
