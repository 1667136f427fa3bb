"""``[avgpool]`` (``avgpool_layer.c``): global average over each channel; backward shares the delta
equally, dividing it by h·w (docs/equations.md §4). Output (N, C, 1, 1)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    c, h, w = ctx.prev_shape
    table = f"avg                     {w:4d} x{h:4d} x{c:4d}   ->  {c:4d}"
    return LayerSpec(ctx.index, "avgpool", sec, (ctx.prev_index,), (c, h, w), (c, 1, 1), common_attrs(sec),
                     0, 0.0, 0, table)


class AvgpoolLayer(DarknetLayer):
    kind = "avgpool"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        self._save(x.shape)
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        shape = self._take()
        if not self.needs_input_grad:
            return None
        hw = shape[2] * shape[3]
        return np.broadcast_to(dout / dout.dtype.type(hw), shape).copy()
