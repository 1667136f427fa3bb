"""A fused SGD-with-momentum update (numba, extra ``fast``): one pass over memory instead of four or five, a
variant of the op ``sgd_update`` (``functional.update``, update-1 to update-4).

The reference ``functional.update.sgd_update`` reads and writes each parameter-sized array several times
(``g + λw``, ``b ← γb``, ``b ← b + g``, ``λ·b``, ``w ← w − αb``); for a dense network these passes are
single-threaded and memory-bound, about a quarter of a training step on two cores. This kernel does
the same operations element by element, in the same order and in the parameter's dtype (scalars cast
to it first, no fast-math, so no fused multiply-adds): the numbers are bit-identical to the reference.
Large parameters are split over the cores (``prange``, on the OpenMP pool the matrix products use; see
``runtime/jit.py``): each element is still computed alone, so the split does not change a bit. It applies from
the second step on (the first creates the momentum buffer), with momentum.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import numpy as np

from .. import dispatch
from ..runtime import jit as _jit
from ..runtime.jit import jit, prange

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@jit(parallel=True)
def _sgd_momentum_kernel(w, g, buf, lr, momentum, one_minus_damp, wd, nesterov, maximize, has_wd, has_damp):
    """Per element, as ``functional.update.sgd_update`` (tests/test_train_fused.py and tests/test_variants.py hold
    the two bit-identical): g ← −g (maximize); g ← g + λw (update-4, mirroring ``update.decayed_gradient``);
    b ← γb + (1 − τ)g (update-2/3); d ← g + γb (Nesterov) or b; w ← w − αd (update-1)."""
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


def fits(w: np.ndarray, grad: np.ndarray, buf: Optional[np.ndarray]) -> bool:
    """Whether the kernel takes these arrays: one float dtype (float32 or float64), one shape, C-contiguous."""
    dt = w.dtype
    return (buf is not None and dt in _FLOATS and grad.dtype == dt and buf.dtype == dt
            and grad.shape == w.shape and buf.shape == w.shape
            and w.flags.c_contiguous and grad.flags.c_contiguous and buf.flags.c_contiguous)


def sgd_momentum_update(w: np.ndarray, grad: np.ndarray, buf: np.ndarray, lr: float, momentum: float,
                        dampening: float, weight_decay: float, nesterov: bool, maximize: bool) -> bool:
    """Apply one momentum step in place with the fused kernel; False (nothing done) when it cannot run
    (numba absent or disabled, mixed dtypes, non-contiguous arrays): the caller then takes the reference."""
    kernel = _sgd_momentum_kernel.compiled(w.size)
    if kernel is None or not fits(w, grad, buf):
        return False
    kernel(w.reshape(-1), grad.reshape(-1), buf.reshape(-1),
           *_scalars(w.dtype, lr, momentum, dampening, weight_decay, nesterov, maximize))
    return True


@functools.lru_cache(maxsize=256)
def _scalars(dt: np.dtype, lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool,
             maximize: bool) -> tuple:
    """The kernel's scalar arguments, cast to the parameter's dtype once per setting (a step reuses them for
    every parameter; a scheduler changing lr adds an entry)."""
    t = dt.type
    return (t(lr), t(momentum), t(1.0 - dampening), t(weight_decay), bool(nesterov), bool(maximize),
            weight_decay != 0, dampening != 0)


# --- the variant of ``sgd_update`` ------------------------------------------------------------------------------

def _applies(w, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
             maximize=False) -> bool:
    """With momentum, from the second step (a buffer exists), on arrays the kernel takes, numba on."""
    return momentum != 0 and fits(w, grad, buf) and _jit.enabled()


def _fused(w: np.ndarray, grad: np.ndarray, buf: np.ndarray, lr: float, momentum: float = 0.0,
           dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
           maximize: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    kernel = _sgd_momentum_kernel.compiled(w.size)
    kernel(w.reshape(-1), grad.reshape(-1), buf.reshape(-1),
           *_scalars(w.dtype, lr, momentum, dampening, weight_decay, nesterov, maximize))
    return w, buf


def _examples() -> List[dispatch.Example]:
    g = np.random.default_rng(0)
    out = []
    settings = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
                dict(momentum=0.5, dampening=0.3, weight_decay=0.01), dict(momentum=0.7, maximize=True)]
    for dt in (np.float32, np.float64):
        for shape, kw in zip([(7, 5), (5,), (3, 2, 4), (300, 130)], settings):    # (300, 130): the parallel build
            w, grad, buf = (g.standard_normal(shape).astype(dt) for _ in range(3))
            out.append(dispatch.Example((w, grad, buf, 0.05), kw))
    return out


dispatch.register(dispatch.Variant(
    op="sgd_update", name="numba fused momentum", forward=_fused, applies=_applies, priority=1, exact=True,
    examples=_examples, mirrors="functional.update.sgd_update",
    doc="update-1..4 with momentum in one parallel pass over w, g and the buffer"))
