"""``[route] layers=-1,8`` (``route_layer.c``): the outputs of the listed layers concatenated along the
channels (negative indices are relative, positive ones absolute). Backward splits the gradient back."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


def resolve_index(sec: Section, key: str, idx: int, here: int) -> int:
    """Darknet's rule: a negative index counts back from this layer; the result must be an earlier layer."""
    out = here + idx if idx < 0 else idx
    if not 0 <= out < here:
        where = f"layers 0..{here - 1}" if here else "no earlier layer (it is layer 0)"
        raise sec.error(key, f"index {idx} refers to layer {out}, but layer {here} can only read {where}")
    return out


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [route] section checked (its layers exist and share one map size), with the concatenated shape."""
    raw = sec.get_int_list("layers")
    if raw is None:
        raise sec.error("layers", "required key is missing")
    idx = tuple(resolve_index(sec, "layers", i, ctx.index) for i in raw)
    shapes = [ctx.shapes[i] for i in idx]
    _, h, w = shapes[0]
    for i, s in zip(idx, shapes):
        if s[1:] != (h, w):
            raise sec.error("layers", f"layer {i} outputs {s[2]}×{s[1]}, but layer {idx[0]} outputs {w}×{h}: "
                                      f"route concatenates maps of one size")
    c = sum(s[0] for s in shapes)
    table = "route " + "".join(f" {i}" for i in idx)
    return LayerSpec(ctx.index, "route", sec, idx, shapes[0], (c, h, w),
                     dict(common_attrs(sec), layers=idx), 0, 0.0, 0, table)


class RouteLayer(DarknetLayer):
    """Reads several earlier outputs (``multi_input``): forward gets the list, backward returns one
    gradient per input."""

    kind = "route"
    multi_input = True

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.layers = tuple(spec.attrs["layers"])

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        self._save([x.shape[1] for x in xs])
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=1)

    def backward(self, dout: np.ndarray) -> List[Optional[np.ndarray]]:
        sizes = self._take()
        if len(sizes) == 1:
            return [dout]
        cuts = np.cumsum(sizes)[:-1]
        return list(np.split(dout, cuts, axis=1))

    def extra_repr(self) -> str:
        return f"{self.index}: layers {list(self.layers)} -> {self.out_shape}"
