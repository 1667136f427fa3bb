"""The ``[yolo]`` layer's training as AlexeyAB's Darknet computes it (59596d78 ``src/yolo_layer.c``
``process_batch``, ``delta_yolo_box``, ``delta_yolo_class``, ``averages_yolo_deltas``, ``forward_yolo_layer``'s
cost; ``src/box.c`` ``dx_box_iou``; docs/equations.md §9, "AlexeyAB's [yolo]").

What differs from pjreddie's layer (``functional.yolo_loss``):

- x, y are ``s·σ(t) − (s − 1)/2`` (``scale_x_y`` = s); the box compared with the truth uses them.
- Objectness: every prediction gets ``obj_normalizer·(0 − obj)``; none where its best IoU with a truth exceeds
  ``ignore_thresh`` AND some class probability of the cell exceeds 0.25; ``obj_normalizer·(1 − obj)`` plus the
  class and box deltas of its best truth where that IoU (any class) exceeds ``truth_thresh``.
- Each truth trains its best anchor among all ``num`` (as pjreddie's) and, with ``iou_thresh`` < 1, every other
  anchor of the mask whose shape IoU of kind ``iou_thresh_kind`` exceeds ``iou_thresh``; the responsible
  objectness is ``m·obj_normalizer·(1 − obj)`` with m the class's ``counters_per_class`` multiplier (1 without).
- Box (``iou_loss``): ``mse`` adds ``(2 − w·h)·iou_normalizer·m·(target − output)`` (pjreddie's targets, x, y
  against the scaled outputs); ``giou``/``diou``/``ciou`` add ``iou_normalizer·m·∇`` with ∇ = ``dx_box_iou``,
  the w, h parts times ``e^t`` (no 2 − w·h), NaN/inf set to 0, clipped to ±``max_delta``. Box deltas of two
  truths in one cell add up.
- Classes: if the truth class's own delta is already nonzero only it is set (to ``y − p``), else every class gets
  ``y_k − p_k``; ``y`` = 1/0 smoothed by ``label_smooth_eps`` (``y(1 − ε) + ε/2``); the truth class times
  ``m·cls_normalizer`` when ``counters_per_class`` is given (AlexeyAB applies ``cls_normalizer`` only then).
- With ``iou_thresh`` < 1 the box deltas of a cell with an objectness delta are divided by the number of its
  classes with a positive delta (``averages_yolo_deltas``).
- Cost (``show_details=1``, the default): ``obj_normalizer·Σ(delta² off the box entries)`` + (iou losses)
  ``iou_normalizer·Σ(1 − IoU)/count`` (mse: ``Σ delta²`` over all). ``show_details=0``: ``Σ delta²``.

The gradient sent below is ``−delta`` at the raw input (no logistic or ``scale_x_y`` derivative), times
``delta_normalizer`` (AlexeyAB's GPU code; its CPU code ignores it).

In float32 the operations are Darknet's: box IoUs (``geometry.boxes``), targets, ``dx_box_iou`` in float with
``exp``/``atan``/``pow`` in double, so its threshold decisions and deltas come out the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ShapeError
from ..geometry.boxes import MAX_LOG_SIZE, box_giou, box_iou, box_iou_kind, yolo_grid_boxes
from .yolo_loss import YoloStats, darknet_yolo_cost, head_view, mag_array

IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
FLT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class AlexeyABYoloOptions:
    """The [yolo] options AlexeyAB's training reads (parse_yolo's defaults)."""
    ignore_thresh: float = 0.5
    truth_thresh: float = 1.0
    iou_thresh: float = 1.0
    iou_thresh_kind: str = "iou"
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    delta_normalizer: float = 1.0
    max_delta: float = FLT_MAX
    scale_x_y: float = 1.0
    label_smooth_eps: float = 0.0
    classes_multipliers: Optional[Tuple[float, ...]] = None
    show_details: bool = True


def classes_multipliers(counters: Sequence[int], max_delta: float) -> Tuple[float, ...]:
    """``get_classes_multipliers``: per class ``max(counters)/counter`` (counters below 1 count as 1), at most
    ``max_delta`` (§9, AlexeyAB's [yolo]: counters_per_class)."""
    c = [max(int(v), 1) for v in counters]
    top = np.float32(max(c))
    return tuple(float(min(np.float32(top / np.float32(v)), np.float32(max_delta))) for v in c)


@dataclass
class AlexeyABAssignment:
    """The decisions of one forward pass (N, A, 5+K, H, W): ``ignored`` objectness entries (best IoU with a truth
    above ``ignore_thresh`` and a class above 0.25), the ``truth_thresh`` hits (b, a, j, i, truth index) and, per
    image, the truths with the anchors each trains: (truth row [x, y, w, h, class], anchor n, mask index).
    ``deltas`` replays them on an output in Darknet's order (a fixed assignment for a later pass)."""
    shape: Tuple[int, ...]
    ignored: np.ndarray
    hits: List[Tuple[int, int, int, int, int]]
    trains: List[List[Tuple[np.ndarray, int, int]]]
    truths: List[np.ndarray] = field(default_factory=list)


def yolo_assign_alexeyab(out: np.ndarray, truths: Sequence[np.ndarray], anchors: Sequence[Tuple[float, float]],
                         mask: Sequence[int], classes: int, net_w: int, net_h: int,
                         opt: AlexeyABYoloOptions) -> AlexeyABAssignment:
    """The decisions of ``process_batch`` (§9, AlexeyAB's [yolo]) for a batch: ``out`` the layer's output
    (N, A·(5+K), lh, lw) (x, y scaled, obj and classes through the logistic), ``truths`` per image Darknet's rows
    (k, 5) [x, y, w, h, class] (``functional.yolo_loss.darknet_truths``), ``anchors`` all (w, h) pairs."""
    v = head_view(out, truths, len(mask), classes)
    n, a, _, lh, lw = v.shape
    dt = out.dtype
    f = dt.type
    ignored = np.zeros((n, a, lh, lw), dtype=bool)
    hits: List[Tuple[int, int, int, int, int]] = []
    trains: List[List[Tuple[np.ndarray, int, int]]] = []
    kept: List[np.ndarray] = []
    masked = [tuple(anchors[m]) for m in mask]
    shapes = np.zeros((len(anchors), 4), dtype=dt)
    shapes[:, 2] = np.asarray(anchors, dtype=dt)[:, 0] / f(net_w)
    shapes[:, 3] = np.asarray(anchors, dtype=dt)[:, 1] / f(net_h)
    for b in range(n):
        tr = np.asarray(truths[b], dtype=dt).reshape(-1, 5)
        kept.append(tr)
        if len(tr):
            pred = yolo_grid_boxes(v[b, :, :4], masked, net_w, net_h)          # (A, lh, lw, 4)
            iou = box_iou(pred[..., None, :], tr[:, :4], dtype=dt)             # (A, lh, lw, k)
            best_t = np.argmax(iou, axis=-1)                                    # first maximum (strict '>')
            best = np.take_along_axis(iou, best_t[..., None], axis=-1)[..., 0]
            class_match = (v[b, :, 5:] > f(0.25)).any(axis=1)                  # compare_yolo_class
            ignored[b] = class_match & (best > f(opt.ignore_thresh))
            for an, jj, ii in zip(*np.nonzero(best > f(opt.truth_thresh))):  # loop order j, i, n: sorted below
                hits.append((b, int(an), int(jj), int(ii), int(best_t[an, jj, ii])))
        image_trains: List[Tuple[np.ndarray, int, int]] = []
        for t in range(len(tr)):
            shift = np.zeros(4, dtype=dt)
            shift[2:] = tr[t, 2:4]
            best_n = int(np.argmax(box_iou(shapes, shift, dtype=dt)))         # among ALL anchors
            if best_n in mask:
                image_trains.append((tr[t], best_n, list(mask).index(best_n)))
            if opt.iou_thresh < 1.0:
                for nn in range(len(anchors)):
                    if nn in mask and nn != best_n and float(
                            box_iou_kind(shapes[nn], shift, opt.iou_thresh_kind, dtype=dt)) > f(opt.iou_thresh):
                        image_trains.append((tr[t], nn, list(mask).index(nn)))
        trains.append(image_trains)
    hits.sort(key=lambda h: (h[0], h[2], h[3], h[1]))                          # Darknet's loop: b, j, i, n
    return AlexeyABAssignment(v.shape, ignored, hits, trains, kept)


def dx_box_iou(pred: np.ndarray, truth: np.ndarray, iou_loss: str) -> Tuple[float, float, float, float]:
    """AlexeyAB's ``dx_box_iou`` (§9, AlexeyAB's [yolo]: the IoU gradient) for one prediction and truth
    (x, y, w, h), in the dtype of ``pred``: the derivative of the IoU (or GIoU) with respect to the box's top,
    bottom, left and right edges, combined into (∂x, ∂y, ∂w, ∂h) as ``(∂l + ∂r, ∂t + ∂b, ∂r − ∂l, ∂b − ∂t)``
    (exact for x, y; twice the derivative for w, h); DIoU and CIoU add the gradient of the centre-distance penalty
    d/c (and CIoU ``α·∂v`` with α held constant); where the boxes do not overlap, only those penalty terms."""
    f = pred.dtype.type
    px, py, pw, ph = (f(v) for v in pred)
    tx, ty, tw, th = (f(v) for v in truth)
    two = f(2)
    p_top, p_bot, p_left, p_right = py - ph / two, py + ph / two, px - pw / two, px + pw / two
    pred_t, pred_b = min(p_top, p_bot), max(p_top, p_bot)
    pred_l, pred_r = min(p_left, p_right), max(p_left, p_right)
    t_top, t_bot, t_left, t_right = ty - th / two, ty + th / two, tx - tw / two, tx + tw / two
    X = (pred_b - pred_t) * (pred_r - pred_l)
    Xhat = (t_bot - t_top) * (t_right - t_left)
    Ih = min(pred_b, t_bot) - max(pred_t, t_top)
    Iw = min(pred_r, t_right) - max(pred_l, t_left)
    I = Iw * Ih
    U = X + Xhat - I
    S = (px - tx) * (px - tx) + (py - ty) * (py - ty)
    giou_Cw = max(pred_r, t_right) - min(pred_l, t_left)
    giou_Ch = max(pred_b, t_bot) - min(pred_t, t_top)
    giou_C = giou_Cw * giou_Ch
    dX_t, dX_b, dX_l, dX_r = -(pred_r - pred_l), pred_r - pred_l, -(pred_b - pred_t), pred_b - pred_t
    dI_t = -Iw if pred_t > t_top else f(0)
    dI_b = Iw if pred_b < t_bot else f(0)
    dI_l = -Ih if pred_l > t_left else f(0)
    dI_r = Ih if pred_r < t_right else f(0)
    dU_t, dU_b, dU_l, dU_r = dX_t - dI_t, dX_b - dI_b, dX_l - dI_l, dX_r - dI_r
    dC_t = -giou_Cw if pred_t < t_top else f(0)
    dC_b = giou_Cw if pred_b > t_bot else f(0)
    dC_l = -giou_Ch if pred_l < t_left else f(0)
    dC_r = giou_Ch if pred_r > t_right else f(0)
    p_dt = p_db = p_dl = p_dr = f(0)
    if U > 0:
        uu = U * U
        p_dt, p_db = (U * dI_t - I * dU_t) / uu, (U * dI_b - I * dU_b) / uu
        p_dl, p_dr = (U * dI_l - I * dU_l) / uu, (U * dI_r - I * dU_r) / uu
    if not p_top < p_bot:
        p_dt, p_db = p_db, p_db
    if not p_left < p_right:
        p_dl, p_dr = p_dr, p_dr
    if iou_loss == "giou":
        cc = giou_C * giou_C
        terms = ((giou_C * dU_t - U * dC_t) / cc, (giou_C * dU_b - U * dC_b) / cc,
                 (giou_C * dU_l - U * dC_l) / cc, (giou_C * dU_r - U * dC_r) / cc)
        if giou_C > 0:
            p_dt, p_db, p_dl, p_dr = p_dt + terms[0], p_db + terms[1], p_dl + terms[2], p_dr + terms[3]
        if Iw <= 0 or Ih <= 0:
            p_dt, p_db, p_dl, p_dr = terms
    Ct, Cb = min(py - ph / two, ty - th / two), max(py + ph / two, ty + th / two)
    Cl, Cr = min(px - pw / two, tx - tw / two), max(px + pw / two, tx + tw / two)
    Cw, Ch = Cr - Cl, Cb - Ct
    C = Cw * Cw + Ch * Ch
    one, half, zero = f(1), f(0.5), f(0)
    dCt_dy, dCt_dh = (one, -half) if pred_t < t_top else (zero, zero)
    dCb_dy, dCb_dh = (one, half) if pred_b > t_bot else (zero, zero)
    dCl_dx, dCl_dw = (one, -half) if pred_l < t_left else (zero, zero)
    dCr_dx, dCr_dw = (one, half) if pred_r > t_right else (zero, zero)
    dCw_dx, dCw_dw = dCr_dx - dCl_dx, dCr_dw - dCl_dw
    dCh_dy, dCh_dh = dCb_dy - dCt_dy, dCb_dh - dCt_dh
    p_dx, p_dy = p_dl + p_dr, p_dt + p_db
    p_dw, p_dh = p_dr - p_dl, p_db - p_dt
    if iou_loss in ("diou", "ciou"):
        cc = C * C
        dist_x = (two * (tx - px) * C - (two * Cw * dCw_dx + two * Ch * zero) * S) / cc
        dist_y = (two * (ty - py) * C - (two * Cw * zero + two * Ch * dCh_dy) * S) / cc
        dist_w = (two * Cw * dCw_dw + two * Ch * zero) * S / cc
        dist_h = (two * Cw * zero + two * Ch * dCh_dh) * S / cc
        ar_w = ar_h = alpha = zero
        if iou_loss == "ciou":
            diff = np.arctan(np.float64(tw / th)) - np.arctan(np.float64(pw / ph))
            ar_loss = f(4 / (np.pi * np.pi) * diff * diff)
            alpha = f(np.float64(ar_loss) / (np.float64(one - I / U + ar_loss) + 0.000001))
            ar_w = f(8 / (np.pi * np.pi) * diff * np.float64(ph))
            ar_h = f(-8 / (np.pi * np.pi) * diff * np.float64(pw))
        if C > 0:
            p_dx, p_dy = p_dx + dist_x, p_dy + dist_y
            p_dw, p_dh = p_dw + (dist_w + alpha * ar_w), p_dh + (dist_h + alpha * ar_h)
        if Iw <= 0 or Ih <= 0:
            p_dx, p_dy, p_dw, p_dh = dist_x, dist_y, dist_w + alpha * ar_w, dist_h + alpha * ar_h
    return p_dx, p_dy, p_dw, p_dh


@dataclass
class AlexeyABYoloResult:
    """``yolo_deltas_alexeyab``'s: Darknet's ``delta`` (the NEGATIVE gradient at the layer's output, shaped like
    it), the layer's ``cost`` as Darknet reports it, and the statistics of the pass."""
    delta: np.ndarray
    cost: float
    stats: YoloStats


def _finite(v) -> bool:
    return bool(np.isfinite(v))


def _class_deltas(v: np.ndarray, delta: np.ndarray, idx: Tuple[int, int, int, int], cls: int, classes: int,
                  opt: AlexeyABYoloOptions) -> float:
    """``delta_yolo_class`` at one cell and anchor (b, a, j, i) of (N, A, 5+K, H, W) arrays; returns the
    output of the truth's class (Darknet's ``avg_cat`` term)."""
    b, a, j, i = idx
    f = v.dtype.type
    eps = opt.label_smooth_eps
    cm = opt.classes_multipliers

    def y_true(hot: bool) -> np.floating:
        y = f(1) if hot else f(0)
        return f(np.float64(y * (f(1) - f(eps))) + 0.5 * np.float64(f(eps))) if eps else y

    out_c = v[b, a, 5 + cls, j, i]
    if delta[b, a, 5 + cls, j, i]:
        r = y_true(True) - out_c
        if _finite(r):
            delta[b, a, 5 + cls, j, i] = r
        if cm is not None:
            delta[b, a, 5 + cls, j, i] *= f(cm[cls])
        return float(out_c)
    for k in range(classes):
        r = y_true(k == cls) - v[b, a, 5 + k, j, i]
        if _finite(r):
            delta[b, a, 5 + k, j, i] = r
        if cm is not None and k == cls:
            delta[b, a, 5 + k, j, i] *= f(cm[cls]) * f(opt.cls_normalizer)
    return float(out_c)


def _box_deltas(v: np.ndarray, delta: np.ndarray, idx: Tuple[int, int, int, int], truth: np.ndarray,
                anchor: Tuple[float, float], lw: int, lh: int, net_w: int, net_h: int, iou_normalizer,
                opt: AlexeyABYoloOptions) -> Tuple[float, float]:
    """``delta_yolo_box`` (accumulating) at one cell and anchor; returns the (IoU, IoU-kind loss term) of the
    prediction with the truth before the update (the statistics' ``all_ious``)."""
    b, a, j, i = idx
    f = v.dtype.type
    pred = np.array([(f(i) + v[b, a, 0, j, i]) / f(lw), (f(j) + v[b, a, 1, j, i]) / f(lh),
                     np.exp(min(np.float64(v[b, a, 2, j, i]), MAX_LOG_SIZE)) * np.float64(f(anchor[0])) / net_w,
                     np.exp(min(np.float64(v[b, a, 3, j, i]), MAX_LOG_SIZE)) * np.float64(f(anchor[1])) / net_h],
                    dtype=v.dtype)                                    # get_yolo_box
    tb = truth[:4].astype(v.dtype)
    iou = float(box_iou(pred, tb, dtype=v.dtype))
    loss_iou = float(box_giou(pred, tb, dtype=v.dtype)) if opt.iou_loss == "giou" else iou
    if pred[2] == 0:
        pred[2] = f(1)
    if pred[3] == 0:
        pred[3] = f(1)
    if opt.iou_loss == "mse":
        scale = f(2) - tb[2] * tb[3]
        targets = (tb[0] * f(lw) - f(i), tb[1] * f(lh) - f(j),
                   f(np.log(np.float64(tb[2] * f(net_w) / f(anchor[0])))),
                   f(np.log(np.float64(tb[3] * f(net_h) / f(anchor[1])))))
        for e in range(4):
            delta[b, a, e, j, i] += scale * (targets[e] - v[b, a, e, j, i]) * iou_normalizer
        return iou, loss_iou
    with np.errstate(all="ignore"):
        d = list(dx_box_iou(pred, tb, opt.iou_loss))
        d[2] = f(np.float64(d[2]) * np.exp(np.float64(v[b, a, 2, j, i])))
        d[3] = f(np.float64(d[3]) * np.exp(np.float64(v[b, a, 3, j, i])))
        d = [x * iou_normalizer for x in d]
    d = [x if _finite(x) else f(0) for x in d]
    if opt.max_delta != FLT_MAX:
        d = [min(max(x, f(-opt.max_delta)), f(opt.max_delta)) for x in d]
    for e in range(4):
        delta[b, a, e, j, i] += d[e]
    return iou, loss_iou


def yolo_deltas_alexeyab(out: np.ndarray, asg: AlexeyABAssignment, anchors: Sequence[Tuple[float, float]],
                         mask: Sequence[int], classes: int, net_w: int, net_h: int,
                         opt: AlexeyABYoloOptions) -> AlexeyABYoloResult:
    """Darknet's deltas, cost and statistics of one pass (§9, AlexeyAB's [yolo]): the assignment ``asg``'s decisions
    replayed on ``out`` in ``process_batch``'s order (objectness, truth_thresh hits, each truth's anchors, the
    iou_thresh averaging)."""
    n, c, lh, lw = out.shape
    if asg.shape != (n, len(mask), classes + 5, lh, lw):
        raise ShapeError(f"[yolo]: the assignment is for outputs {asg.shape}, this pass's are "
                         f"{(n, len(mask), classes + 5, lh, lw)}")
    dt = out.dtype
    f = dt.type
    v = out.reshape(asg.shape)
    delta = np.zeros(asg.shape, dtype=dt)
    cm = opt.classes_multipliers
    delta[:, :, 4] = f(opt.obj_normalizer) * (f(0) - v[:, :, 4])
    delta[:, :, 4][asg.ignored] = 0
    for b, an, jj, ii, t in asg.hits:
        truth = asg.truths[b][t]
        delta[b, an, 4, jj, ii] = f(opt.obj_normalizer) * (f(1) - v[b, an, 4, jj, ii])
        cls = int(truth[4])
        _class_deltas(v, delta, (b, an, jj, ii), cls, classes, opt)
        mult = f(cm[cls]) if cm is not None else f(1)
        _box_deltas(v, delta, (b, an, jj, ii), truth, anchors[mask[an]], lw, lh, net_w, net_h,
                    f(opt.iou_normalizer) * mult, opt)
    tot_iou_loss = f(0)
    sums = dict(iou=0.0, cat=0.0, obj=0.0, recall=0.0, recall75=0.0, count=0)
    for b in range(n):
        image_loss = f(0)
        for truth, nn, an in asg.trains[b]:
            ii = min(max(int(truth[0] * f(lw)), 0), lw - 1)       # Darknet: (int)(truth.x * l.w)
            jj = min(max(int(truth[1] * f(lh)), 0), lh - 1)
            cls = int(truth[4])
            mult = f(cm[cls]) if cm is not None else f(1)
            iou, loss_iou = _box_deltas(v, delta, (b, an, jj, ii), truth, anchors[nn], lw, lh, net_w, net_h,
                                        f(opt.iou_normalizer) * mult, opt)
            image_loss = image_loss + (f(1) - f(loss_iou))
            sums["iou"] += iou
            sums["obj"] += float(v[b, an, 4, jj, ii])
            delta[b, an, 4, jj, ii] = mult * f(opt.obj_normalizer) * (f(1) - v[b, an, 4, jj, ii])
            sums["cat"] += _class_deltas(v, delta, (b, an, jj, ii), cls, classes, opt)
            sums["count"] += 1
            sums["recall"] += iou > 0.5
            sums["recall75"] += iou > 0.75
        tot_iou_loss = tot_iou_loss + image_loss
    if opt.iou_thresh < 1.0:                       # averages_yolo_deltas
        has = delta[:, :, 4] != 0
        counts = (delta[:, :, 5:] > 0).sum(axis=2)
        div = has & (counts > 0)
        delta[:, :, 0:4] = np.where(div[:, :, None], delta[:, :, 0:4] / np.maximum(counts, 1)[:, :, None].astype(dt),
                                    delta[:, :, 0:4])
    cost = _cost(delta, opt, tot_iou_loss, sums["count"])
    cnt = sums["count"]
    mean = (lambda total: total / cnt) if cnt else (lambda total: float("nan"))
    preds = lw * lh * len(mask) * n
    stats = YoloStats(avg_iou=mean(sums["iou"]), class_prob=mean(sums["cat"]), obj=mean(sums["obj"]),
                      no_obj=float(v[:, :, 4].astype(np.float64).sum()) / preds, recall50=mean(sums["recall"]),
                      recall75=mean(sums["recall75"]), count=int(cnt), predictions=preds)
    return AlexeyABYoloResult(delta.reshape(out.shape), cost, stats)


def _cost(delta: np.ndarray, opt: AlexeyABYoloOptions, tot_iou_loss, count: int) -> float:
    """``forward_yolo_layer``'s ``*(l.cost)`` (§9, AlexeyAB's [yolo]: its reported cost)."""
    total = darknet_yolo_cost(delta)
    if not opt.show_details or opt.iou_loss == "mse":
        return total
    f = delta.dtype.type
    no_box = delta.copy()
    no_box[:, :, 0:4] = 0
    classification = f(np.float64(f(opt.obj_normalizer)) * np.float64(mag_array(no_box)) ** 2)
    avg_iou_loss = f(opt.iou_normalizer) * (tot_iou_loss / f(max(count, 1)))
    return float(f(avg_iou_loss + classification))
