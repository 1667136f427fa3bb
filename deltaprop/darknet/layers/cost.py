"""``[cost]`` (``cost_layer.c``): the network's loss on its previous output. Its forward is the identity
(Darknet's ``get_network_output`` skips cost layers, so predictions come from the layer before); the
loss and its delta (``type=sse`` default, smooth, L1, masked; ``scale``) are ``loss`` against a truth
(``functional.darknet_loss``). Backward passes the gradient through unchanged."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional import darknet_loss as dl
from ..cfg import Section
from .base import LayerSpec, LossLayer, LossResult, PlanContext, common_attrs

COST_TYPES = ("sse", "masked", "smooth", "L1", "seg", "wgan")


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [cost] section checked (its type among Darknet's), with its shapes and summary line."""
    shape = ctx.prev_shape
    cost_type = sec.get_str("type", "sse")
    if cost_type not in COST_TYPES:
        raise sec.error("type", f"unknown cost type {cost_type!r} (Darknet's: {', '.join(COST_TYPES)})")
    attrs = dict(common_attrs(sec), cost_type=cost_type, scale=sec.get_float("scale", 1.0),
                 ratio=sec.get_float("ratio", 0.0), noobject_scale=sec.get_float("noobject_scale", 1.0),
                 thresh=sec.get_float("thresh", 0.0))
    n = shape[0] * shape[1] * shape[2]
    table = f"cost                                           {n:4d}"
    return LayerSpec(ctx.index, "cost", sec, (ctx.prev_index,), shape, shape, attrs, 0, 0.0, 0, table)


class CostLayer(LossLayer):
    """The identity in the forward pass; its ``loss`` is the network's loss on the previous output."""

    kind = "cost"
    network_output = False       # Darknet's get_network_output skips [cost]: predictions are the layer before

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        a = spec.attrs
        self.cost_type, self.scale, self.ratio = a["cost_type"], a["scale"], a["ratio"]
        self.noobject_scale, self.thresh = a["noobject_scale"], a["thresh"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        self._save(1)
        return x

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        self._take()
        return dout if self.needs_input_grad else None

    def loss(self, x: np.ndarray, out: np.ndarray, truth, g_out: Optional[np.ndarray] = None,
             fixed: Optional[object] = None) -> LossResult:
        """docs/equations.md §10 (``[softmax]`` and ``[cost]``). Darknet numerics: cost ``Σ error``
        (unscaled), delta ``t − p`` in its buffer, and ``backward_cost_layer`` adds ``scale·delta`` (the whole
        buffer) below. Standard: the true gradient of ``scale·½Σ(t − p)²`` (``standard_cost``)."""
        self._no_decisions(fixed)
        t = dl.truth_like(x, truth, f"layer {self.index} [cost]")
        if self.numerics == "darknet":
            cost, _, own = dl.darknet_cost(x, t, self.cost_type, 1.0)
            g = dl.add_grads(own, g_out)
            return LossResult(self.index, cost, g, g * x.dtype.type(self.scale))
        cost, own = dl.standard_cost(x, t, self.cost_type, self.scale)
        g = dl.add_grads(own, g_out)
        return LossResult(self.index, cost, g, g)
