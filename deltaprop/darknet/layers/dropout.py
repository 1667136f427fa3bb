"""``[dropout]`` (``dropout_layer.c``): in training each input is zeroed with ``probability`` p and the
rest scaled by 1/(1 − p) (inverted dropout); inference is the identity."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import backend
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    shape = ctx.prev_shape
    p = sec.get_float("probability", 0.5, lo=0.0)
    if p >= 1.0:
        raise sec.error("probability", f"must be < 1, got {p}")
    n = shape[0] * shape[1] * shape[2]
    table = f"dropout       p = {p:.2f}               {n:4d}  ->  {n:4d}"
    return LayerSpec(ctx.index, "dropout", sec, (ctx.prev_index,), shape, shape,
                     dict(common_attrs(sec), probability=p), 0, 0.0, 0, table)


class DropoutLayer(DarknetLayer):
    kind = "dropout"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.probability = spec.attrs["probability"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        if not self.training or self.probability == 0.0:
            self._save(1)
            return x
        t = x.dtype.type
        keep = backend.rng().random(x.shape) >= self.probability
        mask = keep.astype(x.dtype) * t(1.0 / (1.0 - self.probability))
        self._save(mask)
        return x * mask

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        mask = self._take()
        if not self.needs_input_grad:
            return None
        return dout if isinstance(mask, int) else dout * mask
