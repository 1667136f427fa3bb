"""The NumPy path on several cores: one pass over a batch run as slices of the batch on parallel threads.

NumPy runs each elementwise pass on one thread; while it does, the cores that ran the matrix products sit
idle. With numba the kernels are parallel themselves (``runtime.jit.jit(parallel=True)``) and nothing here is
used. Without it, a pass that is large enough (``SPLIT_MIN`` elements) is cut along the batch axis into as
many slices as MKL has threads, and the slices run at once: the caller's thread takes the first, a small pool
of Python threads the others (NumPy lets go of the GIL inside its loops). Every element is computed by the
same operations on the same operands, so the numbers are bit-identical to one pass.

The variants that split a reference's pass (``fast/conv_split.py`` and others) call the reference's function for
the rows lo:hi of the batch in each slice (``map_batch``), and register for its op with ``splittable`` as their
``applies``: a test without side effects; ``ranges`` decides at run time whether the pass is really split.

This pays only when the products' threads are out of the way. Before a split, ``blas.release_threads`` hands
back MKL's GNU OpenMP threads. With NumPy's OpenBLAS it stops OpenBLAS's threads, but only before passes of
at least ``blas.OPENBLAS_PASS_MIN`` elements: a restart costs more than it saves on smaller ones. Where it cannot
release (Intel OpenMP, whose idle threads spin for a while after each product and would take a core from the
slices), nothing is split. Measured on the project's 2-core Xeon:

- a three-pass sequence over 16×16×64×64 float32 took 1.25–1.7 ms on one thread, and 0.83–1.09 ms split in two
  after a released MKL product; with the product's threads still spinning, splitting made it slower;
- with OpenBLAS, yolov3-tiny's NumPy-path training step at 320 took 831 ms unsplit and 732 ms split.

``DELTAPROP_SPLIT=0`` turns splitting off; ``DELTAPROP_SPLIT_MIN`` sets the size limit.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from ..runtime import blas
from ..runtime.settings import env_flag, env_int
from ..runtime import jit as _numba

T = TypeVar("T")
SPLIT_MIN = env_int("DELTAPROP_SPLIT_MIN", 1 << 18)
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0
_lock = threading.Lock()
_local = threading.local()


# DELTAPROP_SPLIT=0 turns splitting off (read once, at import); ``set_enabled`` changes it at run time
ENABLED = env_flag("DELTAPROP_SPLIT", True)


def set_enabled(flag: bool) -> None:
    """Turn the batch split of the NumPy passes on or off (the numbers are the same either way)."""
    global ENABLED
    ENABLED = bool(flag)


def splittable(n: int, size: int) -> bool:
    """Whether a pass over ``size`` elements of a batch of ``n`` is one ``ranges`` may split: splitting on, at
    least two samples and ``SPLIT_MIN`` elements. No side effect (the products' threads are left alone): the
    ``applies`` of the split variants."""
    return ENABLED and n >= 2 and size >= SPLIT_MIN


def ranges(n: int, size: int) -> Optional[List[Tuple[int, int]]]:
    """Batch slices [(lo, hi), ...] for a pass over ``size`` elements of a batch of ``n``; None when the pass
    should run whole: numba enabled, splitting off, small, one thread, inside a slice already, or the
    products' threads could not be released."""
    if not splittable(n, size) or _numba.enabled() or getattr(_local, "inside", False):
        return None
    parts = min(n, blas.max_threads())
    if parts < 2 or not blas.release_threads(size):
        return None
    step, extra = divmod(n, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + step + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size, _pool_pid
    with _lock:
        if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deltaprop-split")
            _pool_size, _pool_pid = workers, os.getpid()
        return _pool


def _inside(fn: Callable[[int, int], T], lo: int, hi: int) -> T:
    _local.inside = True
    try:
        return fn(lo, hi)
    finally:
        _local.inside = False


def run(fn: Callable[[int, int], T], parts: Sequence[Tuple[int, int]]) -> List[T]:
    """[fn(lo, hi) for each slice], the first on this thread and the rest on the pool, in order; the first
    error raised by any slice is raised here once all have finished."""
    if len(parts) == 1:
        return [fn(*parts[0])]
    pool = _executor(len(parts) - 1)
    futures = [pool.submit(_inside, fn, lo, hi) for lo, hi in parts[1:]]
    first_error = None
    try:
        results = [_inside(fn, *parts[0])]
    except BaseException as exc:  # wait for the others before raising: they write into shared arrays
        first_error, results = exc, [None]
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return results


def map_batch(fn: Callable[[int, int], T], n: int, size: int) -> List[T]:
    """fn(lo, hi) over the batch 0…n: split as ``ranges`` decides, else one call fn(0, n); the results in
    batch order. ``fn`` must only read its slice's rows and write its slice's rows."""
    parts = ranges(n, size)
    return run(fn, parts) if parts else [fn(0, n)]
