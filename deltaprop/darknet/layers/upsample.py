"""``[upsample] stride=2`` (``upsample_layer.c``): nearest-neighbour upsampling by ``stride`` (each input
cell copied into a stride×stride block, ``functional.shape.upsample_nearest_*``), times ``scale``; backward sums
each block's gradient."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional.shape import upsample_nearest_backward, upsample_nearest_forward
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [upsample] section checked (stride ≥ 1), with the upsampled shape and summary line."""
    c, h, w = ctx.prev_shape
    stride = sec.get_int("stride", 2)
    if stride < 1:
        raise sec.error("stride", f"must be ≥ 1 (Darknet's negative stride, downsampling, is not supported), "
                                  f"got {stride}")
    scale = sec.get_float("scale", 1.0)
    oh, ow = h * stride, w * stride
    table = f"upsample         {stride:2d}x  {w:4d} x{h:4d} x{c:4d}   ->  {ow:4d} x{oh:4d} x{c:4d}"
    return LayerSpec(ctx.index, "upsample", sec, (ctx.prev_index,), (c, h, w), (c, oh, ow),
                     dict(common_attrs(sec), stride=stride, scale=scale), 0, 0.0, 0, table)


class UpsampleLayer(DarknetLayer):
    """Nearest-neighbour upsampling by ``stride``, times ``scale``."""

    kind = "upsample"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.stride, self.scale = spec.attrs["stride"], spec.attrs["scale"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        y, cache = upsample_nearest_forward(x, self.stride)
        if self.scale != 1.0:
            y *= x.dtype.type(self.scale)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        if not self.needs_input_grad:
            return None
        dx = upsample_nearest_backward(dout, cache)
        return dx * dx.dtype.type(self.scale) if self.scale != 1.0 else dx
