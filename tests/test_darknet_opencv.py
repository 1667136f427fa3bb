"""yolov4-tiny (AlexeyAB's cfg: [route] groups, [yolo] scale_x_y, ...) against an independent Darknet reader,
OpenCV DNN's ``readNetFromDarknet``: on a real photo, the two heads' inputs (the raw convolution outputs) and the
decoded heads (boxes, objectness, class scores) agree within 1e-4 relative. The weights are the harness's counter
hash (tools/darknet_harness/hash_init.py), written as a .weights file that both read."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import deltaprop.darknet as dn
from conftest import ROOT, fixture_dir, rel_err
from deltaprop.detect.boxes import yolo_decode

cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless) is not installed: no independent reader")
sys.path.insert(0, str(ROOT / "tools" / "darknet_harness"))
import hash_init  # noqa: E402
from make_inputs import inputs_and_truths  # noqa: E402

TOL = 1e-4


def test_yolov4_tiny_heads_equal_opencv_dnn(tmp_path):
    cfg = fixture_dir("darknet", "reference", "yolov4_tiny_416", "net.cfg")
    net = dn.load(cfg)
    assert net.fork == "alexeyab"
    hash_init.fill(net)
    dn.save_weights(net, tmp_path / "yolov4-tiny.weights")
    cvnet = cv2.dnn.readNetFromDarknet(str(cfg), str(tmp_path / "yolov4-tiny.weights"))
    x, _ = inputs_and_truths([fixture_dir("coco128", "images", "000000002592.jpg")], 416, 416)
    heads = net.detection_heads
    assert [h.index for h in heads] == [30, 37] and all(h.scale_x_y == 1.05 for h in heads)
    cvnet.setInput(x)
    names = [f"conv_{h.index - 1}" for h in heads] + [f"yolo_{h.index}" for h in heads]
    theirs = cvnet.forward(names)
    ours = net.predict(x)
    for k, head in enumerate(heads):
        raw, decoded = theirs[k], theirs[k + len(heads)]
        assert rel_err(net.layer_outputs[head.index - 1], raw) < TOL
        # OpenCV's yolo layer: one row per cell and anchor (Darknet's order): x, y, w, h relative to the input,
        # objectness, then objectness × class probability
        d = yolo_decode(ours[k][0], head.masked_anchors, head.classes, 416, 416, thresh=0.0)
        assert decoded.shape == (len(d), 5 + head.classes)
        assert rel_err(d.boxes, decoded[:, :4]) < TOL
        assert rel_err(d.objectness, decoded[:, 4]) < TOL
        assert rel_err(d.probs, decoded[:, 5:]) < TOL
