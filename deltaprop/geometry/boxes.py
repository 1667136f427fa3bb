"""Box geometry shared by the loss (``functional.yolo_loss``), the data (``data.detection``) and detection
(``detect``): boxes as (x, y, w, h), centre and size relative to the image (0..1), Darknet's letterbox
arithmetic, its ``box_iou`` and ``get_yolo_box`` (docs/equations.md §9), AlexeyAB's generalised IoUs
(``box_giou``, ``box_diou``, ``box_ciou``, ``box_iou_kind``; §9, IoU kinds), corners and the IoU of corner boxes
that mAP matches with (``to_corners``, ``corner_iou``), pixel corners for drawing (``to_pixels``).

The exponent of ``e^w``, ``e^h`` is capped at ``MAX_LOG_SIZE`` (30): an untrained network's raw w, h can be
in the hundreds, where ``e^w`` overflows to infinity (NumPy warnings, then ``inf·0 = NaN`` sizes and IoUs).
A box e^30 ≈ 10^13 anchors wide has an IoU of at most (image width)/(its width), below 10^-9 with any box
inside the image even for a 1-pixel anchor on a 4096-pixel input, and Darknet's infinite one has IoU 0 (or
NaN, which no comparison passes): every decision against a threshold above 10^-9 (ignore/truth thresholds,
NMS) is unchanged. Below the cap the sizes are bit for bit Darknet's.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

#: The largest exponent of a box size ``e^t·anchor`` (see the module docstring); larger raw t are capped.
MAX_LOG_SIZE = 30.0


def letterbox_size(img_w: int, img_h: int, net_w: int, net_h: int) -> Tuple[int, int]:
    """The (new_w, new_h) an image is resized to inside the net's canvas (Darknet's integer arithmetic)."""
    if np.float32(net_w) / np.float32(img_w) < np.float32(net_h) / np.float32(img_h):
        return net_w, (img_h * net_w) // img_w
    return (img_w * net_h) // img_h, net_h


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


def enclosing(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Width and height of the smallest box enclosing (x, y, w, h) boxes a and b (AlexeyAB's ``box_c``)."""
    two = a.dtype.type(2)
    top = np.minimum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two)
    bot = np.maximum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two)
    left = np.minimum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two)
    right = np.maximum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two)
    return right - left, bot - top


def _pair(a, b, dtype) -> Tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    return np.broadcast_arrays(a, b)


def box_giou(a: np.ndarray, b: np.ndarray, dtype=np.float64) -> np.ndarray:
    """GIoU (§9, IoU kinds; AlexeyAB's ``box_giou``): ``IoU − (C − U)/C`` with C the enclosing box's area, U the
    union; the IoU where C = 0. Broadcasting (x, y, w, h) boxes; float32 repeats Darknet's operations."""
    a, b = _pair(a, b, dtype)
    iou = box_iou(a, b, dtype)
    cw, ch = enclosing(a, b)
    c = cw * ch
    u = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - _intersection(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c == 0, iou, iou - (c - u) / np.where(c == 0, 1, c)).astype(dtype, copy=False)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``box_intersection`` (0 when the boxes do not overlap)."""
    two = a.dtype.type(2)
    ow = np.minimum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two) - \
        np.maximum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two)
    oh = np.minimum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two) - \
        np.maximum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two)
    return np.where((ow < 0) | (oh < 0), a.dtype.type(0), ow * oh)


def box_diou(a: np.ndarray, b: np.ndarray, dtype=np.float64, beta: float = 0.6) -> np.ndarray:
    """DIoU (§9, IoU kinds; AlexeyAB's ``box_diou``, and ``box_diounms`` with another ``beta``):
    ``IoU − (d/c)^β`` with d the squared distance of the centres and c the squared diagonal of the enclosing box;
    AlexeyAB's ``box_diou`` raises to β = 0.6 (the DIoU paper's penalty is β = 1); the IoU where c = 0."""
    a, b = _pair(a, b, dtype)
    iou = box_iou(a, b, dtype)
    cw, ch = enclosing(a, b)
    c = cw * cw + ch * ch
    d = (a[..., 0] - b[..., 0]) * (a[..., 0] - b[..., 0]) + (a[..., 1] - b[..., 1]) * (a[..., 1] - b[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        term = np.power((d / np.where(c == 0, 1, c)).astype(np.float64), beta).astype(dtype)
    return np.where(c == 0, iou, iou - term).astype(dtype, copy=False)


def aspect_term(a: np.ndarray, b: np.ndarray, dtype=np.float64) -> np.ndarray:
    """CIoU's aspect-ratio term ``v = 4/π²·(atan(w_b/h_b) − atan(w_a/h_a))²`` (a: prediction, b: truth), in double
    as AlexeyAB's ``box_ciou`` computes it, stored in ``dtype``."""
    ar_gt = (b[..., 2] / b[..., 3]).astype(np.float64)
    ar_pred = (a[..., 2] / a[..., 3]).astype(np.float64)
    diff = np.arctan(ar_gt) - np.arctan(ar_pred)
    return (4 / (np.pi * np.pi) * diff * diff).astype(dtype)


