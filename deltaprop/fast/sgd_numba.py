"""A fused SGD-with-momentum update (numba, extra ``fast``): one pass over memory instead of four or five.

The NumPy path of ``SGD._update`` reads and writes each parameter-sized array several times
(``g + λw``, ``b ← γb``, ``b ← b + g``, ``λ·b``, ``w ← w − αb``); for a dense network these passes are
single-threaded and memory-bound, about a quarter of a training step on two cores. This kernel does
the same operations element by element, in the same order and in the parameter's dtype (scalars cast
to it first, no fast-math, so no fused multiply-adds): the numbers are bit-identical to the NumPy path.
Large parameters are split over the cores (``prange``, on the OpenMP pool the matrix products use; see
``functional/_numba.py``): each element is still computed alone, so the split does not change a bit.
"""
from __future__ import annotations

import functools

import numpy as np

from ..runtime.jit import jit, prange

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@jit(parallel=True)
def _sgd_momentum_kernel(w, g, buf, lr, momentum, one_minus_damp, wd, nesterov, maximize, has_wd, has_damp):
    """Per element, as SGD._update (tests/test_train_fused.py holds the two bit-identical): g ← −g (maximize);
    g ← g + λw (update-4, mirroring ``sgd.decayed_gradient``); b ← γb + (1 − τ)g (update-2/3);
    d ← g + γb (Nesterov) or b; w ← w − αd (update-1)."""
    n = w.size
    for i in prange(n):
        gi = -g[i] if maximize else g[i]
        if has_wd:
            gi = gi + wd * w[i]
        b = buf[i] * momentum
        b = b + (one_minus_damp * gi if has_damp else gi)
        buf[i] = b
        d = gi + momentum * b if nesterov else b
        w[i] = w[i] - lr * d


def sgd_momentum_update(w: np.ndarray, grad: np.ndarray, buf: np.ndarray, lr: float, momentum: float,
                        dampening: float, weight_decay: float, nesterov: bool, maximize: bool) -> bool:
    """Apply one momentum step in place with the fused kernel; False (nothing done) when it cannot run
    (numba absent or disabled, mixed dtypes, non-contiguous arrays): the caller then takes its NumPy path."""
    kernel = _sgd_momentum_kernel.compiled(w.size)
    if kernel is None:
        return False
    dt = w.dtype
    if dt not in _FLOATS or grad.dtype != dt or buf.dtype != dt \
            or grad.shape != w.shape or buf.shape != w.shape \
            or not (w.flags.c_contiguous and grad.flags.c_contiguous and buf.flags.c_contiguous):
        return False
    kernel(w.reshape(-1), grad.reshape(-1), buf.reshape(-1),
           *_scalars(dt, lr, momentum, dampening, weight_decay, nesterov, maximize))
    return True


@functools.lru_cache(maxsize=256)
def _scalars(dt: np.dtype, lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool,
             maximize: bool) -> tuple:
    """The kernel's scalar arguments, cast to the parameter's dtype once per setting (a step reuses them for
    every parameter; a scheduler changing lr adds an entry)."""
    t = dt.type
    return (t(lr), t(momentum), t(1.0 - dampening), t(weight_decay), bool(nesterov), bool(maximize),
            weight_decay != 0, dampening != 0)
