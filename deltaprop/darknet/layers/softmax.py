"""``[softmax]`` (``softmax_layer.c``): max-subtracted softmax of x/temperature over each of ``groups``
equal slices of a sample's inputs, or over the channels at each pixel with ``spatial=1``.

The backward here is the standard vector–Jacobian product (docs/equations.md §5). Darknet's own backward
passes its delta straight through, because its loss sets that delta at the logits (``t − p``); that
Darknet-exact training path is ``loss`` (``functional.darknet_loss``)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional import darknet_loss as dl
from ...functional.activation import softmax_backward, softmax_forward
from ..cfg import Section
from .base import LayerSpec, LossLayer, LossResult, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [softmax] section checked (groups divide the inputs, temperature > 0), with its shapes."""
    c, h, w = ctx.prev_shape
    n = c * h * w
    groups = sec.get_int("groups", 1, lo=1)
    temperature = sec.get_float("temperature", 1.0)
    if temperature <= 0:
        raise sec.error("temperature", f"must be > 0, got {temperature}")
    spatial = bool(sec.get_int("spatial", 0))
    if sec.has("tree"):
        raise sec.error("tree", "hierarchical softmax (a tree file) is not supported by deltaprop")
    noloss = bool(sec.get_int("noloss", 0))
    if not spatial and n % groups:
        raise sec.error("groups", f"groups={groups} must divide the {n} inputs")
    attrs = dict(common_attrs(sec), groups=groups, temperature=temperature, spatial=spatial, noloss=noloss)
    table = f"softmax                                        {n:4d}"
    return LayerSpec(ctx.index, "softmax", sec, (ctx.prev_index,), (c, h, w), (c, h, w), attrs, 0, 0.0, 0, table)


class SoftmaxLayer(LossLayer):
    """Softmax of x/T per group or per pixel (``spatial``); with a truth, cross-entropy (``loss``)."""

    kind = "softmax"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        a = spec.attrs
        self.groups, self.temperature, self.spatial, self.noloss = a["groups"], a["temperature"], a["spatial"], a["noloss"]

    def _grouped(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.spatial:
            return x.reshape(n, x.shape[1], -1)                  # softmax along axis 1 (channels)
        return x.reshape(n, self.groups, -1)                     # along the last axis

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        z = self._grouped(x)
        if self.temperature != 1.0:
            z = z / x.dtype.type(self.temperature)
        y, cache = softmax_forward(z, axis=1 if self.spatial else -1)
        self._save(cache)
        return y.reshape(x.shape)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        if not self.needs_input_grad:
            return None
        dx = softmax_backward(self._grouped(dout), cache)       # softmax VJP (§5)
        if self.temperature != 1.0:
            dx /= dx.dtype.type(self.temperature)
        return dx.reshape(dout.shape)

    def loss(self, x: np.ndarray, out: np.ndarray, truth, g_out: Optional[np.ndarray] = None,
             fixed: Optional[object] = None) -> LossResult:
        """docs/equations.md §10 (``[softmax]`` and ``[cost]``). Darknet numerics: cost ``Σ_{t≠0} −log p``,
        delta ``t − p`` at the logits plus whatever reached the output, passed down WITHOUT the softmax
        Jacobian. Standard: cost ``−Σ t log p``, its true gradient at the logits (``standard_softmax_loss``),
        and ``g_out`` through the softmax's own backward. ``noloss=1``: cost 0, only ``g_out`` goes on."""
        self._no_decisions(fixed)
        if self.noloss:
            cost, own, own_out = 0.0, None, None
        else:
            t = dl.truth_like(out, truth, f"layer {self.index} [softmax]")
            if self.numerics == "darknet":
                cost, own = dl.darknet_softmax_loss(out, t)
                own_out = own
            else:
                cost, own, own_out = dl.standard_softmax_loss(out, t, self.groups, self.spatial, self.temperature)
        if self.numerics == "darknet":
            g = dl.darknet_softmax_backward(g_out, own)
            return LossResult(self.index, cost, g, g)
        below = self.backward(g_out) if g_out is not None else None
        return LossResult(self.index, cost, dl.add_grads(own_out, g_out), dl.add_grads(own, below))
