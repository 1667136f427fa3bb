"""The ``[yolo]`` layer's training targets and loss (pjreddie f6afaabc ``forward_yolo_layer``,
``delta_yolo_box``, ``delta_yolo_class``; docs/equations.md §9: Assignment, Box delta, Class delta, Objectness
delta, Reported cost, the loss the deltas differentiate).

``yolo_assign`` walks the predictions and the truths exactly as Darknet's forward pass does and records,
for every output entry, whether it has a delta (``mask``), its target and its scale, so that Darknet's
delta is ``scale·(target − output)`` on the masked entries (YOLO-box, YOLO-obj, YOLO-class below), and the
statistics Darknet prints for the layer (``YoloStats``):

- YOLO-obj: every prediction's objectness gets target 0; none where its best IoU with any truth exceeds
  ``ignore_thresh``; target 1, with the box and class targets of that best truth, where it exceeds
  ``truth_thresh``.
- Each truth (in list order) goes to the cell ``(⌊x·lw⌋, ⌊y·lh⌋)`` and to its best anchor among ALL the
  layer's ``num`` anchors (IoU of the shapes centred together); a layer whose mask lacks that anchor skips it.
- YOLO-box: targets ``x·lw − i``, ``y·lh − j``, ``log(w·net_w/anchor_w)``, ``log(h·net_h/anchor_h)``, scale
  ``2 − w·h``; x and y are compared with the logistic outputs. A later truth in the same cell and anchor
  overwrites an earlier one's box targets.
- YOLO-class: one-hot targets on every class; if the cell's class-0 delta is already nonzero (set by an
  earlier truth or the truth_thresh pass) only the new class gets target 1 (multi-label).

The computations run in the output's dtype; in float32 they repeat Darknet's float operations (IoUs,
targets, scales), so its threshold decisions and deltas come out the same.

Two losses of one assignment (``YoloAssignment``), both with the gradient ``−delta`` at the layer's input
(the raw, pre-logistic values): Darknet's reported cost ``Σ delta²`` (``darknet_yolo_cost``: not the function
its delta differentiates), and the differentiable loss of docs/equations.md §9 (``yolo_standard_loss``):
x, y: ``scale·BCE(σ(t), t*)``; w, h: ``½·scale·(t − t*)²``; objectness and classes: BCE with logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry.boxes import box_iou, yolo_grid_boxes
from ..errors import LabelError, ShapeError
from .activation import sigmoid_forward
from .loss_binary import bce_with_logits_elementwise


@dataclass(frozen=True)
class YoloStats:
    """What ``forward_yolo_layer`` prints for one head and one forward pass ("Region ... Avg IOU: ..."):
    over the ``count`` truths this head trains, the mean IoU of the responsible prediction's box with the truth
    (``avg_iou``), the mean probability of the truth's class there (``class_prob``, Darknet's "Class") and the
    mean objectness there (``obj``), the fraction with IoU > 0.5 and > 0.75 (``recall50``, ``recall75``); NaN
    when ``count`` is 0. ``no_obj``: the mean objectness over all ``predictions`` (cells × anchors × images)."""
    avg_iou: float
    class_prob: float
    obj: float
    no_obj: float
    recall50: float
    recall75: float
    count: int
    predictions: int

    def as_dict(self) -> Dict[str, float]:
        """Darknet's names: avg_iou, class, obj, no_obj, recall50, recall75, count, predictions."""
        return {"avg_iou": self.avg_iou, "class": self.class_prob, "obj": self.obj, "no_obj": self.no_obj,
                "recall50": self.recall50, "recall75": self.recall75, "count": self.count,
                "predictions": self.predictions}


@dataclass
class YoloAssignment:
    """Per output entry (N, A, 5+K, H, W): ``mask`` (has a delta), ``target``, ``scale``; the truths each
    image kept (``truths``: (k, 5) rows [x, y, w, h, class], Darknet's order) and the statistics of the
    forward pass it was made from (None for an assignment built by hand)."""
    mask: np.ndarray
    target: np.ndarray
    scale: np.ndarray
    stats: Optional[YoloStats] = None
    truths: List[np.ndarray] = field(default_factory=list)

    def delta(self, out: np.ndarray) -> np.ndarray:
        """Darknet's delta ``scale·(target − output)`` (the NEGATIVE gradient), 0 off the mask."""
        d = self.scale * (self.target - out.reshape(self.target.shape))
        return np.where(self.mask, d, d.dtype.type(0)).reshape(out.shape)


