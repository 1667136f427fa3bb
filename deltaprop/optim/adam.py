"""``Adam`` and ``AdamW``: PyTorch's update formulas (docs/equations.md §7), in place, in the parameter's dtype."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ..nn.parameter import Parameter
from .optimizer import Optimizer, ParamsT
from ..functional.update import decayed_gradient


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's form. With t the step, g the gradient (+ λw: L2 weight decay):

    ``m ← β1 m + (1 − β1) g``, ``v ← β2 v + (1 − β2) g²``, ``v̂ = max(v̂, v)`` with amsgrad,
    ``w ← w − (α / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)``.

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad).
    """

    _buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _required = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _check_group(self, group: Dict[str, Any]) -> None:
        who = type(self).__name__
        for k in ("lr", "eps", "weight_decay"):
            if not float(group[k]) >= 0.0:
                raise ValueError(f"{who}: invalid {k} {group[k]!r} (must be >= 0)")
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"{who}: betas must be two numbers in [0, 1), got {betas!r}")

    def _update(self, p: Parameter, grad: np.ndarray, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        eps = float(group["eps"])
        wd = float(group["weight_decay"])
        w = p.data
        g = -grad if group["maximize"] else grad
        step = int(state.get("step", 0)) + 1
        state["step"] = step
        m = self._buffer(state, "exp_avg", p)
        v = self._buffer(state, "exp_avg_sq", p)
        if wd != 0:
            if self._decoupled:
                w *= 1.0 - lr * wd                      # AdamW: decay the weights, not the gradient
            else:
                g = decayed_gradient(g, w, wd)          # Adam: the L2 term in the gradient (update-4)
        # m.lerp_(g, 1 − β1), as PyTorch computes it
        a = 1.0 - beta1
        if a < 0.5:
            m += a * (g - m)
        else:
            m[...] = g - (g - m) * (1.0 - a)
        v *= beta2
        v += (1.0 - beta2) * g * g
        bias1 = 1.0 - beta1 ** step
        bias2_sqrt = (1.0 - beta2 ** step) ** 0.5
        if group["amsgrad"]:
            vmax = self._buffer(state, "max_exp_avg_sq", p)
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax)
        else:
            denom = np.sqrt(v)
        denom /= bias2_sqrt
        denom += eps
        np.divide(m, denom, out=denom)
        denom *= lr / bias1
        w -= denom


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay ``w ← w (1 − α λ)`` before the
    Adam step (PyTorch's default λ = 1e-2)."""

    _decoupled = True

    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
