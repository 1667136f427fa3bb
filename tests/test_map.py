"""deltaprop.detect.map against pycocotools' COCOeval (bbox) on coco128's ground truth with synthetic
detections (jittered boxes, duplicates, wrong classes, false positives, varied and tied scores), and edge
cases."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from deltaprop.detect.map import evaluate
from deltaprop.errors import ShapeError, ValueRangeError

pytest.importorskip("pycocotools", reason="pycocotools is the reference (pip install 'deltaprop[test]')")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

LABELS = Path(__file__).parent / "fixtures" / "coco128" / "labels-train2017"
CLASSES = 80
SIZE = (640.0, 480.0)          # pixels per unit along x and y (the IoU does not depend on them)


def coco128_truth():
    files = sorted(LABELS.glob("*.txt"))
    assert len(files) >= 120
    out = []
    for f in files:
        a = np.loadtxt(f, dtype=np.float64, ndmin=2)
        out.append(a.reshape(-1, 5))
    return out


def synthetic_detections(truth, seed, tie_scores=False):
    rng = np.random.default_rng(seed)
    dets = []
    for g in truth:
        rows = []
        for c, x, y, w, h in g:
            if rng.random() < 0.15:
                continue                                            # missed
            jit = rng.normal(0, 0.12, 4)
            box = [x + jit[0] * w, y + jit[1] * h, w * np.exp(jit[2]), h * np.exp(jit[3])]
            cls = c if rng.random() > 0.1 else rng.integers(CLASSES)  # sometimes the wrong class
            rows.append([cls, *box, rng.random()])
            if rng.random() < 0.2:                                  # a duplicate, lower score
                rows.append([c, *(np.array(box) * (1 + rng.normal(0, 0.05, 4))), rng.random() * 0.5])
        for _ in range(rng.poisson(2)):                             # false positives, any class
            w, h = rng.uniform(0.02, 0.5, 2)
            rows.append([rng.integers(CLASSES), rng.uniform(0, 1), rng.uniform(0, 1), w, h, rng.random()])
        d = np.array(rows, dtype=np.float64).reshape(-1, 6)
        if tie_scores:
            d[:, 5] = np.round(d[:, 5], 1)
        dets.append(d)
    return dets


def _to_coco_box(x, y, w, h):
    sx, sy = SIZE
    return [(x - w / 2) * sx, (y - h / 2) * sy, w * sx, h * sy]


def coco_reference(truth, dets):
    """(stats, per-class AP@[.5:.95], per-class AP@.5, per-class recall@.5) from COCOeval; -1 → NaN."""
    gt = COCO()
    anns = []
    for i, g in enumerate(truth):
        for c, x, y, w, h in g:
            b = _to_coco_box(x, y, w, h)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0})
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(truth))], "annotations": anns,
                  "categories": [{"id": k + 1} for k in range(CLASSES)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        res = [{"image_id": i + 1, "category_id": int(r[0]) + 1, "bbox": _to_coco_box(*r[1:5]),
                "score": float(r[5])} for i, d in enumerate(dets) for r in d]
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]   # the one range evaluate() uses
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 2]                      # T, R, K at area "all", maxDets 100
    per_class = np.array([prec[:, :, k][prec[:, :, k] > -1].mean() if (prec[:, :, k] > -1).any() else np.nan
                          for k in range(CLASSES)])
    per_class50 = np.array([prec[0, :, k].mean() if prec[0, 0, k] > -1 else np.nan for k in range(CLASSES)])
    rec = ev.eval["recall"][0, :, 0, 2]
    stats = [prec[t][prec[t] > -1].mean() for t in (slice(None), 0, 5)]  # as COCOeval.summarize's first three
    return stats, per_class, per_class50, np.where(rec > -1, rec, np.nan)


def assert_matches_coco(truth, dets):
    ours = evaluate(truth, dets, CLASSES)
    stats, ap, ap50, rec50 = coco_reference(truth, dets)
    assert abs(ours.map - stats[0]) < 1e-4
    assert abs(ours.map50 - stats[1]) < 1e-4
    assert abs(ours.map75 - stats[2]) < 1e-4
    np.testing.assert_allclose(ours.ap5095, ap, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(ours.ap50, ap50, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(ours.recall[:, 0], rec50, atol=1e-4, equal_nan=True)
    return ours, stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_cocoeval_on_coco128(seed):
    truth = coco128_truth()
    ours, stats = assert_matches_coco(truth, synthetic_detections(truth, seed))
    assert 0.05 < stats[0] < 0.95 and 0.05 < stats[1] < 0.99          # a set that tells rules apart
    assert np.isnan(ours.ap50).any()                                  # classes without ground truth


def test_matches_cocoeval_with_tied_scores():
    truth = coco128_truth()
    dets = synthetic_detections(truth, 7, tie_scores=True)
    assert len(np.unique(np.concatenate(dets)[:, 5])) <= 11
    assert_matches_coco(truth, dets)


def test_matches_cocoeval_with_many_detections_per_image():
    """More than max_dets = 100 detections of one class in an image: both cut to the 100 best."""
    truth = coco128_truth()[:6]
    rng = np.random.default_rng(3)
    dets = []
    for g in truth:
        c = int(g[0, 0])
        boxes = np.repeat(g[:1, 1:5], 130, axis=0) * (1 + rng.normal(0, 0.2, (130, 4)))
        dets.append(np.column_stack([np.full(130, c), np.abs(boxes), rng.random(130)]))
    assert_matches_coco(truth, dets)


def test_perfect_detections_score_one():
    truth = coco128_truth()[:20]
    dets = [np.column_stack([g, np.linspace(0.9, 0.5, len(g))]) for g in truth]
    ours = evaluate(truth, dets, CLASSES)
    assert ours.map == pytest.approx(1.0) and ours.map50 == pytest.approx(1.0)
    assert ours.precision == 1.0 and ours.recall_at_thresh == 1.0


def test_no_detections():
    """No detections: AP 0 for every class with ground truth (COCOeval agrees: one detection of a class
    without ground truth is ignored by it)."""
    truth = coco128_truth()[:10]
    none = [np.zeros((0, 6)) for _ in truth]
    ours = evaluate(truth, none, CLASSES)
    present = np.unique(np.concatenate(truth)[:, 0]).astype(int)
    assert ours.map == 0.0 and ours.map50 == 0.0
    assert np.all(ours.ap50[present] == 0) and np.isnan(np.delete(ours.ap50, present)).all()
    absent = int(np.setdiff1d(np.arange(CLASSES), present)[0])
    one = [np.array([[absent, 0.5, 0.5, 0.2, 0.2, 0.9]])] + none[1:]
    assert_matches_coco(truth, one)
    assert evaluate(truth, one, CLASSES).fp[absent] == 1


def test_precision_recall_at_threshold_by_hand():
    """Two objects of class 0, one of class 1; detections: a hit (0.9), a duplicate of it (0.8, an FP at
    IoU 0.5), a hit of class 1 below the threshold (0.2), a false positive of class 2 (0.6)."""
    truth = [np.array([[0, 0.3, 0.3, 0.2, 0.2], [0, 0.7, 0.7, 0.2, 0.2], [1, 0.5, 0.5, 0.1, 0.4]])]
    dets = [np.array([[0, 0.3, 0.3, 0.2, 0.2, 0.9], [0, 0.31, 0.3, 0.2, 0.2, 0.8],
                      [1, 0.5, 0.5, 0.1, 0.4, 0.2], [2, 0.1, 0.9, 0.1, 0.1, 0.6]])]
    r = evaluate(truth, dets, 3, score_thresh=0.25)
    assert list(r.tp) == [1, 0, 0] and list(r.fp) == [1, 0, 1] and list(r.gt) == [2, 1, 0]
    assert r.precision == pytest.approx(1 / 3) and r.recall_at_thresh == pytest.approx(1 / 3)
    # class 0: recall 0.5 reached at precision 1 → points 0..0.5 are 1 (51 of 101), the rest 0
    assert r.ap50[0] == pytest.approx(51 / 101)
    assert r.ap50[1] == pytest.approx(1.0) and np.isnan(r.ap50[2])
    assert r.map50 == pytest.approx((51 / 101 + 1) / 2)
    assert "class_id = 0" in r.table() and "mAP@0.50" in r.table()


def test_iou_threshold_is_inclusive():
    """A detection at IoU exactly 0.5 (overlap 2/3 of the width: (2/3)/(4/3)) matches."""
    truth = [np.array([[0, 0.5, 0.5, 0.375, 0.25]])]
    dets = [np.array([[0, 0.625, 0.5, 0.375, 0.25, 0.9]])]
    assert evaluate(truth, dets, 1, iou_thresholds=[0.5]).tp[0] == 1
    assert evaluate(truth, dets, 1, iou_thresholds=[0.55]).ap[0, 0] == 0


def test_equal_iou_goes_to_the_later_box():
    """Detection 1 overlaps boxes A and B equally (IoU 0.875/1.125 each, exact in binary); COCOeval's loop
    gives it the later box B, so detection 2 (IoU 0.6 with A, 1/3 with B) still matches A: 2 hits, not 1."""
    truth = [np.array([[0, 0.5, 0.5, 1, 1], [0, 0.75, 0.5, 1, 1]])]
    dets = [np.array([[0, 0.625, 0.5, 1, 1, 0.9], [0, 0.25, 0.5, 1, 1, 0.8]])]
    r = evaluate(truth, dets, 1, iou_thresholds=[0.5])
    assert r.tp[0] == 2 and r.ap50[0] == pytest.approx(1.0)
    assert_matches_coco(truth + [np.zeros((0, 5))], dets + [np.zeros((0, 6))])


def test_bad_input_is_named():
    with pytest.raises(ShapeError, match="image 0"):
        evaluate([np.zeros((1, 4))], [np.zeros((0, 6))], 2)
    with pytest.raises(ValueRangeError, match="class 5"):
        evaluate([np.array([[5, 0.5, 0.5, 0.1, 0.1]])], [np.zeros((0, 6))], 2)
    with pytest.raises(ShapeError, match="2 ground-truth images but 1"):
        evaluate([np.zeros((0, 5))] * 2, [np.zeros((0, 6))], 2)
    with pytest.raises(ValueRangeError, match="non-finite"):
        evaluate([np.zeros((0, 5))], [np.array([[0, np.nan, 0.5, 0.1, 0.1, 0.5]])], 2)