def darknet_truths(rows: np.ndarray, max_boxes: int, classes: int, where: str = "") -> Tuple[np.ndarray, bool]:
    """One image's targets (k, 5) ``[class, x, y, w, h]`` as Darknet's truth list ``[x, y, w, h, class]``:
    the first ``max_boxes`` rows, the list ending at the first box with x = 0 (Darknet's end mark).
    Returns (truths, whether rows beyond ``max_boxes`` were dropped). LabelError for a class outside
    0..classes−1, a centre outside [0, 1] or a size ≤ 0; ShapeError for a malformed array."""
    rows = np.asarray(rows)
    if rows.size == 0:
        return np.zeros((0, 5), dtype=np.float64), False
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ShapeError(f"{where}detection targets must be (k, 5) rows [class, x, y, w, h], got shape {rows.shape}")
    dropped = rows.shape[0] > max_boxes
    rows = rows[:max_boxes]
    cls = rows[:, 0]
    bad = (cls < 0) | (cls >= classes) | (cls != np.floor(cls))
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise LabelError(f"{where}box {k}: class {cls[k]:g} is outside 0..{classes - 1} (the layer has "
                         f"classes={classes})")
    end = np.nonzero(rows[:, 1] == 0)[0]
    if end.size:
        rows = rows[:end[0]]
    xy, wh = rows[:, 1:3], rows[:, 3:5]
    bad = ~(((xy >= 0) & (xy <= 1)).all(axis=1) & (wh > 0).all(axis=1) & np.isfinite(wh).all(axis=1))
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise LabelError(f"{where}box {k}: [x, y, w, h] = {rows[k, 1:].tolist()}: the centre must lie in [0, 1] "
                         f"and the size be positive")
    return np.concatenate([rows[:, 1:5], rows[:, :1]], axis=1), dropped


def head_view(out: np.ndarray, truths: Sequence[np.ndarray], a: int, classes: int) -> np.ndarray:
    """The [yolo] output (N, A·(5+K), lh, lw) as (N, A, 5+K, lh, lw), after checking its channels against the A
    anchors and K classes and that there is one truth array per image."""
    n, c, lh, lw = out.shape
    if c != a * (classes + 5):
        raise ShapeError(f"[yolo] output has {c} channels, expected {a}·({classes}+5)")
    if len(truths) != n:
        raise ShapeError(f"[yolo]: {len(truths)} target arrays for a batch of {n} images")
    return out.reshape(n, a, classes + 5, lh, lw)


