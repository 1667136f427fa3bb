"""Mean average precision of detections, with the conventions of pycocotools' ``COCOeval`` (bbox).

For each image and class the detections are sorted by decreasing score (a stable sort, as COCOeval's
mergesort) and cut to ``max_dets``; at each IoU threshold t every detection, in that order, is matched
greedily to the not yet matched ground-truth box of its class with the highest IoU ≥ t (on equal IoU the
later box wins, as in COCOeval's loop). Per class, the detections of all images are pooled and sorted by
score (images in order, stable), giving cumulative TP and FP counts, recall ``rc = TP/G`` and precision
``pr = TP/(TP + FP + eps)`` (eps = ``np.spacing(1)``); the precision is made monotone from the right
(``pr[i-1] = max(pr[i-1], pr[i])``) and read at the 101 recall points 0, 0.01, …, 1 (the first detection
whose recall reaches the point; 0 past the last). AP is the mean of those 101 values; mAP@0.5 uses t = 0.5,
COCO mAP the mean over t = 0.50, 0.55, …, 0.95. Classes without ground truth are left out of the means
(their AP is NaN), as COCOeval's -1.

The choices among COCOeval's settings: area range "all" only (no small/medium/large split), max_dets = 100
per image and class, no crowd boxes (Darknet label files have none), IoU of (x, y, w, h) boxes in any one
unit (IoU does not change when the x and y axes are scaled, so normalised label coordinates give the same
result as pixels).

Precision and recall at a score threshold use the matches at IoU 0.5 of the detections with score ≥
``score_thresh`` (greedy matching in score order means the matches of those do not depend on the lower
ones): precision = TP/(TP + FP), recall = TP/G, F1 their harmonic mean, summed over all classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import ShapeError, ValueRangeError
from ..geometry.boxes import corner_iou, to_corners

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_EPS = np.spacing(1)


@dataclass
class MapResult:
    """The evaluation of a detection set.

    ``ap`` (K, T): AP of each class at each IoU threshold (NaN for classes without ground truth);
    ``ap50`` / ``ap5095`` (K,): at IoU 0.5 / averaged over the thresholds; ``map50`` / ``map``: their means
    over the classes with ground truth; ``recall`` (K, T): the recall reached with all detections;
    ``tp``, ``fp``, ``gt`` (K,): counts at IoU 0.5 and score ≥ ``score_thresh``."""
    ap: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt: np.ndarray
    score_thresh: float
    names: List[str] = field(default_factory=list)

    def _at(self, t: float) -> int:
        hit = np.nonzero(np.isclose(self.iou_thresholds, t))[0]
        if hit.size == 0:
            raise ValueRangeError(f"IoU threshold {t} was not evaluated (have {list(self.iou_thresholds)})")
        return int(hit[0])

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, self._at(0.5)]

    @property
    def ap5095(self) -> np.ndarray:
        return _nanmean(self.ap, axis=1)

    @property
    def map50(self) -> float:
        return float(_nanmean(self.ap50))

    @property
    def map75(self) -> float:
        return float(_nanmean(self.ap[:, self._at(0.75)]))

    @property
    def map(self) -> float:
        return float(_nanmean(self.ap5095))

    @property
    def precision(self) -> float:
        tp, fp = int(self.tp.sum()), int(self.fp.sum())
        return tp / (tp + fp) if tp + fp else 0.0

    @property
    def recall_at_thresh(self) -> float:
        g = int(self.gt.sum())
        return int(self.tp.sum()) / g if g else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall_at_thresh
        return 2 * p * r / (p + r) if p + r else 0.0

    def table(self) -> str:
        """Per-class lines and the summary, as Darknet's ``detector map`` prints them."""
        lines = []
        for k in range(self.ap.shape[0]):
            name = self.names[k] if k < len(self.names) else str(k)
            if self.gt[k] == 0 and self.tp[k] + self.fp[k] == 0:
                continue
            ap50 = "   n/a" if np.isnan(self.ap50[k]) else f"{self.ap50[k] * 100:6.2f}"
            ap = "   n/a" if np.isnan(self.ap5095[k]) else f"{self.ap5095[k] * 100:6.2f}"
            lines.append(f"class_id = {k}, name = {name}, ap50 = {ap50} %, ap50-95 = {ap} %  "
                         f"(TP = {int(self.tp[k])}, FP = {int(self.fp[k])}, GT = {int(self.gt[k])})")
        tp, fp, fn = int(self.tp.sum()), int(self.fp.sum()), int(self.gt.sum() - self.tp.sum())
        lines.append(f" for conf_thresh = {self.score_thresh:.2f}, precision = {self.precision:.2f}, "
                     f"recall = {self.recall_at_thresh:.2f}, F1-score = {self.f1:.2f}")
        lines.append(f" for conf_thresh = {self.score_thresh:.2f}, TP = {tp}, FP = {fp}, FN = {fn}")
        lines.append(f" mAP@0.50 = {self.map50:.6f}, mAP@0.75 = {self.map75:.6f}, "
                     f"mAP@[.50:.95] = {self.map:.6f}")
        return "\n".join(lines)

    def as_dict(self) -> Dict[str, object]:
        """Plain numbers (JSON-ready; classes without ground truth get None)."""
        def clean(a):
            return [None if np.isnan(v) else float(v) for v in a]
        return {"map50": self.map50, "map75": self.map75, "map": self.map, "precision": self.precision,
                "recall": self.recall_at_thresh, "f1": self.f1, "score_thresh": self.score_thresh,
                "ap50": clean(self.ap50), "ap50_95": clean(self.ap5095),
                "tp": [int(v) for v in self.tp], "fp": [int(v) for v in self.fp], "gt": [int(v) for v in self.gt]}


