"""[yolo] deltas on hand-built cases, against a plain loop-by-loop transcription of Darknet's
``forward_yolo_layer`` written here (``reference_deltas``, independent of the engine's vectorised masks),
plus the facts of each case stated by hand: a truth whose best anchor belongs to another head, two truths
in one cell, a prediction above ignore_thresh, one above truth_thresh, a multi-label cell, an image with no
truths, more truths than ``max``."""
import math
import warnings

import numpy as np
import pytest

import deltaprop.darknet as dn

ANCHORS = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119)]
K = 3                     # classes
NET = 64                  # network input is NET×NET pixels (the [yolo] grid is given by the cfg's width)


def yolo_net(grid: int, mask, ignore=0.5, truth=1.0, max_boxes=90, dtype=np.float64):
    """A NET×NET-pixel network whose [yolo] input is what we choose: a [maxpool] of NET/grid-pixel windows
    over an input that repeats each chosen raw value on its window (``feed``)."""
    text = f"""[net]
batch=2
width={NET}
height={NET}
channels={len(mask) * (K + 5)}

[maxpool]
size={NET // grid}
stride={NET // grid}
padding=0

[yolo]
mask={','.join(str(m) for m in mask)}
anchors={', '.join(f'{w},{h}' for w, h in ANCHORS)}
classes={K}
num={len(ANCHORS)}
ignore_thresh={ignore}
truth_thresh={truth}
max={max_boxes}
"""
    return dn.load_cfg_text(text, dtype=dtype)


def feed(raw: np.ndarray) -> np.ndarray:
    """The network input whose max-pooled windows are ``raw`` (N, A, 5+K, g, g)."""
    n, a, e, g, _ = raw.shape
    rep = NET // g
    return np.repeat(np.repeat(raw.reshape(n, a * e, g, g), rep, axis=2), rep, axis=3)


def reference_deltas(out, truths, mask, net_w, net_h, ignore, truth_thresh, max_boxes=90):
    """Darknet's forward_yolo_layer, one loop at a time, in Python floats. ``out`` (N, A(5+K), H, W) with
    the logistic applied; ``truths`` per image, rows [class, x, y, w, h]. Returns (delta, statistics)."""
    n_img, _, lh, lw = out.shape
    a = len(mask)
    o = out.reshape(n_img, a, K + 5, lh, lw)
    d = np.zeros_like(o)

    def iou(p, q):
        def ov(x1, w1, x2, w2):
            return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)
        w, h = ov(p[0], p[2], q[0], q[2]), ov(p[1], p[3], q[1], q[3])
        inter = 0.0 if w < 0 or h < 0 else w * h
        return inter / (p[2] * p[3] + q[2] * q[3] - inter)

    def pred_box(b, n, j, i, anchor):
        return ((i + o[b, n, 0, j, i]) / lw, (j + o[b, n, 1, j, i]) / lh,
                math.exp(o[b, n, 2, j, i]) * anchor[0] / net_w, math.exp(o[b, n, 3, j, i]) * anchor[1] / net_h)

    def set_box(b, n, j, i, t, anchor):
        s = 2 - t[3] * t[4]
        d[b, n, 0, j, i] = s * (t[1] * lw - i - o[b, n, 0, j, i])
        d[b, n, 1, j, i] = s * (t[2] * lh - j - o[b, n, 1, j, i])
        d[b, n, 2, j, i] = s * (math.log(t[3] * net_w / anchor[0]) - o[b, n, 2, j, i])
        d[b, n, 3, j, i] = s * (math.log(t[4] * net_h / anchor[1]) - o[b, n, 3, j, i])

    def set_class(b, n, j, i, c):
        if d[b, n, 5, j, i]:
            d[b, n, 5 + c, j, i] = 1 - o[b, n, 5 + c, j, i]
            return
        for k in range(K):
            d[b, n, 5 + k, j, i] = (1.0 if k == c else 0.0) - o[b, n, 5 + k, j, i]

    count, s_iou, s_cat, s_obj, s_any, r50, r75 = 0, 0.0, 0.0, 0.0, 0.0, 0, 0
    for b in range(n_img):
        tl = [list(map(float, r)) for r in truths[b]][:max_boxes]
        for j in range(lh):
            for i in range(lw):
                for n in range(a):
                    p = pred_box(b, n, j, i, ANCHORS[mask[n]])
                    best, best_t = 0.0, 0
                    for t, row in enumerate(tl):
                        v = iou(p, row[1:])
                        if v > best:
                            best, best_t = v, t
                    s_any += o[b, n, 4, j, i]
                    d[b, n, 4, j, i] = -o[b, n, 4, j, i]
                    if best > ignore:
                        d[b, n, 4, j, i] = 0
                    if best > truth_thresh:
                        d[b, n, 4, j, i] = 1 - o[b, n, 4, j, i]
                        set_class(b, n, j, i, int(tl[best_t][0]))
                        set_box(b, n, j, i, tl[best_t], ANCHORS[mask[n]])
        for row in tl:
            i, j = int(row[1] * lw), int(row[2] * lh)
            scores = [iou((0, 0, aw / net_w, ah / net_h), (0, 0, row[3], row[4])) for aw, ah in ANCHORS]
            best_n = max(range(len(ANCHORS)), key=lambda k: (scores[k], -k))
            if best_n not in mask:
                continue
            n = mask.index(best_n)
            v = iou(pred_box(b, n, j, i, ANCHORS[best_n]), row[1:])
            set_box(b, n, j, i, row, ANCHORS[best_n])
            s_obj += o[b, n, 4, j, i]
            d[b, n, 4, j, i] = 1 - o[b, n, 4, j, i]
            s_cat += o[b, n, 5 + int(row[0]), j, i]
            set_class(b, n, j, i, int(row[0]))
            count += 1
            s_iou += v
            r50 += v > 0.5
            r75 += v > 0.75
    nan = float("nan")
    per = lambda v: v / count if count else nan
    stats = {"count": count, "avg_iou": per(s_iou), "class": per(s_cat), "obj": per(s_obj),
             "recall50": per(r50), "recall75": per(r75), "no_obj": s_any / (n_img * a * lh * lw)}
    return d.reshape(out.shape), stats