def yolo_assign(out: np.ndarray, truths: Sequence[np.ndarray], anchors: Sequence[Tuple[float, float]],
                mask: Sequence[int], classes: int, net_w: int, net_h: int, ignore_thresh: float,
                truth_thresh: float) -> YoloAssignment:
    """The targets of one [yolo] layer for a batch (docs/equations.md §9: Assignment, Objectness delta, and
    through ``set_box_targets``/``set_class_targets`` the Box and Class deltas; see the module docstring).

    ``out``: the layer's output (N, A·(5+K), lh, lw), logistic applied to x, y, obj, classes. ``truths``:
    per image, Darknet's truth rows (k, 5) ``[x, y, w, h, class]`` (``darknet_truths``). ``anchors``: all
    ``num`` (w, h) pairs in network pixels; ``mask``: this layer's anchor indices."""
    v = head_view(out, truths, len(mask), classes)
    n, a, _, lh, lw = v.shape
    dt = out.dtype
    f = dt.type
    M = np.zeros(v.shape, dtype=bool)
    T = np.zeros(v.shape, dtype=dt)
    S = np.ones(v.shape, dtype=dt)
    masked = [tuple(anchors[m]) for m in mask]
    anc = np.asarray(anchors, dtype=dt)
    shapes = np.zeros((len(anchors), 4), dtype=dt)
    shapes[:, 2] = anc[:, 0] / f(net_w)          # pred.w = biases[2n]/net.w (float / int)
    shapes[:, 3] = anc[:, 1] / f(net_h)
    sums = dict(iou=0.0, cat=0.0, obj=0.0, anyobj=0.0, recall=0.0, recall75=0.0, count=0)
    kept: List[np.ndarray] = []
    for b in range(n):
        tr = np.asarray(truths[b], dtype=dt).reshape(-1, 5)
        kept.append(tr)
        vb = v[b]
        sums["anyobj"] += float(vb[:, 4].astype(np.float64).sum())
        M[b, :, 4] = True                                              # YOLO-obj: target 0
        if len(tr):
            pred = yolo_grid_boxes(vb[:, :4], masked, net_w, net_h)    # (A, lh, lw, 4)
            iou = box_iou(pred[..., None, :], tr[:, :4], dtype=dt)     # (A, lh, lw, k)
            best_t = np.argmax(iou, axis=-1)                           # the first maximum, as Darknet's '>'
            best = np.take_along_axis(iou, best_t[..., None], axis=-1)[..., 0]
            M[b, :, 4][best > ignore_thresh] = False
            hit = np.nonzero(best > truth_thresh)
            for an, jj, ii in zip(*hit):
                t = int(best_t[an, jj, ii])
                set_box_targets(T, S, M, b, an, jj, ii, tr[t], anchors[mask[an]], lw, lh, net_w, net_h)
                T[b, an, 4, jj, ii], M[b, an, 4, jj, ii] = 1, True
                set_class_targets(v, T, S, M, b, an, jj, ii, int(tr[t, 4]), classes)
        for t in range(len(tr)):
            box = tr[t]
            shift = np.zeros(4, dtype=dt)
            shift[2:] = box[2:4]
            a_iou = box_iou(shapes, shift, dtype=dt)
            best_n = int(np.argmax(a_iou))                             # among ALL anchors
            if best_n not in mask:
                continue
            an = list(mask).index(best_n)
            ii = min(max(int(box[0] * f(lw)), 0), lw - 1)              # Darknet: (int)(truth.x * l.w)
            jj = min(max(int(box[1] * f(lh)), 0), lh - 1)
            iou_t = float(box_iou(pred[an, jj, ii], box[:4], dtype=dt))  # get_yolo_box of that cell
            set_box_targets(T, S, M, b, an, jj, ii, box, anchors[best_n], lw, lh, net_w, net_h)
            sums["obj"] += float(vb[an, 4, jj, ii])
            T[b, an, 4, jj, ii], S[b, an, 4, jj, ii], M[b, an, 4, jj, ii] = 1, 1, True
            sums["cat"] += set_class_targets(v, T, S, M, b, an, jj, ii, int(box[4]), classes)
            sums["count"] += 1
            sums["iou"] += iou_t
            sums["recall"] += iou_t > 0.5
            sums["recall75"] += iou_t > 0.75
    cnt = sums["count"]
    mean = (lambda total: total / cnt) if cnt else (lambda total: float("nan"))
    stats = YoloStats(avg_iou=mean(sums["iou"]), class_prob=mean(sums["cat"]), obj=mean(sums["obj"]),
                      no_obj=sums["anyobj"] / (lw * lh * a * n), recall50=mean(sums["recall"]),
                      recall75=mean(sums["recall75"]), count=int(cnt), predictions=lw * lh * a * n)
    return YoloAssignment(M, T, S, stats, kept)


def set_box_targets(T: np.ndarray, S: np.ndarray, M: np.ndarray, b: int, an: int, jj: int, ii: int, box: np.ndarray,
                    anchor: Tuple[float, float], lw: int, lh: int, net_w: int, net_h: int) -> None:
    """Box delta (docs/equations.md §9, ``delta_yolo_box``) at one cell and anchor, as targets and scales:
    ``tx* = x·lw − i``, ``ty* = y·lh − j``, ``tw* = log(w·net_w/anchor_w)``, ``th* = log(h·net_h/anchor_h)``,
    scale ``2 − w·h``, written into ``T``, ``S``, ``M`` (N, A, 5+K, lh, lw) in Darknet's float operations."""
    f = T.dtype.type
    x, y, w, h = (f(box[k]) for k in range(4))
    T[b, an, 0, jj, ii] = x * f(lw) - f(ii)
    T[b, an, 1, jj, ii] = y * f(lh) - f(jj)
    T[b, an, 2, jj, ii] = f(np.log(np.float64(w * f(net_w) / f(anchor[0]))))
    T[b, an, 3, jj, ii] = f(np.log(np.float64(h * f(net_h) / f(anchor[1]))))
    S[b, an, 0:4, jj, ii] = f(2) - w * h
    M[b, an, 0:4, jj, ii] = True


