"""Boxes from ``[yolo]`` outputs (Darknet's ``get_yolo_detections``, ``correct_yolo_boxes``, ``box_iou``,
``do_nms_sort``), vectorised over cells and anchors.

Boxes are (x, y, w, h): centre and size, relative to the image (0..1) unless converted with
``to_corners``. For each cell (i, j) of an lw×lh grid and anchor n of the layer's mask:
``bx = (i + x)/lw``, ``by = (j + y)/lh``, ``bw = e^w·anchor_w/net_w``, ``bh = e^h·anchor_h/net_h``
(docs/equations.md §9), kept when objectness > thresh; class scores are objectness × class probability,
zeroed at or below thresh.

The exponent of ``e^w``, ``e^h`` is capped at ``MAX_LOG_SIZE`` (30): an untrained network's raw w, h can be
in the hundreds, where ``e^w`` overflows to infinity (NumPy warnings, then ``inf·0 = NaN`` sizes and IoUs).
A box e^30 ≈ 10^13 anchors wide has an IoU of at most (image width)/(its width), below 10^-9 with any box
inside the image even for a 1-pixel anchor on a 4096-pixel input, and Darknet's infinite one has IoU 0 (or
NaN, which no comparison passes): every decision against a threshold above 10^-9 (ignore/truth thresholds,
NMS) is unchanged. Below the cap the sizes are bit for bit Darknet's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ShapeError

#: The largest exponent of a box size ``e^t·anchor`` (see the module docstring); larger raw t are capped.
MAX_LOG_SIZE = 30.0


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


def letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> Tuple[int, int]:
    """The (new_w, new_h) an image is resized to inside the net's canvas (Darknet's integer arithmetic)."""
    if np.float32(net_w) / np.float32(img_w) < np.float32(net_h) / np.float32(img_h):
        return net_w, (img_h * net_w) // img_w
    return (img_w * net_h) // img_h, net_h


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


def correct_boxes(boxes: np.ndarray, img_w: int, img_h: int, net_w: int, net_h: int,
                  letterbox: bool = True) -> np.ndarray:
    """Undo the letterbox (Darknet's ``correct_yolo_boxes``): boxes relative to the network input become
    relative to the original image. Without letterboxing (a plain resize) the boxes are unchanged."""
    if not letterbox:
        return boxes.copy()
    new_w, new_h = letterbox_size(img_w, img_h, net_w, net_h)
    out = boxes.astype(np.float64, copy=True)
    out[:, 0] = (out[:, 0] - (net_w - new_w) / 2.0 / net_w) / (new_w / net_w)
    out[:, 1] = (out[:, 1] - (net_h - new_h) / 2.0 / net_h) / (new_h / net_h)
    out[:, 2] *= net_w / new_w
    out[:, 3] *= net_h / new_h
    return out


def box_iou(a: np.ndarray, b: np.ndarray, dtype=np.float64) -> np.ndarray:
    """IoU of (x, y, w, h) boxes, broadcasting (Darknet's ``box_iou``: ``overlap``, ``box_intersection``,
    ``box_union``, in that order of operations; 0 where the union is empty). ``dtype=np.float32`` repeats
    Darknet's float arithmetic operation for operation (its training thresholds compare these IoUs)."""
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    two = a.dtype.type(2)
    ow = np.minimum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two) - \
        np.maximum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two)
    oh = np.minimum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two) - \
        np.maximum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two)
    inter = np.where((ow < 0) | (oh < 0), a.dtype.type(0), ow * oh)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(dtype, copy=False)


def yolo_grid_boxes(raw: np.ndarray, anchors: Sequence[Tuple[float, float]], net_w: int, net_h: int) -> np.ndarray:
    """Every prediction's box (x, y, w, h) relative to the network input, in the dtype of ``raw``
    (Darknet's ``get_yolo_box``; docs/equations.md §9): ``raw`` is one image's [yolo] output viewed as
    (A, 5+K, lh, lw) with x, y already through the logistic; ``anchors`` the layer's masked (w, h) pairs.
    Returns (A, lh, lw, 4). As in Darknet, x and y are float sums, w and h ``exp`` in double rounded,
    the exponent capped at ``MAX_LOG_SIZE`` (NaN stays NaN)."""
    a, _, lh, lw = raw.shape
    dt = raw.dtype
    col = np.arange(lw, dtype=dt)[None, None, :]
    row = np.arange(lh, dtype=dt)[None, :, None]
    anc = np.asarray(anchors, dtype=dt).reshape(a, 1, 1, 2).astype(np.float64)
    out = np.empty((a, lh, lw, 4), dtype=dt)
    out[..., 0] = (col + raw[:, 0]) / dt.type(lw)
    out[..., 1] = (row + raw[:, 1]) / dt.type(lh)
    out[..., 2] = np.exp(np.minimum(raw[:, 2].astype(np.float64), MAX_LOG_SIZE)) * anc[..., 0] / net_w
    out[..., 3] = np.exp(np.minimum(raw[:, 3].astype(np.float64), MAX_LOG_SIZE)) * anc[..., 1] / net_h
    return out


def nms_sort(dets: Detections, thresh: float = 0.45) -> Detections:
    """Per-class non-maximum suppression (Darknet's ``do_nms_sort``): boxes with zero objectness are
    dropped; for each class, in order of decreasing score, every later box whose IoU with a kept box
    exceeds ``thresh`` gets that class's score set to 0. Ties keep the input order (a stable sort;
    Darknet's qsort leaves them unspecified). Returns a new Detections."""
    keep = dets.objectness != 0
    boxes, obj, probs = dets.boxes[keep], dets.objectness[keep], dets.probs[keep].copy()
    for k in range(probs.shape[1]):
        order = np.argsort(-probs[:, k], kind="stable")
        for pos, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            rest = order[pos + 1:]
            if rest.size:
                probs[rest[box_iou(boxes[i], boxes[rest]) > thresh], k] = 0.0
    return Detections(boxes, obj, probs)


def to_pixels(box: np.ndarray, img_w: int, img_h: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels (Darknet's ``draw_detections`` truncation), each clamped to the
    image as Darknet's ``draw_box`` does."""
    x, y, w, h = (float(v) for v in box)
    cx = lambda v: min(max(v, 0), img_w - 1)
    cy = lambda v: min(max(v, 0), img_h - 1)
    return (cx(int((x - w / 2) * img_w)), cy(int((y - h / 2) * img_h)), cx(int((x + w / 2) * img_w)),
            cy(int((y + h / 2) * img_h)))


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
    if not parts:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, classes)))
    return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.objectness for p in parts]),
                      np.concatenate([p.probs for p in parts]))


def network_detections(net, outputs: Sequence[np.ndarray], img_w: int, img_h: int, thresh: float = 0.5,
                       letterbox: bool = True, sample: int = 0) -> Detections:
    """Decode every [yolo] layer of ``net`` for one image (``sample`` of the batch) and undo the letterbox:
    Darknet's ``get_network_boxes``."""
    net_h, net_w = net.input_shape[1], net.input_shape[2]
    yolos = [layer for layer in net.layers if layer.kind == "yolo"]
    if len(yolos) != len(outputs):
        raise ShapeError(f"{len(yolos)} [yolo] layers but {len(outputs)} outputs")
    parts = []
    for layer, out in zip(yolos, outputs):
        d = yolo_decode(out[sample], layer.masked_anchors, layer.classes, net_w, net_h, thresh)
        d.boxes = correct_boxes(d.boxes, img_w, img_h, net_w, net_h, letterbox)
        parts.append(d)
    return concat(parts, yolos[0].classes if yolos else 0)
