"""``[logistic]`` (``logistic_layer.c``): the logistic function; with a truth Darknet trains it by binary
cross-entropy, delta = t − p at the logits (``functional.darknet_loss``). The backward here is the
standard one, dy·p(1 − p) (EQUATIONS.md §5)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional.activation import sigmoid_forward
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    shape = ctx.prev_shape
    n = shape[0] * shape[1] * shape[2]
    table = f"logistic x entropy                             {n:4d}"
    return LayerSpec(ctx.index, "logistic", sec, (ctx.prev_index,), shape, shape, common_attrs(sec), 0, 0.0, 0, table)


class LogisticLayer(DarknetLayer):
    kind = "logistic"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        y = sigmoid_forward(x)[0]
        self._save(y)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        y = self._take()
        return dout * y * (1 - y) if self.needs_input_grad else None