def _nanmean(a: np.ndarray, axis: Optional[int] = None):
    a = np.asarray(a, dtype=np.float64)
    valid = ~np.isnan(a)
    total = np.where(valid, a, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _greedy_match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, D) bool: whether each detection (rows of ``ious``, in score order) matches a ground-truth box at
    each threshold, COCOeval's greedy rule."""
    d_count, g_count = ious.shape
    matched = np.zeros((len(thresholds), d_count), dtype=bool)
    if d_count == 0 or g_count == 0:
        return matched
    for ti, t in enumerate(thresholds):
        free = np.ones(g_count, dtype=bool)
        floor = min(float(t), 1 - 1e-10)
        for di in range(d_count):
            cand = np.where(free & (ious[di] >= floor), ious[di], -1.0)
            best = cand.max()
            if best < 0:
                continue
            m = g_count - 1 - int(np.argmax(cand[::-1]))      # the last box with the highest IoU
            free[m] = False
            matched[ti, di] = True
    return matched


def _check(arr, cols: int, what: str, i: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, cols))
    if a.ndim != 2 or a.shape[1] != cols:
        raise ShapeError(f"{what} of image {i}: expected rows of {cols} numbers, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueRangeError(f"{what} of image {i}: non-finite values")
    return a


def _precision_at_points(tp_cum: np.ndarray, fp_cum: np.ndarray, n_gt: int) -> np.ndarray:
    """The 101-point interpolated precision of one class at one threshold."""
    rc = tp_cum / n_gt
    pr = tp_cum / (fp_cum + tp_cum + _EPS)
    pr = np.maximum.accumulate(pr[::-1])[::-1]                 # monotone from the right
    idx = np.searchsorted(rc, RECALL_POINTS, side="left")
    out = np.zeros(len(RECALL_POINTS))
    ok = idx < len(pr)
    out[ok] = pr[idx[ok]]
    return out


def evaluate(ground_truth: Sequence[np.ndarray], detections: Sequence[np.ndarray], classes: int,
             score_thresh: float = 0.25, max_dets: int = 100,
             iou_thresholds: Sequence[float] = tuple(IOU_THRESHOLDS),
             names: Optional[Sequence[str]] = None) -> MapResult:
    """mAP of ``detections`` against ``ground_truth``, one entry per image in the same order.

    ground_truth[i]: (k, 5) rows [class, x, y, w, h] (Darknet's label order, centre and size);
    detections[i]: (m, 6) rows [class, x, y, w, h, score] in the same unit as the ground truth."""
    if len(ground_truth) != len(detections):
        raise ShapeError(f"evaluate: {len(ground_truth)} ground-truth images but {len(detections)} "
                         f"detection images")
    if classes < 1:
        raise ValueRangeError(f"evaluate: classes must be ≥ 1, got {classes}")
    if max_dets < 1:
        raise ValueRangeError(f"evaluate: max_dets must be ≥ 1, got {max_dets}")
    thr = np.asarray(iou_thresholds, dtype=np.float64)
    t_count = len(thr)
    at50 = np.nonzero(np.isclose(thr, 0.5))[0]
    scores: List[List[np.ndarray]] = [[] for _ in range(classes)]
    hits: List[List[np.ndarray]] = [[] for _ in range(classes)]
    n_gt = np.zeros(classes, dtype=np.int64)
    tp = np.zeros(classes, dtype=np.int64)
    fp = np.zeros(classes, dtype=np.int64)
    for i, (gt, dt) in enumerate(zip(ground_truth, detections)):
        gt = _check(gt, 5, "ground truth", i)
        dt = _check(dt, 6, "detections", i)
        for what, a in (("ground truth", gt), ("detections", dt)):
            bad = (a[:, 0] < 0) | (a[:, 0] >= classes) | (a[:, 0] != np.floor(a[:, 0]))
            if bad.any():
                raise ValueRangeError(f"{what} of image {i}: class {a[bad][0, 0]:g} is not one of 0..{classes - 1}")
        gcls = gt[:, 0].astype(np.int64)
        dcls = dt[:, 0].astype(np.int64)
        for k in np.union1d(gcls, dcls):
            g = gt[gcls == k, 1:5]
            d = dt[dcls == k]
            order = np.argsort(-d[:, 5], kind="mergesort")[:max_dets]
            d = d[order]
            m = _greedy_match(corner_iou(to_corners(d[:, 1:5]), to_corners(g)), thr)
            n_gt[k] += len(g)
            scores[k].append(d[:, 5])
            hits[k].append(m)
            if at50.size:
                above = d[:, 5] >= score_thresh
                tp[k] += int(m[at50[0], above].sum())
                fp[k] += int((~m[at50[0], above]).sum())
    ap = np.full((classes, t_count), np.nan)
    recall = np.full((classes, t_count), np.nan)
    for k in range(classes):
        if n_gt[k] == 0:
            continue
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        h = np.concatenate(hits[k], axis=1) if hits[k] else np.zeros((t_count, 0), dtype=bool)
        order = np.argsort(-s, kind="mergesort")
        h = h[:, order]
        tp_cum = np.cumsum(h, axis=1).astype(np.float64)
        fp_cum = np.cumsum(~h, axis=1).astype(np.float64)
        for t in range(t_count):
            ap[k, t] = _precision_at_points(tp_cum[t], fp_cum[t], int(n_gt[k])).mean()
            recall[k, t] = tp_cum[t, -1] / n_gt[k] if h.shape[1] else 0.0
    return MapResult(ap, recall, thr, tp, fp, n_gt, float(score_thresh), list(names or []))
