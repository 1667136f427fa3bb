"""Box geometry shared by the loss (``functional.yolo_loss``), the data (``data.detection``) and detection
(``detect``): boxes as (x, y, w, h), centre and size relative to the image (0..1), Darknet's letterbox
arithmetic, its ``box_iou`` and ``get_yolo_box`` (docs/equations.md §9), corners and the IoU of corner boxes
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