def box_ciou(a: np.ndarray, b: np.ndarray, dtype=np.float64) -> np.ndarray:
    """CIoU (§9, IoU kinds; AlexeyAB's ``box_ciou``), a the prediction and b the truth:
    ``IoU − (d/c + α·v)`` with ``v = aspect_term``, ``α = v/(1 − IoU + v + 10⁻⁶)``; the IoU where c = 0."""
    a, b = _pair(a, b, dtype)
    t = np.dtype(dtype).type
    iou = box_iou(a, b, dtype)
    cw, ch = enclosing(a, b)
    c = cw * cw + ch * ch
    u = (a[..., 0] - b[..., 0]) * (a[..., 0] - b[..., 0]) + (a[..., 1] - b[..., 1]) * (a[..., 1] - b[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        d = u / np.where(c == 0, 1, c)
        v = aspect_term(a, b, dtype)
        alpha = (v / ((t(1) - iou + v).astype(np.float64) + 0.000001)).astype(dtype)
    return np.where(c == 0, iou, iou - (d + alpha * v)).astype(dtype, copy=False)


#: AlexeyAB's IoU kinds (``IOU_LOSS``: iou, giou, diou, ciou), by name.
IOU_KINDS = {"iou": lambda a, b, dtype: box_iou(a, b, dtype), "giou": box_giou, "diou": box_diou,
             "ciou": box_ciou}


def box_iou_kind(a: np.ndarray, b: np.ndarray, kind: str, dtype=np.float64) -> np.ndarray:
    """AlexeyAB's ``box_iou_kind`` (§9, IoU kinds): the IoU of the named kind ("iou", "giou", "diou", "ciou");
    "mse" is the plain IoU, as in Darknet's switch."""
    return IOU_KINDS.get(kind, IOU_KINDS["iou"])(a, b, dtype=dtype)


def to_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 4) boxes (x, y, w, h), centre and size, as corners (x0, y0, x1, y1)."""
    b = np.asarray(boxes)
    return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                     b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], axis=1)


def corner_iou(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU (D, G) of corner boxes (x0, y0, x1, y1), pycocotools' ``bbIou`` without crowd boxes: 0 where they
    do not overlap or the union is not a positive finite number (mAP's matching; Darknet's training and NMS
    use ``box_iou``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
        h = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
        inter = np.where((w > 0) & (h > 0), w * h, 0.0)
        da = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
        ga = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
        union = da[:, None] + ga[None, :] - inter
        ok = (inter > 0) & np.isfinite(union) & (union > 0)
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


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


def to_pixels(box: np.ndarray, img_w: int, img_h: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels (Darknet's ``draw_detections`` truncation), each clamped to the
    image as Darknet's ``draw_box`` does."""
    x, y, w, h = (float(v) for v in box)
    cx = lambda v: min(max(v, 0), img_w - 1)
    cy = lambda v: min(max(v, 0), img_h - 1)
    return (cx(int((x - w / 2) * img_w)), cy(int((y - h / 2) * img_h)), cx(int((x + w / 2) * img_w)),
            cy(int((y + h / 2) * img_h)))