def logit(p):
    return math.log(p / (1 - p))


def raw_input(grid, a, seed=0, n=2):
    """Raw [yolo] inputs: small random logits, objectness around σ(−2)."""
    r = np.random.default_rng(seed).normal(0, 0.5, (n, a, K + 5, grid, grid))
    r[:, :, 4] -= 2
    return r


def run(net, raw, targets):
    net.train()
    net(feed(raw))
    assert np.array_equal(net.layer_outputs[0], raw.reshape(net.layer_outputs[0].shape))
    net.loss(targets)
    net.backward()
    assert np.array_equal(net.layer_grads[0], net.layer_grads[1])     # passed down without a Jacobian
    return -net.layer_grads[1], net.yolo_stats[0]


def check(net, raw, targets, mask, ignore=0.5, truth_thresh=1.0, max_boxes=90):
    delta, stats = run(net, raw, targets)
    out = net.layer_outputs[1]
    ref, ref_stats = reference_deltas(out, targets, mask, NET, NET, ignore, truth_thresh, max_boxes)
    assert np.abs(delta - ref).max() < 1e-12
    for k, v in ref_stats.items():
        assert stats[k] == pytest.approx(v, rel=1e-12, nan_ok=True), k
    return delta.reshape(raw.shape), out.reshape(raw.shape), stats


def test_truth_whose_best_anchor_is_in_another_head():
    # a 62×45-pixel box: anchor 4 (62, 45) fits it exactly, so the 13-grid head (mask 0,1,2) skips it
    box = np.array([[1, 0.40, 0.60, 62 / NET, 45 / NET]])
    targets = [box, np.zeros((0, 5))]
    small = yolo_net(4, [0, 1, 2])
    d, out, st = check(small, raw_input(4, 3), targets, [0, 1, 2])
    assert st["count"] == 0 and math.isnan(st["avg_iou"])
    assert not d[:, :, :4].any() and not d[:, :, 5:].any()          # no box, no class delta anywhere
    big = yolo_net(2, [3, 4, 5])
    d, out, st = check(big, raw_input(2, 3, seed=1), targets, [3, 4, 5])
    assert st["count"] == 1
    i, j = int(0.40 * 2), int(0.60 * 2)
    n = 1                                                              # anchor 4 is mask[1]
    s = 2 - (62 / NET) * (45 / NET)
    assert d[0, n, 0, j, i] == pytest.approx(s * (0.40 * 2 - i - out[0, n, 0, j, i]))
    assert d[0, n, 2, j, i] == pytest.approx(s * (math.log(62 / 62) - out[0, n, 2, j, i]))
    assert d[0, n, 4, j, i] == pytest.approx(1 - out[0, n, 4, j, i])
    assert np.count_nonzero(d[0, :, 0]) == 1


