"""Keep freed memory in the process for reuse (Linux glibc only; ``DELTAPROP_MALLOC=0`` turns it off).

A training step allocates and frees the same large temporaries every time (im2col columns, layer
outputs, batch-norm buffers). With glibc's defaults the large ones are handed back to the kernel on
``free`` and faulted in again, page by page, on the next step: 2,500 page faults per LeNet step and
5,800–7,300 per conv-BN step, which cost 30–55% of the step time (measured, bench/cnn.py shapes).
Raising the mmap and trim thresholds keeps them in the heap, as deep-learning frameworks' caching
allocators do; the peak RSS does not change (freed blocks are reused, not added to).

Applied on first use (``runtime.blas.ensure``: the first product) or by ``deltaprop.tune()``, never at import.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

from . import settings

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30          # allocations below 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1    # never trim the heap's top

applied = False


def tune() -> bool:
    """Set glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD; True when applied (False off glibc or when disabled)."""
    global applied
    if applied:
        return True
    if not settings.get("DELTAPROP_MALLOC") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False                       # musl or another libc
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    applied = bool(ok)
    return applied
