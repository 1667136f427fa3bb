"""``[route] layers=-1,8`` (``route_layer.c``): the outputs of the listed layers concatenated along the
channels (negative indices are relative, positive ones absolute). Backward splits the gradient back.

AlexeyAB's ``groups=G group_id=g`` (yolov4-tiny's CSP blocks) takes from each listed output only its g-th of G
equal channel slices, ``x[:, g·C/G:(g+1)·C/G]``, before concatenating; the backward puts each gradient back into
that slice and zeros elsewhere (the adjoint of the slice)."""
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
    groups = sec.get_int("groups", 1, lo=1)
    group_id = sec.get_int("group_id", 0, lo=0, hi=groups - 1)
    shapes = [ctx.shapes[i] for i in idx]
    _, h, w = shapes[0]
    for i, s in zip(idx, shapes):
        if s[1:] != (h, w):
            raise sec.error("layers", f"layer {i} outputs {s[2]}×{s[1]}, but layer {idx[0]} outputs {w}×{h}: "
                                      f"route concatenates maps of one size")
        if s[0] % groups:
            raise sec.error("groups", f"groups={groups} must divide the {s[0]} channels of layer {i}")
    c = sum(s[0] for s in shapes) // groups
    table = "route " + "".join(f" {i}" for i in idx) + (f" (group {group_id} of {groups})" if groups > 1 else "")
    return LayerSpec(ctx.index, "route", sec, idx, shapes[0], (c, h, w),
                     dict(common_attrs(sec), layers=idx, groups=groups, group_id=group_id), 0, 0.0, 0, table)


class RouteLayer(DarknetLayer):
    """Reads several earlier outputs (``multi_input``): forward gets the list, backward returns one
    gradient per input."""

    kind = "route"
    multi_input = True

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        self.layers = tuple(spec.attrs["layers"])
        self.groups, self.group_id = spec.attrs.get("groups", 1), spec.attrs.get("group_id", 0)

    def _slice(self, channels: int) -> slice:
        """The channels of an input of ``channels`` this route reads: its ``group_id``-th of ``groups`` slices."""
        part = channels // self.groups
        return slice(self.group_id * part, (self.group_id + 1) * part)

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        self._save([x.shape for x in xs])
        if self.groups > 1:
            xs = [x[:, self._slice(x.shape[1])] for x in xs]
        return xs[0] if len(xs) == 1 and self.groups == 1 else np.concatenate(xs, axis=1)

    def backward(self, dout: np.ndarray) -> List[Optional[np.ndarray]]:
        shapes = self._take()
        parts = [s[1] // self.groups for s in shapes]
        pieces = [dout] if len(shapes) == 1 else list(np.split(dout, np.cumsum(parts)[:-1], axis=1))
        if self.groups == 1:
            return pieces
        out = []
        for shape, g in zip(shapes, pieces):
            full = np.zeros(shape, dtype=dout.dtype)
            full[:, self._slice(shape[1])] = g
            out.append(full)
        return out

    def extra_repr(self) -> str:
        grp = f" group {self.group_id} of {self.groups}" if self.groups > 1 else ""
        return f"{self.index}: layers {list(self.layers)}{grp} -> {self.out_shape}"
