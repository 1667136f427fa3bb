"""``[shortcut] from=-3`` (``shortcut_layer.c``): ``act(α·prev + β·from)`` (α, β default 1; activation
default linear): a residual connection. Backward: both inputs receive the gradient, scaled by α and β."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..activations import DarknetActivation
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs
from .convolutional import activation_key
from .route import resolve_index


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [shortcut] section checked (``from`` names an earlier layer of the same shape), with its shape."""
    if sec.raw("from") is None:
        raise sec.error("from", "required key is missing")
    src = resolve_index(sec, "from", sec.get_int("from"), ctx.index)
    prev = ctx.prev_shape
    if ctx.index == 0:
        raise sec.error(None, "a shortcut cannot be the first layer")
    other = ctx.shapes[src]
    if other != prev:
        raise sec.error("from", f"layer {src} outputs {other[2]}×{other[1]}×{other[0]} but the previous layer "
                                f"outputs {prev[2]}×{prev[1]}×{prev[0]}: deltaprop adds equal shapes only")
    act = activation_key(sec, "linear")
    attrs = dict(common_attrs(sec), src=src, activation=act, alpha=sec.get_float("alpha", 1.0),
                 beta=sec.get_float("beta", 1.0))
    c, h, w = prev
    table = f"res  {src:3d}                {w:4d} x{h:4d} x{c:4d}   ->  {w:4d} x{h:4d} x{c:4d}"
    return LayerSpec(ctx.index, "shortcut", sec, (ctx.prev_index, src), prev, prev, attrs, 0, 0.0, 0, table)


class ShortcutLayer(DarknetLayer):
    """act(α·previous + β·layer ``from``); backward sends α·δ and β·δ to the two inputs."""

    kind = "shortcut"
    multi_input = True

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        a = spec.attrs
        self.src, self.alpha, self.beta, self.activation = a["src"], a["alpha"], a["beta"], a["activation"]
        self.act = DarknetActivation(self.activation)

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        prev, other = xs
        t = prev.dtype.type
        z = prev + other if self.alpha == 1.0 and self.beta == 1.0 else t(self.alpha) * prev + t(self.beta) * other
        self._save(1)
        return self.act.forward(z)

    def backward(self, dout: np.ndarray) -> List[Optional[np.ndarray]]:
        self._take()
        dz = self.act.backward(dout)
        t = dz.dtype.type
        return [dz if self.alpha == 1.0 else t(self.alpha) * dz, dz if self.beta == 1.0 else t(self.beta) * dz]

    def extra_repr(self) -> str:
        return f"{self.index}: + layer {self.src}, {self.activation}"
