"""``SGD`` with momentum, dampening, Nesterov and weight decay: PyTorch's update (docs/equations.md §7)."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..nn.parameter import Parameter
from ..fast.sgd_numba import sgd_momentum_update
from .optimizer import Optimizer, ParamsT


def decayed_gradient(grad: np.ndarray, w: np.ndarray, weight_decay: float) -> np.ndarray:
    """update-4: ``g + λw``, the gradient of C + (λ/2)·Σw² (PyTorch's ``weight_decay=λ``), a new array in the
    parameter's dtype. ``_fused._sgd_momentum_kernel`` mirrors it element by element."""
    return grad + weight_decay * w


class SGD(Optimizer):
    """update-1 ``w ← w − α g`` with, in PyTorch's order (§7):

    - weight decay (update-4): ``g ← g + λ w`` (gradient of (λ/2) Σ w²);
    - momentum (update-2/3, PyTorch's form): ``b ← g`` at the first step, then ``b ← γ b + (1 − τ) g``;
      ``g ← g + γ b`` with Nesterov, else ``g ← b``.

    The state of a stepped parameter: ``step`` and, with momentum, ``momentum_buffer``.
    """

    _buffers = ("momentum_buffer",)
    _required = ()

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _check_group(self, group: Dict[str, Any]) -> None:
        for k in ("lr", "momentum", "weight_decay"):
            if not float(group[k]) >= 0.0:
                raise ValueError(f"SGD: invalid {k} {group[k]!r} (must be >= 0)")
        if group["nesterov"] and (float(group["momentum"]) <= 0 or float(group["dampening"]) != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")

    def _update(self, p: Parameter, grad: np.ndarray, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        lr = float(group["lr"])
        momentum = float(group["momentum"])
        dampening = float(group["dampening"])
        wd = float(group["weight_decay"])
        w = p.data
        buf = state.get("momentum_buffer")
        if momentum != 0 and buf is not None and sgd_momentum_update(
                w, grad, buf, lr, momentum, dampening, wd, group["nesterov"], group["maximize"]):
            state["step"] = int(state.get("step", 0)) + 1  # the same update, fused in one pass (numba)
            return
        g = -grad if group["maximize"] else grad
        if wd != 0:
            g = decayed_gradient(g, w, wd)
        if momentum != 0:
            if state.get("momentum_buffer") is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=w.dtype, copy=True)
            else:
                buf = self._buffer(state, "momentum_buffer", p)
                buf *= momentum
                buf += g if dampening == 0 else (1.0 - dampening) * g
            g = g + momentum * buf if group["nesterov"] else buf
        state["step"] = int(state.get("step", 0)) + 1
        w -= lr * g
