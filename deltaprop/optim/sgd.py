"""``SGD`` with momentum, dampening, Nesterov and weight decay: PyTorch's update (docs/equations.md §7), one
``functional.update.sgd_update`` per parameter."""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ..functional.update import decayed_gradient, sgd_update
from ..nn.parameter import Parameter
from .optimizer import Optimizer, ParamsT

__all__ = ["SGD", "decayed_gradient"]


class SGD(Optimizer):
    """update-1 ``w ← w − α g`` with, in PyTorch's order (§7, ``functional.update.sgd_update``):

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
        momentum = float(group["momentum"])
        buf = state.get("momentum_buffer") if momentum != 0 else None
        if buf is not None and buf.dtype != p.data.dtype:          # the model was converted since the last step
            buf = self._buffer(state, "momentum_buffer", p)
        _, buf = sgd_update(p.data, grad, buf, float(group["lr"]), momentum, float(group["dampening"]),
                            float(group["weight_decay"]), group["nesterov"], group["maximize"])
        if momentum != 0:
            state["momentum_buffer"] = buf
        state["step"] = int(state.get("step", 0)) + 1
