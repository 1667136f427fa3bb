"""Gradient clipping, PyTorch's names: ``clip_grad_norm_`` and ``clip_grad_value_`` (in place, dtype kept)."""
from __future__ import annotations

import math
from typing import Iterable, List, Union

import numpy as np

from ..errors import NonFiniteError
from .parameter import Parameter

Params = Union[Parameter, Iterable[Parameter]]


def _grads(parameters: Params) -> List[np.ndarray]:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    elif hasattr(parameters, "parameters") and callable(parameters.parameters):
        parameters = parameters.parameters()
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Params, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all gradients by ``min(1, max_norm / (‖g‖ + 1e-6))`` where ‖g‖ is the ``norm_type``-norm of
    every gradient concatenated into one vector (``inf`` for the max-norm). Returns ‖g‖ before clipping."""
    grads = _grads(parameters)
    if not grads:
        return 0.0
    p = float(norm_type)
    if p == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads)
    elif p == 2.0:
        total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    elif p > 0:
        total = sum(float(np.sum(np.abs(g) ** p)) for g in grads) ** (1.0 / p)
    else:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}")
    if error_if_nonfinite and not math.isfinite(total):
        raise NonFiniteError(f"clip_grad_norm_: the total {p}-norm of the gradients is {total}: cannot clip "
                             f"(set error_if_nonfinite=False to scale by it anyway)")
    coef = float(max_norm) / (total + 1e-6)
    if not coef >= 1.0:          # also NaN: scale by it, as PyTorch
        for g in grads:
            g *= coef
    return total


def clip_grad_value_(parameters: Params, clip_value: float) -> None:
    """Clamp every gradient element into [−clip_value, clip_value], in place."""
    v = float(clip_value)
    for g in _grads(parameters):
        np.clip(g, -v, v, out=g)
