"""``[dropout]`` (``dropout_layer.c``): in training each input is zeroed with ``probability`` p and the
rest scaled by 1/(1 − p) (inverted dropout, ``functional.shape.dropout_forward``); inference is the identity."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ... import backend
from ...functional.shape import DropoutCache, dropout_backward, dropout_forward
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [dropout] section checked (0 ≤ probability < 1), with its shapes and summary line."""
    shape = ctx.prev_shape
    p = sec.get_float("probability", 0.5, lo=0.0)
    if p >= 1.0:
        raise sec.error("probability", f"must be < 1, got {p}")
    n = shape[0] * shape[1] * shape[2]
    table = f"dropout       p = {p:.2f}               {n:4d}  ->  {n:4d}"
    return LayerSpec(ctx.index, "dropout", sec, (ctx.prev_index,), shape, shape,
                     dict(common_attrs(sec), probability=p), 0, 0.0, 0, table)


class DropoutLayer(DarknetLayer):
    """Inverted dropout in training (``functional.shape.dropout_forward``), the identity in inference."""

    kind = "dropout"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.probability = spec.attrs["probability"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        if not self.training or self.probability == 0.0:
            self._save(DropoutCache(None))
            return x
        y, cache = dropout_forward(x, self.probability, backend.rng())
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        return dropout_backward(dout, cache) if self.needs_input_grad else None
