"""Helpers of the hostile-file tests: a bad input must end in the project's own error, quickly and cheaply."""
from __future__ import annotations

import contextlib
import time
import tracemalloc
from typing import Callable, Iterator, Optional, Type

import pytest

from deltaprop.errors import DeltapropError
from fuzz.targets import gzip_bomb  # noqa: F401  (one home: the fuzz targets use it too)

MAX_SECONDS = 1.0
MAX_BYTES = 100 * 2 ** 20


@contextlib.contextmanager
def cheaply(what: str, seconds: float = MAX_SECONDS, nbytes: int = MAX_BYTES) -> Iterator[None]:
    """The block must end within ``seconds`` and with a peak of traced Python/NumPy allocations under
    ``nbytes`` (``what`` names it in the failure)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"{what} took {elapsed:.2f} s"
    assert peak < nbytes, f"{what} allocated {peak / 2 ** 20:.1f} MiB"


def raises_cheaply(error: Type[DeltapropError], fn: Callable[[], object], match: Optional[str] = None,
                   seconds: float = MAX_SECONDS, nbytes: int = MAX_BYTES) -> DeltapropError:
    """Call ``fn``; it must raise ``error`` (message matching ``match``) within ``seconds`` and with a
    peak of traced Python/NumPy allocations under ``nbytes``. Returns the exception."""
    with cheaply(f"reaching its {error.__name__}", seconds, nbytes):
        with pytest.raises(error, match=match) as info:
            fn()
    return info.value
