"""Parallel numba kernels for the elementwise passes of a dense step (extra ``fast``): the ReLU forward and
backward (docs/equations.md §5) and the finiteness scan of ``backend.check_array``.

Each is one pass over memory split over the cores (``prange``; see ``_numba.py`` for the shared OpenMP
pool), where the NumPy path makes two or three. The numbers are the NumPy path's, bit for bit: the ReLU
multiplies by the mask as NumPy's ``z * (z > 0)`` does (so −0.0 and NaN come out the same).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..runtime.jit import jit, prange

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@jit(parallel=True)
def _relu_fwd(z, y, mask):
    """y = z · [z > 0] and the mask, for flat arrays: mirrors ``activation.relu_forward``'s NumPy path."""
    for i in prange(z.size):
        v = z[i]
        m = v > 0
        mask[i] = m
        y[i] = v * (1.0 if m else 0.0)


@jit(parallel=True)
def _relu_bwd(dy, mask, dz):
    """dz = dy · [z > 0] (P2 with f' the stored mask), for flat arrays: mirrors ``activation.relu_backward``'s
    NumPy path."""
    for i in prange(dy.size):
        dz[i] = dy[i] * (1.0 if mask[i] else 0.0)


@jit(parallel=True)
def _count_nonfinite(u, exponent):
    """How many floats (viewed as unsigned integers ``u``) have an all-ones exponent (the ``exponent`` bit
    mask, of u's dtype): ±inf or NaN. Mirrors ``x.size − np.count_nonzero(np.isfinite(x))``, the NumPy scan of
    ``backend.check_array`` (tests/test_parallel_kernels.py holds them equal)."""
    bad = 0
    for i in prange(u.size):
        bad += (u[i] & exponent) == exponent
    return bad


# per float dtype: the unsigned view and its exponent bits
_EXPONENT = {np.dtype(np.float32): np.uint32(0x7F800000), np.dtype(np.float64): np.uint64(0x7FF0000000000000)}


def _flat_ok(x: np.ndarray) -> bool:
    return x.dtype in _FLOATS and x.flags.c_contiguous


def relu_forward(z: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(y, mask) in one pass, or None when the kernel cannot run (numba off, other dtype or layout)."""
    if not _flat_ok(z):
        return None
    kernel = _relu_fwd.compiled(z.size)
    if kernel is None:
        return None
    y = np.empty_like(z)
    mask = np.empty(z.shape, dtype=np.bool_)
    kernel(z.reshape(-1), y.reshape(-1), mask.reshape(-1))
    return y, mask


def relu_backward(dy: np.ndarray, mask: np.ndarray) -> Optional[np.ndarray]:
    """dy · mask in one pass, or None when the kernel cannot run."""
    if not _flat_ok(dy) or mask.shape != dy.shape or mask.dtype != np.bool_ or not mask.flags.c_contiguous:
        return None
    kernel = _relu_bwd.compiled(dy.size)
    if kernel is None:
        return None
    dz = np.empty_like(dy)
    kernel(dy.reshape(-1), mask.reshape(-1), dz.reshape(-1))
    return dz


def count_nonfinite(x: np.ndarray) -> Optional[int]:
    """The number of NaN or infinite entries of a float array, or None when the kernel cannot run."""
    if not _flat_ok(x) or x.size == 0:
        return None
    kernel = _count_nonfinite.compiled(x.size)
    if kernel is None:
        return None
    exponent = _EXPONENT[x.dtype]
    return int(kernel(x.reshape(-1).view(exponent.dtype), exponent))
