"""Helpers of the hostile-file tests: a bad input must end in the project's own error, quickly and cheaply."""
from __future__ import annotations

import time
import tracemalloc
import zlib
from typing import Callable, Optional, Type

import pytest

from deltaprop.errors import DeltapropError

MAX_SECONDS = 1.0
MAX_BYTES = 100 * 2 ** 20


def raises_cheaply(error: Type[DeltapropError], fn: Callable[[], object], match: Optional[str] = None,
                   seconds: float = MAX_SECONDS, nbytes: int = MAX_BYTES) -> DeltapropError:
    """Call ``fn``; it must raise ``error`` (message matching ``match``) within ``seconds`` and with a
    peak of traced Python/NumPy allocations under ``nbytes``. Returns the exception."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            fn()
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"took {elapsed:.2f} s before its {error.__name__}"
    assert peak < nbytes, f"allocated {peak / 2 ** 20:.1f} MiB before its {error.__name__}"
    return info.value


def gzip_bomb(head: bytes, zeros_mib: int) -> bytes:
    """A gzip stream of ``head`` followed by ``zeros_mib`` MiB of zero bytes, about 1 KiB per MiB: one
    deflate block of a MiB of zeros after a full flush is self-contained, so it is repeated instead of
    compressed again. The trailer's CRC is not that of the data (a reader that stops early never sees it)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(2 ** 20)) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush(zlib.Z_FINISH)
    size = (len(head) + zeros_mib * 2 ** 20) & 0xFFFFFFFF
    gz_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return gz_header + first + block * zeros_mib + end + (0).to_bytes(4, "little") + size.to_bytes(4, "little")
