"""``[maxpool]`` (``maxpool_layer.c``): Darknet's geometry. ``padding`` defaults to size − 1; output
``⌊(w + padding − size)/stride⌋ + 1``; windows start at −⌊padding/2⌋ (asymmetric padding, −∞ outside);
the first maximum in row-major order wins a tie and alone receives the delta (docs/equations.md §4).
AlexeyAB's ``maxpool_depth=1 out_channels=G`` pools across channels instead (``functional.channel_maxpool``):
the output keeps the map size and has G channels."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional.channel_maxpool import channel_maxpool_backward, channel_maxpool_forward
from ...functional.pool import max_pool2d_backward, max_pool2d_forward
from ...functional.pool_geometry import darknet_maxpool_padding
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs, fits


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [maxpool] section checked (size, stride, padding fit the input), with Darknet's output size and its
    padding as (top, bottom, left, right)."""
    c, h, w = ctx.prev_shape
    if sec.get_int("maxpool_depth", 0):
        return _plan_depth(sec, ctx)
    if sec.has("out_channels"):
        raise sec.error("out_channels", "is read only with maxpool_depth=1 (AlexeyAB's channel max pooling)")
    stride = sec.get_int("stride", 1, lo=1)
    size = sec.get_int("size", stride, lo=1)
    padding = sec.get_int("padding", size - 1, lo=0)
    fits(sec, "height", h + padding, size, "size")
    fits(sec, "width", w + padding, size, "size")
    oh = (h + padding - size) // stride + 1
    ow = (w + padding - size) // stride + 1
    lo = padding // 2
    for n, o in ((h, oh), (w, ow)):
        # a window wholly outside the input would have no maximum (Darknet writes −FLT_MAX and index −1)
        if lo >= size or (o - 1) * stride - lo >= n:
            raise sec.error("padding", f"padding={padding} puts a whole {size}×{size} window outside the "
                                       f"{h}×{w} input")
    pads = darknet_maxpool_padding(h, w, size, stride, padding)
    attrs = dict(common_attrs(sec), size=size, stride=stride, padding=padding, pads=pads)
    table = f"max          {size} x {size} / {stride}  {w:4d} x{h:4d} x{c:4d}   ->  {ow:4d} x{oh:4d} x{c:4d}"
    return LayerSpec(ctx.index, "maxpool", sec, (ctx.prev_index,), (c, h, w), (c, oh, ow), attrs,
                     0, 0.0, c * (h + padding) * (w + padding), table)  # workspace: the padded copy


def _plan_depth(sec: Section, ctx: PlanContext) -> LayerSpec:
    """``maxpool_depth=1``: max over every ``out_channels``-th channel, the map size kept (AlexeyAB's
    make_maxpool_layer ignores size, stride and padding then)."""
    c, h, w = ctx.prev_shape
    g = sec.get_int("out_channels", 1, lo=1, hi=c)
    attrs = dict(common_attrs(sec), size=1, stride=1, padding=0, pads=(0, 0, 0, 0), depth=g)
    table = f"max          depth -> {g:4d}    {w:4d} x{h:4d} x{c:4d}   ->  {w:4d} x{h:4d} x{g:4d}"
    return LayerSpec(ctx.index, "maxpool", sec, (ctx.prev_index,), (c, h, w), (g, h, w), attrs, 0, 0.0, 0, table)


class MaxpoolLayer(DarknetLayer):
    """Max pooling with Darknet's padding as (top, bottom, left, right) −∞ cells."""

    kind = "maxpool"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.size, self.stride = spec.attrs["size"], spec.attrs["stride"]
        self.padding, self.pads = spec.attrs["padding"], tuple(spec.attrs["pads"])
        self.depth = spec.attrs.get("depth", 0)      # out_channels of channel max pooling, 0 for spatial pooling

    def resize(self, spec: LayerSpec) -> None:
        super().resize(spec)
        self.pads = tuple(spec.attrs["pads"])

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        if self.depth:
            y, cache = channel_maxpool_forward(x, self.depth)
        else:
            y, cache = max_pool2d_forward(x, self.size, self.stride, padding=self.pads)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        if not self.needs_input_grad:
            return None
        return channel_maxpool_backward(dout, cache) if self.depth else max_pool2d_backward(dout, cache)

    def extra_repr(self) -> str:
        return f"{self.index}: {self.size}x{self.size}/{self.stride} padding {self.padding} -> pads {self.pads}"