def test_two_truths_in_one_cell_last_box_wins_and_classes_add_up():
    mask = [0, 1, 2]
    net = yolo_net(4, mask)
    t1 = [0, 0.30, 0.30, 12 / NET, 14 / NET]       # both best fit anchor 0 (10, 13), both in cell (1, 1)
    t2 = [2, 0.45, 0.40, 9 / NET, 12 / NET]
    targets = [np.array([t1, t2]), np.zeros((0, 5))]
    d, out, st = check(net, raw_input(4, 3), targets, mask)
    assert st["count"] == 2
    s2 = 2 - t2[3] * t2[4]
    assert d[0, 0, 0, 1, 1] == pytest.approx(s2 * (0.45 * 4 - 1 - out[0, 0, 0, 1, 1]))   # the second truth's
    assert d[0, 0, 3, 1, 1] == pytest.approx(s2 * (math.log(12 / 13) - out[0, 0, 3, 1, 1]))
    c = out[0, 0, 5:, 1, 1]
    assert d[0, 0, 5:, 1, 1] == pytest.approx([1 - c[0], -c[1], 1 - c[2]])            # both labels


def test_multi_label_cell_keeps_earlier_labels():
    mask = [0, 1, 2]
    net = yolo_net(4, mask)
    a = [1, 0.60, 0.85, 11 / NET, 13 / NET]
    b = [0, 0.70, 0.80, 10 / NET, 14 / NET]
    c = [2, 0.65, 0.90, 10 / NET, 12 / NET]
    d, out, st = check(net, raw_input(4, 3, seed=5), [np.zeros((0, 5)), np.array([a, b, c])], mask)
    p = out[1, 0, 5:, 3, 2]
    assert d[1, 0, 5:, 3, 2] == pytest.approx(1 - p)                 # classes 1, 0, 2 all targets 1
    assert st["count"] == 3


def test_prediction_above_ignore_thresh_gets_no_objectness_delta():
    mask = [0, 1, 2]
    net = yolo_net(4, mask)
    raw = raw_input(4, 3, seed=2)
    box = [1, 0.60, 0.35, 33 / NET, 23 / NET]       # best anchor 2 (33, 23): cell (2, 1), mask index 2
    # anchor 1 (16, 30) of the same cell predicts nearly the same box: centre 0.025 to the right, IoU ≈ 0.91
    raw[0, 1, 0, 1, 2], raw[0, 1, 1, 1, 2] = logit(0.5), logit(0.4)
    raw[0, 1, 2, 1, 2], raw[0, 1, 3, 1, 2] = math.log(33 / 16), math.log(23 / 30)
    d, out, st = check(net, raw, [np.array([box]), np.zeros((0, 5))], mask)
    assert d[0, 1, 4, 1, 2] == 0.0                                    # ignored
    assert d[0, 1, 4, 2, 2] == pytest.approx(-out[0, 1, 4, 2, 2])    # the cell below is not
    assert d[0, 2, 4, 1, 2] == pytest.approx(1 - out[0, 2, 4, 1, 2])  # the responsible anchor
    assert not d[0, 1, :4, 1, 2].any()                                # ignored is not trained
    # with ignore_thresh 0.95 the same prediction is pushed to 0
    strict = yolo_net(4, mask, ignore=0.95)
    d2, out2, _ = check(strict, raw, [np.array([box]), np.zeros((0, 5))], mask, ignore=0.95)
    assert d2[0, 1, 4, 1, 2] == pytest.approx(-out2[0, 1, 4, 1, 2])


