"""Detection: decoding against hand-computed boxes, the letterbox correction, IoU, Darknet's per-class NMS,
Darknet's resize/letterbox against a transcription of its C loops, drawing, and the detect/convert CLIs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import fixture_dir
from darknet_testutil import seeded_weights
from deltaprop import cli, darknet
from deltaprop.detect import (Detections, box_iou, correct_boxes, letterbox_image, letterbox_size, nms_sort,
                              report, resize_image, yolo_decode)
from deltaprop.errors import ShapeError


def logit(p):
    return math.log(p / (1 - p))


def test_decode_by_hand_with_letterbox():
    # a 2×2 grid, 2 anchors, 2 classes; the layer's output after its logistic (x, y, obj, classes)
    a, k = 2, 2
    out = np.zeros((a * (k + 5), 2, 2))
    v = out.reshape(a, k + 5, 2, 2)
    v[:, 4] = 0.1                                  # objectness below thresh everywhere ...
    v[1, :, 0, 1] = [0.25, 0.5, math.log(2), 0.0, 0.9, 0.8, 0.3]   # ... but anchor 1 at row 0, column 1
    anchors = [(8, 8), (16, 32)]
    d = yolo_decode(out, anchors, k, net_w=64, net_h=64, thresh=0.5)
    assert len(d) == 1
    # bx = (1 + 0.25)/2, by = (0 + 0.5)/2, bw = e^{ln 2}·16/64, bh = e^0·32/64
    assert np.allclose(d.boxes[0], [0.625, 0.25, 0.5, 0.5])
    assert d.objectness[0] == pytest.approx(0.9)
    assert np.allclose(d.probs[0], [0.72, 0.0])    # 0.9·0.3 = 0.27 ≤ thresh → 0
    # a 128×64 image letterboxed into 64×64: resized to 64×32, 16 grey rows above and below
    assert letterbox_size(128, 64, 64, 64) == (64, 32)
    c = correct_boxes(d.boxes, 128, 64, 64, 64)
    assert np.allclose(c[0], [0.625, (0.25 - 0.25) / 0.5, 0.5, 1.0])
    assert report(Detections(c, d.objectness, d.probs), 128, 64, 0.5, ["cat", "dog"])[0].__dict__ == \
        dict(cls=0, name="cat", prob=pytest.approx(0.72), left=48, top=0, right=112, bottom=32)
    assert np.array_equal(correct_boxes(d.boxes, 128, 64, 64, 64, letterbox=False), d.boxes)
    with pytest.raises(ShapeError, match=r"expected \(2·\(2\+5\), h, w\) = \(14, h, w\)"):
        yolo_decode(out[:-1], anchors, k, 64, 64)


def test_letterbox_correction_inverts_letterbox():
    # a box in image coordinates, mapped into the letterboxed canvas by hand, comes back unchanged
    for iw, ih, nw, nh in [(640, 480, 416, 416), (300, 500, 320, 320), (100, 100, 64, 96)]:
        new_w, new_h = letterbox_size(iw, ih, nw, nh)
        box = np.array([[0.3, 0.6, 0.2, 0.1]])
        canvas = np.array([[(box[0, 0] * new_w + (nw - new_w) / 2) / nw, (box[0, 1] * new_h + (nh - new_h) / 2) / nh,
                            box[0, 2] * new_w / nw, box[0, 3] * new_h / nh]])
        assert np.allclose(correct_boxes(canvas, iw, ih, nw, nh), box)


def test_iou():
    assert box_iou([0, 0, 2, 2], [1, 1, 2, 2]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [0, 0, 2, 2]) == pytest.approx(1.0)
    assert box_iou([0, 0, 1, 1], [3, 0, 1, 1]) == 0.0
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    assert box_iou([0, 0, 4, 2], [0, 0, 2, 4]) == pytest.approx(4 / 12)
    m = box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 2, 2], [0, 0, 2, 2]]))
    assert np.allclose(m, [1 / 7, 1.0])


def test_nms_per_class_as_darknet():
    boxes = np.array([[0.50, 0.50, 0.2, 0.2],    # A
                      [0.52, 0.50, 0.2, 0.2],    # B: IoU(A, B) = 0.18·0.2/(0.08 − 0.036) ≈ 0.82
                      [0.10, 0.10, 0.1, 0.1],    # C: far away
                      [0.51, 0.51, 0.2, 0.2],    # D: objectness 0 → dropped
                      [0.60, 0.50, 0.2, 0.2]])   # E: IoU(A, E) = 1/3 ≤ 0.45: kept
    obj = np.array([0.9, 0.8, 0.7, 0.0, 0.6])
    probs = np.array([[0.9, 0.0], [0.8, 0.6], [0.7, 0.0], [0.95, 0.9], [0.6, 0.0]])
    out = nms_sort(Detections(boxes, obj, probs), 0.45)
    assert len(out) == 4
    assert np.allclose(out.probs, [[0.9, 0.0], [0.0, 0.6], [0.7, 0.0], [0.6, 0.0]])  # B loses class 0 only
    # the order of the scores decides, not the order of the boxes
    rev = nms_sort(Detections(boxes[::-1], obj[::-1], probs[::-1]), 0.45)
    assert np.allclose(rev.probs[::-1], [[0.9, 0.0], [0.0, 0.6], [0.7, 0.0], [0.6, 0.0]])
    # ties: a stable order (the first box wins)
    tie = nms_sort(Detections(boxes[:2], obj[:2], np.array([[0.5], [0.5]])), 0.45)
    assert np.allclose(tie.probs, [[0.5], [0.0]])


# --- Darknet's resize_image and letterbox_image, transcribed loop by loop from image.c ---------------

def darknet_resize_loops(im, w, h):
    c, ih, iw = im.shape
    f = np.float32
    part = np.zeros((c, ih, w), f)
    w_scale = f(iw - 1) / f(w - 1) if w > 1 else f(0)
    h_scale = f(ih - 1) / f(h - 1) if h > 1 else f(0)
    for k in range(c):
        for r in range(ih):
            for col in range(w):
                if col == w - 1 or iw == 1:
                    val = im[k, r, iw - 1]
                else:
                    sx = f(col) * w_scale
                    ix = int(sx)
                    dx = sx - f(ix)
                    val = (f(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
                part[k, r, col] = val
    out = np.zeros((c, h, w), f)
    for k in range(c):
        for r in range(h):
            sy = f(r) * h_scale
            iy = int(sy)
            dy = sy - f(iy)
            for col in range(w):
                out[k, r, col] = (f(1) - dy) * part[k, iy, col]
            if r == h - 1 or ih == 1:
                continue
            for col in range(w):
                out[k, r, col] += dy * part[k, iy + 1, col]
    return out


@pytest.mark.parametrize("src,dst", [((3, 5, 7), (4, 3)), ((3, 4, 3), (9, 6)), ((1, 6, 1), (3, 4)),
                                     ((2, 7, 9), (9, 7))])
def test_resize_matches_darknet_loops(src, dst):
    im = np.random.default_rng(0).random(src, dtype=np.float32)
    assert np.allclose(resize_image(im, *dst), darknet_resize_loops(im, *dst), rtol=0, atol=1e-6)


def test_letterbox_image_geometry():
    im = np.random.default_rng(1).random((3, 30, 60), dtype=np.float32)
    box = letterbox_image(im, 32, 32)
    assert box.shape == (3, 32, 32) and box.dtype == np.float32
    assert np.all(box[:, :8] == 0.5) and np.all(box[:, 24:] == 0.5)    # resized to 32×16, centred
    assert np.allclose(box[:, 8:24], resize_image(im, 32, 16))


# --- drawing and the CLIs ----------------------------------------------------------------------------

def test_draw_boxes_png(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from deltaprop.detect.boxes import Box
    from deltaprop.detect.draw import class_color, draw_boxes, save_png
    img = np.zeros((3, 40, 60), dtype=np.float32)
    pil = draw_boxes(img, [Box(2, "car", 0.9, 10, 12, 50, 35)], classes=80)
    save_png(pil, tmp_path / "out.png")
    back = np.asarray(PIL.open(tmp_path / "out.png"))
    assert back.shape == (40, 60, 3)
    assert tuple(back[35, 30]) == class_color(2, 80) != (0, 0, 0)   # the bottom edge has the class colour
    assert tuple(back[25, 30]) == (0, 0, 0)                         # inside the box: untouched


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("yolo")
    net = darknet.load("yolov3-tiny", width=96, height=96)
    seeded_weights(net, 5)
    darknet.save_cfg(net, d / "tiny.cfg")
    darknet.save_weights(net, d / "tiny.weights")
    return d, net


def test_detect_cli_prints_boxes_and_writes_png(tiny_files, tmp_path, capsys):
    pytest.importorskip("PIL")
    d, net = tiny_files
    img = sorted(fixture_dir("coco128", "images").glob("*.jpg"))[0]
    names = fixture_dir("darknet", "coco.names")
    rc = cli.main(["detect", "--cfg", str(d / "tiny.cfg"), "--weights", str(d / "tiny.weights"), "--names",
                   str(names), "--thresh", "0.3", "--out", str(tmp_path), str(img)])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    n = int(lines[0].split(": ")[1].split()[0])
    box_lines = [l for l in lines if "%  left" in l]
    assert len(box_lines) == n
    for l in box_lines:
        name = l.split(":")[0].strip()
        assert name in names.read_text().splitlines()
    png = tmp_path / (img.stem + "_pred.png")
    assert png.exists() and f"wrote {png}" in out
    from PIL import Image
    from deltaprop.detect import load_image
    assert Image.open(png).size == Image.open(img).size
    # the same boxes from the Python API
    from deltaprop.detect import detect_image
    boxes = detect_image(net, load_image(img), 0.3, 0.45)
    assert len(boxes) == n


def test_convert_cli_round_trip(tiny_files, tmp_path, capsys):
    d, net = tiny_files
    assert cli.main(["convert", "--cfg", str(d / "tiny.cfg"), str(d / "tiny.weights"), str(tmp_path / "m.npz")]) == 0
    assert cli.main(["convert", str(tmp_path / "m.npz"), str(tmp_path / "back.weights")]) == 0
    assert (tmp_path / "back.weights").read_bytes() == (d / "tiny.weights").read_bytes()
    assert cli.main(["convert", str(d / "tiny.weights"), str(tmp_path / "x.npz")]) == 1
    assert "needs --cfg" in capsys.readouterr().err


def test_corner_iou_equals_darknets_box_iou_and_is_zero_apart():
    """mAP's IoU of corner boxes (``geometry.boxes.corner_iou``) is Darknet's ``box_iou`` of the same boxes
    given as centre and size; boxes that only touch, or lie apart, have IoU 0."""
    from deltaprop.geometry.boxes import corner_iou, to_corners
    rng = np.random.default_rng(4)
    a = np.column_stack([rng.uniform(0.2, 0.8, (7, 2)), rng.uniform(0.05, 0.6, (7, 2))])
    b = np.column_stack([rng.uniform(0.2, 0.8, (5, 2)), rng.uniform(0.05, 0.6, (5, 2))])
    corners = to_corners(a)
    assert np.allclose(corners[:, 2:] - corners[:, :2], a[:, 2:]) and np.allclose(corners[:, :2] + corners[:, 2:],
                                                                                   2 * a[:, :2])
    got = corner_iou(corners, to_corners(b))
    assert got.shape == (7, 5) and (got > 0).any()
    assert np.abs(got - box_iou(a[:, None, :], b[None, :, :])).max() < 1e-14
    touching = np.array([[0.25, 0.5, 0.5, 0.5], [0.75, 0.5, 0.5, 0.5], [3.0, 3.0, 0.1, 0.1]])
    assert corner_iou(to_corners(touching), to_corners(touching)).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
