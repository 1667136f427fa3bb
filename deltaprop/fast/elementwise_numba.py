"""Parallel numba kernels for the elementwise passes of a dense step (extra ``fast``): the ReLU forward and
backward (docs/equations.md §5), variants of the ops ``relu`` (``functional.activation``), and the finiteness scan
of ``backend.check_array``, a variant of the op ``count_nonfinite`` (``backend``).

Each is one pass over memory split over the cores (``prange``; see ``runtime/jit.py`` for the shared OpenMP
pool), where the NumPy reference makes two or three. The numbers are the reference's, bit for bit: the ReLU
multiplies by the mask as NumPy's ``z * (z > 0)`` does (so −0.0 and NaN come out the same).

``relu_forward``, ``relu_backward`` and ``count_nonfinite`` below are the kernels' entry points (None where the
kernel cannot run); the variants registered at the end call them.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .. import dispatch
from ..functional import activation as A
from ..runtime import jit as _jit
from ..runtime.jit import jit, prange

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@jit(parallel=True)
def _relu_fwd(z, y, mask):
    """y = z · [z > 0] and the mask, for flat arrays: mirrors ``activation.relu_forward``."""
    for i in prange(z.size):
        v = z[i]
        m = v > 0
        mask[i] = m
        y[i] = v * (1.0 if m else 0.0)


@jit(parallel=True)
def _relu_bwd(dy, mask, dz):
    """dz = dy · [z > 0] (P2 with f' the stored mask), for flat arrays: mirrors ``activation.relu_backward``."""
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


# --- the variants --------------------------------------------------------------------------------------------

def _relu_applies(z) -> bool:
    """A float32/float64 C-contiguous array, numba on: what ``relu_forward`` above runs on."""
    return isinstance(z, np.ndarray) and _flat_ok(z) and _jit.enabled()


def _relu_variant(z: np.ndarray) -> Tuple[np.ndarray, A.ReluCache]:
    y, mask = relu_forward(z)
    return y, A.ReluCache(mask)


def _relu_variant_backward(dy: np.ndarray, cache: A.ReluCache) -> np.ndarray:
    """Every ``ReluCache`` comes here, the reference's included (the fused batch-norm + ReLU kernels build
    theirs): the one-pass kernel where it runs, else the reference ``dy · mask``."""
    dz = relu_backward(dy, cache[0])
    return dz if dz is not None else A.relu_backward.reference(dy, cache)


def _relu_examples() -> List[dispatch.Example]:
    g = np.random.default_rng(0)
    out = []
    for dt in (np.float32, np.float64):
        for shape in ((3, 5), (300, 200)):          # the serial build, the parallel one (≥ PARALLEL_MIN)
            z = g.standard_normal(shape).astype(dt)
            z.reshape(-1)[:4] = [0.0, -0.0, np.nan, -1e-30]      # signed zeros and NaN pass as in z·[z > 0]
            out.append(dispatch.Example((z,)))
    return out


dispatch.register(dispatch.Variant(
    op="relu", name="numba one pass", forward=_relu_variant, applies=_relu_applies,
    backward=_relu_variant_backward, caches=(A.ReluCache,), priority=1, exact=True, examples=_relu_examples,
    mirrors="functional.activation.relu_forward",
    doc="y and the mask in one parallel pass (the reference makes two); its backward one pass for dy·mask"))


def _count_applies(x) -> bool:
    return isinstance(x, np.ndarray) and _flat_ok(x) and x.size > 0 and _jit.enabled()


def _count_variant(x: np.ndarray) -> int:
    return count_nonfinite(x)


def _count_examples() -> List[dispatch.Example]:
    g = np.random.default_rng(1)
    out = []
    for dt in (np.float32, np.float64):
        for shape in ((4, 3), (300, 200)):
            x = g.standard_normal(shape).astype(dt)
            bad = g.choice(x.size, size=5, replace=False)
            x.reshape(-1)[bad] = [np.nan, np.inf, -np.inf, -np.nan, np.inf]
            x.reshape(-1)[0 if 0 not in bad else 1] = np.finfo(dt).max       # the largest finite value is finite
            out.append(dispatch.Example((x,)))
        out.append(dispatch.Example((g.standard_normal(7).astype(dt),)))   # all finite
    return out


dispatch.register(dispatch.Variant(
    op="count_nonfinite", name="numba exponent scan", forward=_count_variant, applies=_count_applies,
    priority=1, exact=True, examples=_count_examples, mirrors="backend.count_nonfinite",
    doc="one parallel pass testing each float's exponent bits (the reference makes a boolean array, then counts)"))