def test_prediction_above_truth_thresh_is_trained_as_responsible():
    mask = [0, 1, 2]
    net = yolo_net(4, mask, ignore=0.5, truth=0.7)
    raw = raw_input(4, 3, seed=3)
    box = [2, 0.60, 0.35, 33 / NET, 23 / NET]
    raw[0, 1, 0, 1, 2], raw[0, 1, 1, 1, 2] = logit(0.45), logit(0.42)   # IoU ≈ 0.93 > 0.7
    raw[0, 1, 2, 1, 2], raw[0, 1, 3, 1, 2] = math.log(33 / 16), math.log(23 / 30)
    d, out, st = check(net, raw, [np.array([box]), np.zeros((0, 5))], mask, 0.5, 0.7)
    o = out[0, 1, :, 1, 2]
    s = 2 - box[3] * box[4]
    assert d[0, 1, 4, 1, 2] == pytest.approx(1 - o[4])
    assert d[0, 1, 5:, 1, 2] == pytest.approx([-o[5], -o[6], 1 - o[7]])
    assert d[0, 1, 0, 1, 2] == pytest.approx(s * (0.60 * 4 - 2 - o[0]))
    assert d[0, 1, 2, 1, 2] == pytest.approx(s * (math.log(33 / 16) - o[2]))  # this anchor's own size
    assert st["count"] == 1                                                # not counted as a truth
    # without truth_thresh (1.0) the same prediction is only ignored
    plain = yolo_net(4, mask)
    d1, _, _ = check(plain, raw, [np.array([box]), np.zeros((0, 5))], mask)
    assert d1[0, 1, 4, 1, 2] == 0 and not d1[0, 1, :4, 1, 2].any() and not d1[0, 1, 5:, 1, 2].any()


def test_image_without_truths_only_pushes_objectness_down():
    mask = [0, 1, 2]
    net = yolo_net(4, mask)
    d, out, st = check(net, raw_input(4, 3, seed=4), [np.zeros((0, 5)), np.zeros((0, 5))], mask)
    assert np.array_equal(d[:, :, 4], -out[:, :, 4])
    assert not d[:, :, :4].any() and not d[:, :, 5:].any()
    assert st["count"] == 0 and math.isnan(st["recall50"])
    assert st["no_obj"] == pytest.approx(out[:, :, 4].mean())
    cost = net.loss_costs[1]
    assert cost == pytest.approx(float((out[:, :, 4] ** 2).sum()), rel=1e-12)   # Σ delta²


def test_more_truths_than_max_keeps_the_first_and_warns_once():
    mask = [0, 1, 2]
    net = yolo_net(4, mask, max_boxes=2)
    boxes = np.array([[0, 0.1 + 0.2 * k, 0.1 + 0.2 * k, 11 / NET, 13 / NET] for k in range(4)])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        d, out, st = check(net, raw_input(4, 3, seed=6), [boxes, boxes], mask, max_boxes=2)
        run(net, raw_input(4, 3, seed=7), [boxes, boxes])
    msgs = [str(x.message) for x in w if "max=2" in str(x.message)]
    assert len(msgs) == 1 and "4 boxes" in msgs[0]
    assert st["count"] == 4                                  # 2 per image
    assert d[0, 0, 4, 0, 0] == pytest.approx(1 - out[0, 0, 4, 0, 0])
    assert d[0, 0, 4, 2, 2] == pytest.approx(-out[0, 0, 4, 2, 2])      # the third box is not trained


def test_bad_class_and_bad_targets_are_errors():
    from deltaprop.errors import LabelError, ShapeError
    net = yolo_net(4, [0, 1, 2])
    net.train()
    net(feed(raw_input(4, 3)))
    with pytest.raises(LabelError, match="class 3 is outside 0..2"):
        net.loss([np.array([[3, 0.5, 0.5, 0.1, 0.1]]), np.zeros((0, 5))])
    with pytest.raises(LabelError, match="size be positive"):
        net.loss([np.array([[1, 0.5, 0.5, 0.0, 0.1]]), np.zeros((0, 5))])
    with pytest.raises(LabelError, match=r"image 1: box 0.*centre must lie in \[0, 1\]"):
        net.loss([np.zeros((0, 5)), np.array([[1, 1.5, 0.5, 0.1, 0.1]])])
    with pytest.raises(ShapeError, match="2 images"):
        net.loss([np.zeros((0, 5))])
    with pytest.raises(ShapeError, match=r"\(k, 5\)"):
        net.loss([np.zeros((2, 4)), np.zeros((0, 5))])


def test_float32_matches_the_float64_reference_loosely():
    mask = [0, 1, 2]
    net = yolo_net(4, mask, dtype=np.float32)
    targets = [np.array([[0, 0.30, 0.30, 12 / NET, 14 / NET], [1, 0.7, 0.6, 30 / NET, 22 / NET]]),
               np.zeros((0, 5))]
    delta, _ = run(net, raw_input(4, 3).astype(np.float32), targets)
    ref, _ = reference_deltas(net.layer_outputs[1].astype(np.float64), targets, mask, NET, NET, 0.5, 1.0)
    assert delta.dtype == np.float32 and np.abs(delta - ref).max() < 1e-5
