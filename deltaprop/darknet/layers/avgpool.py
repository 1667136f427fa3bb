"""``[avgpool]`` (``avgpool_layer.c``): global average over each channel; backward shares the delta
equally, dividing it by h·w (docs/equations.md §4): ``functional.pool``'s adaptive average pooling to 1×1.
Output (N, C, 1, 1)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional.pool import adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [avgpool] section, with its (C, 1, 1) output and summary line."""
    c, h, w = ctx.prev_shape
    table = f"avg                     {w:4d} x{h:4d} x{c:4d}   ->  {c:4d}"
    return LayerSpec(ctx.index, "avgpool", sec, (ctx.prev_index,), (c, h, w), (c, 1, 1), common_attrs(sec),
                     0, 0.0, 0, table)


class AvgpoolLayer(DarknetLayer):
    """Global average pooling: (N, C, H, W) -> (N, C, 1, 1)."""

    kind = "avgpool"

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        y, cache = adaptive_avg_pool2d_forward(x, 1)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        return adaptive_avg_pool2d_backward(dout, cache) if self.needs_input_grad else None
