"""``[yolo]`` (``yolo_layer.c``, EQUATIONS.md §9): per anchor of the mask the planes
``[x, y, w, h, obj, class_1..K]``; forward applies the logistic to x, y, objectness and the classes and
leaves w, h raw. Decoding to boxes is ``deltaprop.detect.boxes``; the training loss is the trainer's."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ...functional.activation import sigmoid_forward
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs


#: Sane upper bounds for counts read from a cfg (Darknet's largest, yolo9000, has 9418 classes and 9 anchors;
#: ``max`` is the truth boxes kept per image, 90 by default): beyond them a value is a typo, not a network.
MAX_CLASSES = 100_000
MAX_ANCHORS = 4096
MAX_BOXES = 100_000


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    c, h, w = ctx.prev_shape
    classes = sec.get_int("classes", 20, lo=0, hi=MAX_CLASSES)
    total = sec.get_int("num", 1, lo=1, hi=MAX_ANCHORS)
    # defaults are built only when the key is absent: a typo in ``num`` must not cost memory before its error
    mask = sec.get_int_list("mask") if sec.has("mask") else list(range(total))
    for m in mask:
        if not 0 <= m < total:
            raise sec.error("mask", f"anchor index {m} is outside 0..{total - 1} (num={total})")
    anchors = sec.get_float_list("anchors") if sec.has("anchors") else [0.5] * (2 * total)
    if len(anchors) != 2 * total:
        raise sec.error("anchors", f"expected {2 * total} numbers (num={total} width,height pairs), "
                                   f"got {len(anchors)}")
    if sec.has("map"):
        raise sec.error("map", "class maps (a map file) are not supported by deltaprop")
    need = len(mask) * (classes + 5)
    if c != need:
        raise sec.error(None, f"expects {need} input channels (len(mask)={len(mask)} × (classes={classes} + 5)) "
                              f"but layer {ctx.index - 1} outputs {c}")
    attrs = dict(common_attrs(sec), classes=classes, total=total, mask=list(mask), anchors=anchors,
                 max_boxes=sec.get_int("max", 90, lo=1, hi=MAX_BOXES), jitter=sec.get_float("jitter", 0.2),
                 ignore_thresh=sec.get_float("ignore_thresh", 0.5), truth_thresh=sec.get_float("truth_thresh", 1.0),
                 random=bool(sec.get_int("random", 0)))
    return LayerSpec(ctx.index, "yolo", sec, (ctx.prev_index,), (c, h, w), (c, h, w), attrs, 0, 0.0, 0, "yolo")


class YoloLayer(DarknetLayer):
    """Output (N, len(mask)·(5 + classes), H, W) with x, y, obj, classes in (0, 1); w, h raw.
    ``anchors`` are all ``num`` (width, height) pairs in network pixels; ``mask`` picks this layer's."""

    kind = "yolo"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        a = spec.attrs
        self.classes, self.total, self.mask = a["classes"], a["total"], list(a["mask"])
        self.anchors: List[Tuple[float, float]] = [(a["anchors"][2 * i], a["anchors"][2 * i + 1])
                                                   for i in range(self.total)]
        self.max_boxes, self.jitter, self.random = a["max_boxes"], a["jitter"], a["random"]
        self.ignore_thresh, self.truth_thresh = a["ignore_thresh"], a["truth_thresh"]

    @property
    def n_anchors(self) -> int:
        return len(self.mask)

    @property
    def masked_anchors(self) -> List[Tuple[float, float]]:
        """(width, height) in network pixels of this layer's anchors, in mask order."""
        return [self.anchors[m] for m in self.mask]

    def split(self, out: np.ndarray) -> np.ndarray:
        """View an output (N, A·(5+K), H, W) as (N, A, 5+K, H, W)."""
        n, _, h, w = out.shape
        return out.reshape(n, self.n_anchors, self.classes + 5, h, w)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        y = x.copy()
        v = self.split(y)
        v[:, :, 0:2] = sigmoid_forward(v[:, :, 0:2])[0]
        v[:, :, 4:] = sigmoid_forward(v[:, :, 4:])[0]
        self._save((x, y))  # the raw input is kept for the training loss
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        _, y = self._take()
        if not self.needs_input_grad:
            return None
        dx = dout.copy()
        d, v = self.split(dx), self.split(y)
        d[:, :, 0:2] *= v[:, :, 0:2] * (1 - v[:, :, 0:2])
        d[:, :, 4:] *= v[:, :, 4:] * (1 - v[:, :, 4:])
        return dx

    def extra_repr(self) -> str:
        return f"{self.index}: classes {self.classes}, anchors {self.masked_anchors}"
