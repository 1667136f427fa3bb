"""``[yolo]`` (``yolo_layer.c``, docs/equations.md §9): per anchor of the mask the planes
``[x, y, w, h, obj, class_1..K]``; forward applies the logistic to x, y, objectness and the classes and
leaves w, h raw. Decoding to boxes is ``deltaprop.detect.boxes``. Training: ``loss`` returns a ``YoloLossResult``:
Darknet's deltas (``forward_yolo_layer``; the targets in ``functional.yolo_loss``), the assignment they come from
and the per-batch statistics Darknet prints."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import ShapeError
from ...functional import yolo_loss as yl
from ...functional.activation import sigmoid_derivative, sigmoid_forward
from ..cfg import Section
from .base import LayerSpec, LossLayer, LossResult, PlanContext, common_attrs


#: Sane upper bounds for counts read from a cfg (Darknet's largest, yolo9000, has 9418 classes and 9 anchors;
#: ``max`` is the truth boxes kept per image, 90 by default): beyond them a value is a typo, not a network.
MAX_CLASSES = 100_000
MAX_ANCHORS = 4096
MAX_BOXES = 100_000


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [yolo] section checked (mask, anchors, classes and the input channels agree), with its shapes."""
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
                 net_size=(ctx.input_shape[2], ctx.input_shape[1]),
                 max_boxes=sec.get_int("max", 90, lo=1, hi=MAX_BOXES), jitter=sec.get_float("jitter", 0.2),
                 ignore_thresh=sec.get_float("ignore_thresh", 0.5), truth_thresh=sec.get_float("truth_thresh", 1.0),
                 random=bool(sec.get_int("random", 0)))
    return LayerSpec(ctx.index, "yolo", sec, (ctx.prev_index,), (c, h, w), (c, h, w), attrs, 0, 0.0, 0, "yolo")


@dataclass
class YoloLossResult(LossResult):
    """A ``LossResult`` of ``[yolo]``: ``assignment`` is the ``YoloAssignment`` the deltas come from and
    ``stats`` the ``YoloStats`` Darknet prints for this head and forward pass."""
    assignment: Optional[yl.YoloAssignment] = None
    stats: Optional[yl.YoloStats] = None

    def stats_row(self) -> Dict[str, float]:
        """The statistics with Darknet's names and this head's ``layer`` (one "Region" line's numbers)."""
        return dict(self.stats.as_dict() if self.stats is not None else {}, layer=self.layer)


