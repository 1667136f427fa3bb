"""``[yolo]`` (``yolo_layer.c``, docs/equations.md §9): per anchor of the mask the planes
``[x, y, w, h, obj, class_1..K]``; forward applies the logistic to x, y, objectness and the classes and
leaves w, h raw; AlexeyAB's ``scale_x_y=s`` makes x, y ``s·σ − (s − 1)/2``. Decoding to boxes is
``deltaprop.detect.boxes``. Training: ``loss`` returns a ``YoloLossResult``: Darknet's deltas (pjreddie's
``forward_yolo_layer``, ``functional.yolo_loss``; or, for a layer of AlexeyAB's fork, its ``process_batch``,
``functional.yolo_loss_alexeyab``), the assignment they come from and the per-batch statistics Darknet prints.

AlexeyAB's options (docs/darknet.md, "AlexeyAB's [yolo]"): ``scale_x_y``, ``iou_loss`` (mse, giou, diou, ciou),
``iou_normalizer``, ``obj_normalizer``, ``cls_normalizer``, ``delta_normalizer``, ``max_delta``, ``iou_thresh``,
``iou_thresh_kind``, ``counters_per_class``, ``label_smooth_eps``, ``show_details`` (training); ``nms_kind``,
``beta_nms`` (detection, ``detect.boxes``); ``resize`` (multi-scale training, ``random_size_range``)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import ShapeError, ValueRangeError
from ...functional import yolo_loss as yl
from ...functional import yolo_loss_alexeyab as ab
from ...functional.activation import sigmoid_derivative, sigmoid_forward
from ..cfg import SECTION_KEYS, Section, alexeyab_only
from .base import LayerSpec, LossLayer, LossResult, PlanContext, common_attrs


#: Sane upper bounds for counts read from a cfg (Darknet's largest, yolo9000, has 9418 classes and 9 anchors;
#: ``max`` is the truth boxes kept per image, 90 by default): beyond them a value is a typo, not a network.
MAX_CLASSES = 100_000
MAX_ANCHORS = 4096
MAX_BOXES = 100_000
NMS_KINDS = ("default", "greedynms", "diounms")
#: iou_thresh_kind values AlexeyAB's parser knows (anything else: "iou", with a warning there; an error here)
IOU_KINDS = ("iou", "giou", "diou", "ciou")


def alexeyab_options(sec: Section, classes: int) -> Dict[str, object]:
    """AlexeyAB's [yolo] options with its parse_yolo defaults, checked (§9, AlexeyAB's [yolo])."""
    iou_loss = sec.get_str("iou_loss", "mse")
    if iou_loss not in ab.IOU_LOSSES:
        raise sec.error("iou_loss", f"unknown IoU loss {iou_loss!r} (AlexeyAB's: {', '.join(ab.IOU_LOSSES)})")
    kind = sec.get_str("iou_thresh_kind", "iou")
    if kind not in IOU_KINDS:
        raise sec.error("iou_thresh_kind", f"unknown IoU kind {kind!r} (AlexeyAB's: {', '.join(IOU_KINDS)})")
    max_delta = sec.get_float("max_delta", ab.FLT_MAX, lo=0.0)
    counters = sec.get_int_list("counters_per_class")
    if counters is not None and len(counters) != classes:
        raise sec.error("counters_per_class", f"expected {classes} counts (classes={classes}), got {len(counters)}")
    opt = ab.AlexeyABYoloOptions(
        ignore_thresh=sec.get_float("ignore_thresh", 0.5), truth_thresh=sec.get_float("truth_thresh", 1.0),
        iou_thresh=sec.get_float("iou_thresh", 1.0), iou_thresh_kind=kind, iou_loss=iou_loss,
        iou_normalizer=sec.get_float("iou_normalizer", 0.75), obj_normalizer=sec.get_float("obj_normalizer", 1.0),
        cls_normalizer=sec.get_float("cls_normalizer", 1.0), delta_normalizer=sec.get_float("delta_normalizer", 1.0),
        max_delta=max_delta, scale_x_y=sec.get_float("scale_x_y", 1.0),
        label_smooth_eps=sec.get_float("label_smooth_eps", 0.0, lo=0.0, hi=1.0),
        classes_multipliers=None if counters is None else ab.classes_multipliers(counters, max_delta),
        show_details=bool(sec.get_int("show_details", 1)))
    nms_kind = sec.get_str("nms_kind", "default")
    if nms_kind not in NMS_KINDS:
        raise sec.error("nms_kind", f"unknown NMS kind {nms_kind!r} (deltaprop implements {', '.join(NMS_KINDS)})")
    return dict(alexeyab=opt, nms_kind=nms_kind, beta_nms=sec.get_float("beta_nms", 0.6),
                resize=sec.get_float("resize", 1.0, lo=1.0))


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
    alexeyab = ctx.fork == "alexeyab"
    if not alexeyab:
        for key in sec.options:
            if key in SECTION_KEYS["yolo"] and alexeyab_only("yolo", key):
                raise sec.error(key, "is an option of AlexeyAB's Darknet: load this cfg with fork='alexeyab' "
                                     "(the default for a cfg that uses such options)")
    attrs = dict(common_attrs(sec), classes=classes, total=total, mask=list(mask), anchors=anchors,
                 net_size=(ctx.input_shape[2], ctx.input_shape[1]), fork=ctx.fork,
                 max_boxes=sec.get_int("max", 200 if alexeyab else 90, lo=1, hi=MAX_BOXES),
                 jitter=sec.get_float("jitter", 0.2),
                 ignore_thresh=sec.get_float("ignore_thresh", 0.5), truth_thresh=sec.get_float("truth_thresh", 1.0),
                 # AlexeyAB reads random as a float: its multi-scale coefficient (1 means 1.4)
                 random=sec.get_float("random", 0.0) if alexeyab else bool(sec.get_int("random", 0)))
    attrs.update(alexeyab_options(sec, classes) if alexeyab else
                 dict(alexeyab=None, nms_kind="default", beta_nms=0.6, resize=1.0))
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
        #: AlexeyAB's training options (None for a layer of pjreddie's Darknet)
        self.alexeyab: Optional[ab.AlexeyABYoloOptions] = a["alexeyab"]
        self.scale_x_y = self.alexeyab.scale_x_y if self.alexeyab is not None else 1.0
        #: detection: AlexeyAB's NMS kind and its DIoU exponent (``detect.boxes.nms``)
        self.nms_kind, self.beta_nms = a["nms_kind"], a["beta_nms"]
        #: AlexeyAB's ``resize``: the crop-scale augmentation of ``load_data_detection`` (its detector reads the
        #: LAST layer's), 1.0 = none; see docs/darknet.md, "AlexeyAB's [yolo]"
        self.resize_factor = a["resize"]
        self._warned_max = False

    def resize(self, spec: LayerSpec) -> None:
        """The new shapes and the new network input size (multi-scale training)."""
        super().resize(spec)
        self.net_size = spec.attrs["net_size"]

    @property
    def multiscale_coef(self) -> Optional[float]:
        """AlexeyAB's multi-scale factor (its ``train_detector``): every 10 batches a size ``init·r`` rounded up to
        the net's ``resize_step`` with r drawn in [1, coef] and inverted half the time; ``random=1`` means 1.4,
        another nonzero ``random`` is the factor itself; 0.0 without multi-scale. None for a layer of pjreddie's
        Darknet, whose rule is fixed (320..608, ``DarknetTrainer.next_size``)."""
        if self.alexeyab is None:
            return None
        if not self.random:
            return 0.0
        return 1.4 if float(self.random) == 1.0 else float(self.random)

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
        if self.scale_x_y != 1.0:                   # scal_add_cpu(s, −0.5(s − 1)): float operations
            t = y.dtype.type
            v[:, :, 0:2] = v[:, :, 0:2] * t(self.scale_x_y) + t(-0.5 * (self.scale_x_y - 1))
        self._save((x, y))  # the raw input is kept for the training loss
        return y

    def _logistic(self, z: np.ndarray) -> np.ndarray:
        """Darknet numerics: pjreddie's ``1./(1. + exp(-x))`` in double rounded to the dtype, AlexeyAB's
        ``1.f/(1.f + expf(-x))`` in float, as their ``activate_array``."""
        if self.numerics == "darknet" and z.dtype == np.float32:
            with np.errstate(over="ignore"):        # e^{-z} = inf gives 0, as in C
                if self.fork == "alexeyab":
                    return np.float32(1) / (np.float32(1) + np.exp(-z))
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
        if self.alexeyab is not None and self.numerics == "darknet":
            return self._loss_alexeyab(out, truth, fixed)
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
        if self.alexeyab is not None and fixed is None:
            asg = self._standard_weights(asg)
        cost, g_in = yl.yolo_standard_loss(x, asg)
        return YoloLossResult(self.index, cost, yl.yolo_standard_output_grad(out, asg), g_in, asg, asg.stats)

    def _loss_alexeyab(self, out: np.ndarray, truth, fixed: Optional[ab.AlexeyABAssignment]) -> YoloLossResult:
        """AlexeyAB's ``process_batch`` (``functional.yolo_loss_alexeyab``): its decisions (or ``fixed``'s), its
        deltas and cost; the gradient below is ``−delta·delta_normalizer``."""
        net_w, net_h = self.net_size
        asg = fixed
        if asg is None:
            asg = ab.yolo_assign_alexeyab(out, self.truths(truth, out.shape[0]), self.anchors, self.mask,
                                          self.classes, net_w, net_h, self.alexeyab)
        elif not isinstance(asg, ab.AlexeyABAssignment):
            raise ShapeError(f"layer {self.index} [yolo]: AlexeyAB's layer holds an AlexeyABAssignment fixed, "
                             f"got a {type(asg).__name__}")
        res = ab.yolo_deltas_alexeyab(out, asg, self.anchors, self.mask, self.classes, net_w, net_h, self.alexeyab)
        g = -res.delta
        g_in = g if self.alexeyab.delta_normalizer == 1.0 else g * g.dtype.type(self.alexeyab.delta_normalizer)
        return YoloLossResult(self.index, res.cost, g, g_in, asg, res.stats)

    def _standard_weights(self, asg: yl.YoloAssignment) -> yl.YoloAssignment:
        """The standard loss (§9) of a layer of AlexeyAB's fork: pjreddie's assignment, the box terms weighted by
        ``iou_normalizer``, objectness by ``obj_normalizer``, everything by ``delta_normalizer``. Options without
        a differentiable standard form here are refused by name."""
        o = self.alexeyab
        for key, bad in (("iou_loss", o.iou_loss != "mse"), ("scale_x_y", o.scale_x_y != 1.0),
                         ("iou_thresh", o.iou_thresh < 1.0), ("counters_per_class", o.classes_multipliers is not None),
                         ("label_smooth_eps", o.label_smooth_eps != 0.0), ("max_delta", o.max_delta != ab.FLT_MAX)):
            if bad:
                raise ValueRangeError(f"layer {self.index} [yolo]: {key} has no standard form in deltaprop; train "
                                      f"this layer with numerics='darknet'")
        t = asg.scale.dtype.type
        scale = asg.scale.copy()
        scale[:, :, 0:4] *= t(o.iou_normalizer)
        scale[:, :, 4] *= t(o.obj_normalizer)
        scale *= t(o.delta_normalizer)
        return yl.YoloAssignment(asg.mask, asg.target, scale, asg.stats, asg.truths)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        raw, y = self._take()
        if not self.needs_input_grad:
            return None
        dx = dout.copy()
        d, v = self.split(dx), self.split(y)
        if self.scale_x_y != 1.0:                   # x, y = s·σ(t) − (s − 1)/2: derivative s·σ(1 − σ)
            sig = sigmoid_forward(self.split(raw)[:, :, 0:2])[0]
            d[:, :, 0:2] *= d.dtype.type(self.scale_x_y) * sigmoid_derivative(sig)
        else:
            d[:, :, 0:2] *= sigmoid_derivative(v[:, :, 0:2])
        d[:, :, 4:] *= sigmoid_derivative(v[:, :, 4:])
        return dx

    def extra_repr(self) -> str:
        return f"{self.index}: classes {self.classes}, anchors {self.masked_anchors}"
