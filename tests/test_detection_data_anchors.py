"""Anchors by k-means on 1 - IoU (AlexeyAB's calc_anchors) and ``deltaprop anchors``."""
import numpy as np
import pytest
from PIL import Image

from deltaprop.cli import main
from deltaprop.data.anchors import kmeans_anchors, label_shapes
from deltaprop.errors import DataError


def _iou(w1, h1, w2, h2):
    inter = min(w1, w2) * min(h1, h2)
    return inter / (w1 * h1 + w2 * h2 - inter)


def test_kmeans_finds_separated_clusters_sorted_by_area(rng):
    centres = np.array([[60, 40], [10, 20], [30, 30]], float)
    shapes = np.concatenate([c * (1 + 0.05 * rng.standard_normal((50, 2))) for c in centres])
    res = kmeans_anchors(shapes, 3, seed=0)
    np.testing.assert_allclose(res.anchors, [[10, 20], [30, 30], [60, 40]], rtol=0.05)
    areas = res.anchors[:, 0] * res.anchors[:, 1]
    assert np.all(np.diff(areas) > 0)
    # independent check: the reported mean IoU, and k-means' fixed point (each anchor is its members' mean)
    best = [max(range(3), key=lambda j: _iou(w, h, *res.anchors[j])) for w, h in shapes]
    want = np.mean([_iou(w, h, *res.anchors[j]) for (w, h), j in zip(shapes, best)])
    assert res.avg_iou == pytest.approx(want, rel=1e-12)
    for j in range(3):
        np.testing.assert_allclose(res.anchors[j], shapes[np.array(best) == j].mean(axis=0), rtol=1e-12)


def test_seeded_and_restarts_never_worse(rng):
    shapes = rng.uniform(5, 100, (300, 2))
    a, b = kmeans_anchors(shapes, 6, seed=4, restarts=1), kmeans_anchors(shapes, 6, seed=4, restarts=1)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert kmeans_anchors(shapes, 6, seed=4, restarts=8).avg_iou >= a.avg_iou


def test_kmeans_errors():
    with pytest.raises(DataError, match="3 boxes cannot make 6 anchors"):
        kmeans_anchors(np.ones((3, 2)), 6)
    with pytest.raises(DataError, match="at least 1"):
        kmeans_anchors(np.ones((3, 2)), 0)


def test_label_shapes_scale_to_network_pixels():
    rows = [np.array([[0, 0.5, 0.5, 0.1, 0.2]]), np.zeros((0, 5)), np.array([[1, 0.5, 0.5, 0.5, 0.25]])]
    np.testing.assert_allclose(label_shapes(rows, 200, 100), [[20, 20], [100, 25]])


def test_anchors_command_prints_the_cfg_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    boxes = ["0 0.5 0.5 0.1 0.2", "1 0.3 0.3 0.1 0.2", "0 0.5 0.5 0.5 0.4", "1 0.6 0.6 0.1 0.2",
             "0 0.4 0.4 0.5 0.4"]
    lines = []
    for i, box in enumerate(boxes):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        (tmp_path / "labels" / f"{i}.txt").write_text(box + "\n")
        lines.append(f"images/{i}.png")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "s.data").write_text("classes = 2\ntrain = train.txt\n")
    assert main(["anchors", str(tmp_path / "s.data"), "-n", "2", "--size", "100", "200"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "anchors = 10,40, 50,80"
    assert "avg IoU = 100.00 %" in out and "counters_per_class = 3, 2" in out
    assert main(["anchors", str(tmp_path / "s.data"), "-n", "2", "--size", "20", "20"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "anchors = 2.0000,4.0000, 10.0000,8.0000"
    assert main(["anchors", str(tmp_path / "s.data"), "-n", "9"]) == 1
    assert capsys.readouterr().err.strip() == (f"deltaprop anchors: error: {tmp_path / 's.data'}: 5 boxes cannot make "
                                               f"9 anchors (5 images, 5 boxes)")