class YoloLayer(LossLayer):
    """Output (N, len(mask)·(5 + classes), H, W) with x, y, obj, classes in (0, 1); w, h raw.
    ``anchors`` are all ``num`` (width, height) pairs in network pixels; ``mask`` picks this layer's;
    ``net_size`` is the network input's (width, height), which the box targets are relative to."""

    kind = "yolo"
    detection_head = True

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(spec, numerics)
        a = spec.attrs
        self.classes, self.total, self.mask = a["classes"], a["total"], list(a["mask"])
        self.anchors: List[Tuple[float, float]] = [(a["anchors"][2 * i], a["anchors"][2 * i + 1])
                                                   for i in range(self.total)]
        self.max_boxes, self.jitter, self.random = a["max_boxes"], a["jitter"], a["random"]
        self.ignore_thresh, self.truth_thresh = a["ignore_thresh"], a["truth_thresh"]
        self.net_size: Tuple[int, int] = a["net_size"]
        self._warned_max = False

    def resize(self, spec: LayerSpec) -> None:
        """The new shapes and the new network input size (multi-scale training)."""
        super().resize(spec)
        self.net_size = spec.attrs["net_size"]

    @property
    def n_anchors(self) -> int:
        """Anchors this layer predicts with (its ``mask``)."""
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
        v[:, :, 0:2] = self._logistic(v[:, :, 0:2])
        v[:, :, 4:] = self._logistic(v[:, :, 4:])
        self._save((x, y))  # the raw input is kept for the training loss
        return y

    def _logistic(self, z: np.ndarray) -> np.ndarray:
        """Darknet numerics: ``1./(1. + exp(-x))`` in double rounded to the dtype, as ``activate_array``."""
        if self.numerics == "darknet" and z.dtype == np.float32:
            with np.errstate(over="ignore"):        # e^{-z} = inf gives 0, as in C
                return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)
        return sigmoid_forward(z)[0]

    def truths(self, targets: Sequence[np.ndarray], n: int) -> List[np.ndarray]:
        """Per image, Darknet's truth rows [x, y, w, h, class] from detection targets (one (k, 5) array of
        ``[class, x, y, w, h]`` per image): the first ``max`` boxes (a warning, once, when there are more)."""
        if isinstance(targets, np.ndarray) and targets.ndim == 2 and n == 1:
            targets = [targets]
        if len(targets) != n:
            raise ShapeError(f"layer {self.index} [yolo]: {len(targets)} target arrays for a batch of {n} "
                             f"images (one (k, 5) array of [class, x, y, w, h] rows per image)")
        out = []
        for b, rows in enumerate(targets):
            tr, dropped = yl.darknet_truths(rows, self.max_boxes, self.classes,
                                            f"layer {self.index} [yolo], image {b}: ")
            if dropped and not self._warned_max:
                warnings.warn(f"layer {self.index} [yolo]: an image has {len(rows)} boxes, more than max="
                              f"{self.max_boxes}; only the first {self.max_boxes} are trained (said once)",
                              RuntimeWarning, stacklevel=3)
                self._warned_max = True
            out.append(tr)
        return out

    def loss(self, x: np.ndarray, out: np.ndarray, truth, g_out: Optional[np.ndarray] = None,
             fixed: Optional[yl.YoloAssignment] = None) -> YoloLossResult:
        """Darknet's training of this head (``forward_yolo_layer``; docs/equations.md §9): the targets of
        ``functional.yolo_loss.yolo_assign`` (or ``fixed``, an earlier result's assignment, held fixed),
        delta ``scale·(target − output)``, gradient ``−delta`` at the raw input (no logistic derivative).
        Darknet numerics: cost ``Σ delta²``; standard: the differentiable loss (``yolo_standard_loss``), whose
        exact gradient that is. The result carries the assignment and its statistics."""
        if g_out is not None:
            raise ShapeError(f"layer {self.index} [yolo]: a layer reads the [yolo] output; only the loss starts "
                             f"at a [yolo] layer")
        asg = fixed
        if asg is None:
            net_w, net_h = self.net_size
            asg = yl.yolo_assign(out, self.truths(truth, out.shape[0]), self.anchors, self.mask, self.classes,
                                 net_w, net_h, self.ignore_thresh, self.truth_thresh)
        elif asg.mask.shape != self.split(out).shape:
            raise ShapeError(f"layer {self.index} [yolo]: the assignment to hold fixed is for outputs "
                             f"{asg.mask.shape}, this pass's are {self.split(out).shape}")
        if self.numerics == "darknet":
            g = -asg.delta(out)
            return YoloLossResult(self.index, yl.darknet_yolo_cost(g), g, g, asg, asg.stats)
        cost, g_in = yl.yolo_standard_loss(x, asg)
        return YoloLossResult(self.index, cost, yl.yolo_standard_output_grad(out, asg), g_in, asg, asg.stats)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        _, y = self._take()
        if not self.needs_input_grad:
            return None
        dx = dout.copy()
        d, v = self.split(dx), self.split(y)
        d[:, :, 0:2] *= sigmoid_derivative(v[:, :, 0:2])
        d[:, :, 4:] *= sigmoid_derivative(v[:, :, 4:])
        return dx

    def extra_repr(self) -> str:
        return f"{self.index}: classes {self.classes}, anchors {self.masked_anchors}"
