"""A detector run over a data set: the detections of every image (Darknet's ``validate_detector_map`` and
``validate_detector``), scored with :mod:`deltaprop.detect.map` or written as COCO-style JSON.

mAP is computed in the network's letterboxed coordinates: the ground truth is moved onto the canvas as the
data loader does and the boxes are not moved back (the letterbox scales and shifts each axis, which leaves
every IoU unchanged), so the loader's worker threads can build the batches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.detection import DetectionDataset, DetectionLoader
from ..data.images import load_image
from ..geometry.letterbox import letterbox_image
from .boxes import Detections, network_detections, network_nms
from .map import MapResult, evaluate

# Darknet's coco_ids (detector.c): class k of coco.names → the category id of the COCO annotations.
COCO_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)


def detection_rows(dets: Detections) -> np.ndarray:
    """(m, 6) rows [class, x, y, w, h, score]: one per box and class with a non-zero score (after NMS).
    Boxes with a non-finite coordinate (an untrained network's e^w can overflow) are left out."""
    box_i, cls = np.nonzero(dets.probs > 0)
    if box_i.size == 0:
        return np.zeros((0, 6))
    rows = np.column_stack([cls, dets.boxes[box_i], dets.probs[box_i, cls]])
    return rows[np.isfinite(rows).all(axis=1)]


def batch_detections(net, outputs, thresh: float, nms: float) -> List[np.ndarray]:
    """Detection rows (network coordinates) of every image of a batch's [yolo] outputs."""
    outs = outputs if isinstance(outputs, list) else [outputs]
    rows = []
    for k in range(outs[0].shape[0]):
        with np.errstate(over="ignore", invalid="ignore"):
            d = network_detections(net, outs, 1, 1, thresh, letterbox=False, sample=k)
            if nms > 0:
                d = network_nms(net, d, nms)
        rows.append(detection_rows(d))
    return rows


def detect_dataset(net, images: Sequence, classes: int, batch: int = 8, thresh: float = 0.005,
                   nms: float = 0.45, workers: int = 2) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(ground truth, detections) of every image, both in the network's letterboxed coordinates."""
    _, h, w = net.input_shape
    ds = DetectionDataset(list(images), classes, w, h)
    loader = DetectionLoader(ds, batch, shuffle=False, workers=workers)
    truth: List[np.ndarray] = []
    found: List[np.ndarray] = []
    try:
        for x, targets in loader:
            outs = net.predict(x.astype(net.dtype, copy=False))
            found.extend(batch_detections(net, outs, thresh, nms))
            truth.extend(np.asarray(t, dtype=np.float64).reshape(-1, 5) for t in targets)
    finally:
        loader.close()
    return truth, found


def evaluate_detector(net, images: Sequence, classes: int, names: Optional[Sequence[str]] = None,
                      batch: int = 8, thresh: float = 0.005, nms: float = 0.45, score_thresh: float = 0.25,
                      workers: int = 2) -> MapResult:
    """mAP of ``net`` on ``images`` (paths whose label files follow Darknet's rule). Boxes with a score
    above ``thresh`` count (Darknet's ``detector map`` uses 0.005), after per-class NMS at ``nms``."""
    truth, found = detect_dataset(net, images, classes, batch, thresh, nms, workers)
    return evaluate(truth, found, classes, score_thresh=score_thresh, names=names)


def image_id(path: "os.PathLike[str] | str"):
    """COCO's image id of a file: its name's number (``000000000139.jpg`` → 139), else the name."""
    stem = Path(path).stem
    digits = stem.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else stem


def coco_json_detections(net, images: Sequence, thresh: float = 0.005, nms: float = 0.45,
                         category_ids: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """Darknet's ``validate_detector`` with ``eval=coco``: for every image, every box and class with a score
    above ``thresh`` as ``{"image_id", "category_id", "bbox": [left, top, width, height] in pixels of the
    original image, "score"}``; ``category_ids[k]`` names class k (default k itself)."""
    c, h, w = net.input_shape
    out: List[Dict[str, Any]] = []
    for path in images:
        img = load_image(path, channels=c)
        _, ih, iw = img.shape
        x = letterbox_image(img, w, h)[None].astype(net.dtype, copy=False)
        outs = net.predict(x)
        outs = outs if isinstance(outs, list) else [outs]
        with np.errstate(over="ignore", invalid="ignore"):
            d = network_detections(net, outs, iw, ih, thresh, letterbox=True)
            if nms > 0:
                d = network_nms(net, d, nms)
        iid = image_id(path)
        for cls, bx, by, bw, bh, score in detection_rows(d):
            left = max((bx - bw / 2) * iw, 0.0)
            top = max((by - bh / 2) * ih, 0.0)
            right = min((bx + bw / 2) * iw, float(iw))
            bottom = min((by + bh / 2) * ih, float(ih))
            k = int(cls)
            out.append({"image_id": iid, "category_id": int(category_ids[k]) if category_ids else k,
                        "bbox": [round(left, 3), round(top, 3), round(right - left, 3), round(bottom - top, 3)],
                        "score": round(float(score), 6)})
    return out
