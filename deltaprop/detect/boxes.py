"""Boxes from ``[yolo]`` outputs (Darknet's ``get_yolo_detections``, ``correct_yolo_boxes``, ``box_iou``,
``do_nms_sort``), vectorised over cells and anchors.

Boxes are (x, y, w, h): centre and size, relative to the image (0..1) unless converted with
``geometry.boxes.to_corners``. For each cell (i, j) of an lw×lh grid and anchor n of the layer's mask:
``bx = (i + x)/lw``, ``by = (j + y)/lh``, ``bw = e^w·anchor_w/net_w``, ``bh = e^h·anchor_h/net_h``
(docs/equations.md §9), kept when objectness > thresh; class scores are objectness × class probability,
zeroed at or below thresh.

The box arithmetic (letterbox, IoU, ``get_yolo_box`` and the cap on box sizes) is ``deltaprop.geometry.boxes``;
``letterbox_size`` is imported here for ``deltaprop.detect``'s namespace.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ShapeError
from ..geometry.boxes import box_diou, box_iou, correct_boxes, letterbox_size, to_pixels, yolo_grid_boxes


@dataclass
class Detections:
    """Candidate boxes of one image: ``boxes`` (M, 4) as (x, y, w, h), ``objectness`` (M,),
    ``probs`` (M, classes) = objectness × class probability (0 where ≤ thresh)."""
    boxes: np.ndarray
    objectness: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Box:
    """A detection to report: class, score and pixel corners (left, top, right, bottom)."""
    cls: int
    name: str
    prob: float
    left: int
    top: int
    right: int
    bottom: int

    def __str__(self) -> str:
        return (f"{self.name}: {self.prob * 100:.0f}%  left {self.left} top {self.top} right {self.right} "
                f"bottom {self.bottom}")


def yolo_decode(output: np.ndarray, anchors: Sequence[Tuple[float, float]], classes: int, net_w: int, net_h: int,
                thresh: float = 0.5) -> Detections:
    """Boxes relative to the network input from one image's [yolo] output (A·(5+K), lh, lw), in Darknet's
    order (cell-major, anchor-minor). ``anchors``: the layer's masked (w, h) pairs in network pixels."""
    a = len(anchors)
    if output.ndim != 3 or output.shape[0] != a * (classes + 5):
        raise ShapeError(f"yolo_decode: expected ({a}·({classes}+5), h, w) = ({a * (classes + 5)}, h, w), "
                         f"got {output.shape}")
    _, lh, lw = output.shape
    planes = output.reshape(a, classes + 5, lh, lw).astype(np.float64)
    boxes = yolo_grid_boxes(planes, anchors, net_w, net_h).transpose(1, 2, 0, 3).reshape(-1, 4)
    v = planes.transpose(2, 3, 0, 1).reshape(lh * lw * a, classes + 5)      # Darknet order: cell, then anchor
    obj = v[:, 4]
    keep = obj > thresh
    v, obj, boxes = v[keep], obj[keep], boxes[keep]
    probs = obj[:, None] * v[:, 5:]
    probs = np.where(probs > thresh, probs, 0.0)
    return Detections(boxes, obj, probs)


NMS_KINDS = ("default", "greedynms", "diounms")


def overlap_measure(kind: str, beta: float = 0.6):
    """What an NMS of ``kind`` compares with its threshold: the IoU ("default", Darknet's ``do_nms_sort``), or
    AlexeyAB's ``diounms_sort``: DIoU with its fixed exponent 0.6 ("greedynms", ``box_diou``) or with ``beta``
    ("diounms", ``box_diounms``) (docs/equations.md §9, IoU kinds)."""
    if kind == "default":
        return lambda a, b: box_iou(a, b)
    if kind == "greedynms":
        return lambda a, b: box_diou(np.broadcast_to(a, b.shape), b)
    if kind == "diounms":
        return lambda a, b: box_diou(np.broadcast_to(a, b.shape), b, beta=beta)
    raise ValueError(f"NMS kind must be one of {NMS_KINDS}, got {kind!r}")


def nms_sort(dets: Detections, thresh: float = 0.45, kind: str = "default", beta: float = 0.6) -> Detections:
    """Per-class non-maximum suppression (Darknet's ``do_nms_sort``; AlexeyAB's ``diounms_sort`` for ``kind``
    "greedynms" or "diounms", ``overlap_measure``): boxes with zero objectness are dropped; for each class,
    in order of decreasing score, every later box whose overlap with a kept box exceeds ``thresh`` gets that
    class's score set to 0. Ties keep the input order (a stable sort; Darknet's qsort leaves them unspecified).
    Returns a new Detections."""
    measure = overlap_measure(kind, beta)
    keep = dets.objectness != 0
    boxes, obj, probs = dets.boxes[keep], dets.objectness[keep], dets.probs[keep].copy()
    for k in range(probs.shape[1]):
        order = np.argsort(-probs[:, k], kind="stable")
        for pos, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            rest = order[pos + 1:]
            if rest.size:
                probs[rest[measure(boxes[i], boxes[rest]) > thresh], k] = 0.0
    return Detections(boxes, obj, probs)


def network_nms(net, dets: Detections, thresh: float) -> Detections:
    """``nms_sort`` of the kind the network's last layer names (AlexeyAB's detector reads ``nms_kind`` and
    ``beta_nms`` of ``net.layers[net.n - 1]``; "default" for pjreddie's layers)."""
    last = net.layers[-1]
    return nms_sort(dets, thresh, getattr(last, "nms_kind", "default"), getattr(last, "beta_nms", 0.6))


def report(dets: Detections, img_w: int, img_h: int, thresh: float = 0.5,
           names: Optional[Sequence[str]] = None) -> List[Box]:
    """Every (box, class) with score > thresh, boxes in Darknet's order, then class order."""
    out: List[Box] = []
    for i in range(len(dets)):
        for k in np.nonzero(dets.probs[i] > thresh)[0]:
            name = names[k] if names is not None and k < len(names) else str(int(k))
            out.append(Box(int(k), name, float(dets.probs[i, k]), *to_pixels(dets.boxes[i], img_w, img_h)))
    return out


def concat(parts: Sequence[Detections], classes: int) -> Detections:
    """The candidates of several heads as one ``Detections``, in the order given (empty with ``classes``)."""
    if not parts:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, classes)))
    return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.objectness for p in parts]),
                      np.concatenate([p.probs for p in parts]))


def network_detections(net, outputs: Sequence[np.ndarray], img_w: int, img_h: int, thresh: float = 0.5,
                       letterbox: bool = True, sample: int = 0) -> Detections:
    """Decode every [yolo] layer of ``net`` (its ``detection_heads``) for one image (``sample`` of the batch)
    and undo the letterbox: Darknet's ``get_network_boxes``."""
    net_h, net_w = net.input_shape[1], net.input_shape[2]
    yolos = net.detection_heads
    if len(yolos) != len(outputs):
        raise ShapeError(f"{len(yolos)} [yolo] layers but {len(outputs)} outputs")
    parts = []
    for layer, out in zip(yolos, outputs):
        d = yolo_decode(out[sample], layer.masked_anchors, layer.classes, net_w, net_h, thresh)
        d.boxes = correct_boxes(d.boxes, img_w, img_h, net_w, net_h, letterbox)
        parts.append(d)
    return concat(parts, yolos[0].classes if yolos else 0)
