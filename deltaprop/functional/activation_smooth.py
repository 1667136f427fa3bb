"""AlexeyAB's smooth activations (``activations.c``/``activations.h`` of AlexeyAB/darknet 59596d78;
docs/equations.md §5, Mish, Swish, hard-Mish): each forward and its derivative from the INPUT z, in the
operations Darknet's CPU code uses (float32 ``expf``/``logf`` where it calls them, double where it calls
``exp``/``tanh``), so float32 results round as the real program's.

- Swish ``f(z) = z·σ(z)``, ``f' = f + σ(1 − f)`` (``gradient_array_swish``; equal to σ + zσ(1 − σ)).
- Mish ``f(z) = z·tanh(softplus(z))`` with Darknet's softplus (``z`` above 20, ``e^z`` below −20, else
  ``log(e^z + 1)``) and ``tanh(s) = 2/(1 + e^{−2s}) − 1``; ``f' = z·(1 − tanh²(sp))·(1 − e^{−sp}) + tanh(sp)``
  (``gradient_array_mish``; ``1 − e^{−sp} = σ(z)`` is softplus's derivative).
- hard-Mish ``f(z) = z`` for z > 0, ``z²/2 + z`` for −2 < z ≤ 0, else 0; ``f' = 1``, ``z + 1``, 0.
"""
from __future__ import annotations

import numpy as np

MISH_THRESHOLD = 20.0


def _logistic(z: np.ndarray) -> np.ndarray:
    """``logistic_activate``: ``1.f/(1.f + expf(−z))`` in the array's dtype."""
    one = z.dtype.type(1)
    with np.errstate(over="ignore"):
        return one / (one + np.exp(-z))


def swish_forward(z: np.ndarray) -> np.ndarray:
    """Swish (§5, Swish): ``z·σ(z)``, as ``activate_array_swish``."""
    return z * _logistic(z)


def swish_derivative(z: np.ndarray) -> np.ndarray:
    """Swish's derivative (§5, Swish) from the input: ``f + σ(1 − f)`` with f = z·σ(z) (``gradient_array_swish``)."""
    s = _logistic(z)
    f = z * s
    return f + s * (z.dtype.type(1) - f)


def _softplus(z: np.ndarray) -> np.ndarray:
    """Darknet's ``softplus_activate(z, 20)``: z above 20, ``expf(z)`` below −20, else ``logf(expf(z) + 1)``."""
    t = z.dtype.type
    with np.errstate(over="ignore"):
        mid = np.log(np.exp(z) + t(1))
    return np.where(z > t(MISH_THRESHOLD), z, np.where(z < t(-MISH_THRESHOLD), np.exp(np.minimum(z, 0)), mid))


def mish_forward(z: np.ndarray) -> np.ndarray:
    """Mish (§5, Mish): ``z·tanh(softplus(z))`` with Darknet's ``tanh_activate`` = ``2/(1 + expf(−2s)) − 1``."""
    t = z.dtype.type
    sp = _softplus(z)
    with np.errstate(over="ignore"):
        th = t(2) / (t(1) + np.exp(t(-2) * sp)) - t(1)
    return z * th


def mish_derivative(z: np.ndarray) -> np.ndarray:
    """Mish's derivative (§5, Mish) from the input, as ``gradient_array_mish``: sp = softplus(z),
    ``(1 − tanh²(sp))·(1 − e^{−sp})·z + tanh(sp)``, ``exp`` and ``tanh`` in double, each step stored in the dtype."""
    dt = z.dtype
    sp = _softplus(z)
    grad_sp = (1.0 - np.exp(-sp.astype(np.float64))).astype(dt)
    tsp = np.tanh(sp.astype(np.float64)).astype(dt)
    grad_tsp = (dt.type(1) - tsp * tsp) * grad_sp
    return z * grad_tsp + tsp


def hard_mish_forward(z: np.ndarray) -> np.ndarray:
    """hard-Mish (§5, hard-Mish): z for z > 0, ``z·z/2 + z`` for −2 < z ≤ 0, else 0 (``hard_mish_yashas``)."""
    t = z.dtype.type
    return np.where(z > 0, z, np.where(z > t(-2), z * z / t(2) + z, t(0))).astype(z.dtype, copy=False)


def hard_mish_derivative(z: np.ndarray) -> np.ndarray:
    """hard-Mish's derivative (§5, hard-Mish): 1 for z > 0, ``z + 1`` for −2 < z ≤ 0, else 0."""
    t = z.dtype.type
    return np.where(z > 0, t(1), np.where(z > t(-2), z + t(1), t(0))).astype(z.dtype, copy=False)
