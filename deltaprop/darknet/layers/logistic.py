"""``[logistic]`` (``logistic_layer.c``): the logistic function; with a truth Darknet trains it by binary
cross-entropy, delta = t − p at the logits (``loss``, ``functional.darknet_loss``). The backward here is the
standard one, dy·p(1 − p) (docs/equations.md §5, ``functional.activation.sigmoid_backward``)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional import darknet_loss as dl
from ...functional.activation import sigmoid_backward, sigmoid_forward
from ..cfg import Section
from .base import LayerSpec, LossLayer, LossResult, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [logistic] section, with its shapes and summary line."""
    shape = ctx.prev_shape
    n = shape[0] * shape[1] * shape[2]
    table = f"logistic x entropy                             {n:4d}"
    return LayerSpec(ctx.index, "logistic", sec, (ctx.prev_index,), shape, shape, common_attrs(sec), 0, 0.0, 0, table)


class LogisticLayer(LossLayer):
    """σ(x); with a truth, trained by binary cross-entropy (``loss``)."""

    kind = "logistic"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        y, cache = sigmoid_forward(x)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        return sigmoid_backward(dout, cache) if self.needs_input_grad else None

    def loss(self, x: np.ndarray, out: np.ndarray, truth, g_out: Optional[np.ndarray] = None,
             fixed: Optional[object] = None) -> LossResult:
        """docs/equations.md §10 (``[logistic]``): binary cross-entropy of σ(x) against the truth, ``p − t``
        at the logits (both numerics). Darknet passes what reached its output down unchanged; standard
        numerics through σ', and ∂BCE/∂p at the output (``bce_output_grad``)."""
        self._no_decisions(fixed)
        t = dl.truth_like(out, truth, f"layer {self.index} [logistic]")
        p, cost, own = dl.darknet_logistic(x, t)
        if self.numerics == "darknet":
            g = dl.add_grads(own, g_out)
            return LossResult(self.index, cost, g, g)
        below = self.backward(g_out) if g_out is not None else None
        return LossResult(self.index, cost, dl.add_grads(dl.bce_output_grad(p, own), g_out),
                          dl.add_grads(own, below))