def set_class_targets(v: np.ndarray, T: np.ndarray, S: np.ndarray, M: np.ndarray, b: int, an: int, jj: int, ii: int,
                      cls: int, classes: int) -> float:
    """Class delta (docs/equations.md §9, ``delta_yolo_class``) at one cell and anchor: targets
    ``1[k = cls]`` with scale 1 on every class, or only the truth's class set to 1 when the cell's class-0
    delta is already nonzero (an earlier truth's labels are kept: multi-label). Returns the output of the
    truth's class (Darknet's ``avg_cat``)."""
    if classes == 0:
        return 0.0
    c0 = 5
    d0 = S[b, an, c0, jj, ii] * (T[b, an, c0, jj, ii] - v[b, an, c0, jj, ii]) if M[b, an, c0, jj, ii] else 0
    if d0:   # Darknet tests the class-0 delta: a class already set keeps the other labels
        T[b, an, c0 + cls, jj, ii], S[b, an, c0 + cls, jj, ii], M[b, an, c0 + cls, jj, ii] = 1, 1, True
    else:
        T[b, an, c0:, jj, ii] = 0
        T[b, an, c0 + cls, jj, ii] = 1
        S[b, an, c0:, jj, ii] = 1
        M[b, an, c0:, jj, ii] = True
    return float(v[b, an, c0 + cls, jj, ii])


def mag_array(delta: np.ndarray) -> float:
    """Darknet's ``mag_array`` (§9, Reported cost): √(Σ delta²) with the squares summed in order in float32 and the
    root taken in double and stored as a float; in float64 the root of a plain sum."""
    if delta.dtype != np.float32:
        return float(np.sqrt((delta.astype(np.float64) ** 2).sum()))
    sq = (delta * delta).ravel()
    s = np.add.accumulate(sq)[-1] if sq.size else np.float32(0)
    return float(np.float32(np.sqrt(np.float64(s))))


def darknet_yolo_cost(delta: np.ndarray) -> float:
    """Darknet's reported cost (§9) ``pow(mag_array(delta), 2)``: Σ delta² summed in order in float32 (as its
    ``mag_array``), the root and square in double, the result a float; in float64 a plain sum."""
    if delta.dtype != np.float32:
        return float((delta.astype(np.float64) ** 2).sum())
    return float(np.float32(mag_array(delta) ** 2))


def yolo_standard_loss(raw: np.ndarray, asg: YoloAssignment) -> Tuple[float, np.ndarray]:
    """The differentiable loss of docs/equations.md §9 for a FIXED assignment and its exact gradient at the
    layer's raw input ``raw`` (N, A·(5+K), H, W): Σ over masked entries of x, y ``scale·BCE(σ(t), t*)``,
    w, h ``½·scale·(t − t*)²``, objectness and classes ``BCE(σ(t), t*)``. The gradient is
    ``scale·(σ(t) − t*)`` resp. ``scale·(t − t*)``: Darknet's ``−delta``."""
    z = raw.reshape(asg.target.shape)
    m, t, s = asg.mask, asg.target, asg.scale
    lin = np.zeros(z.shape, dtype=bool)
    lin[:, :, 2:4] = True
    per = np.where(lin, 0.5 * s * (z - t) ** 2, s * bce_with_logits_elementwise(z, t))
    cost = float(per[m].astype(np.float64).sum())
    g = s * (np.where(lin, z, sigmoid_forward(z)[0]) - t)
    return cost, np.where(m, g, g.dtype.type(0)).reshape(raw.shape)


def yolo_standard_output_grad(out: np.ndarray, asg: YoloAssignment) -> np.ndarray:
    """∂(``yolo_standard_loss``)/∂(the layer's OUTPUT) (docs/equations.md §9, the loss the deltas
    differentiate): ``scale·(y − t*)/(y(1 − y))`` on the logistic entries (infinite where y saturates at 0 or
    1), ``scale·(y − t*)`` on w, h."""
    y = out.reshape(asg.target.shape)
    lin = np.zeros(y.shape, dtype=bool)
    lin[:, :, 2:4] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        g = asg.scale * np.where(lin, y - asg.target, (y - asg.target) / (y * (1 - y)))
    return np.where(asg.mask, g, g.dtype.type(0)).reshape(out.shape)
