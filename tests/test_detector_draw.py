"""Pictures of the detector workflow: labelled boxes (scaled), a mosaic of scenes, the training curve."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop.detect.boxes import Box

Image = pytest.importorskip("PIL.Image", reason="drawing needs Pillow (the images extra)")


def test_scaled_boxes_land_on_scaled_pixels(tmp_path):
    from deltaprop.detect.draw import class_color, draw_boxes, save_png
    img = np.zeros((3, 40, 50), dtype=np.float32)
    pil = draw_boxes(img, [Box(3, "three", 0.87, 10, 20, 30, 35)], classes=10, scale=3)
    assert pil.size == (150, 120)
    a = np.asarray(pil)
    col = class_color(3, 10)
    assert tuple(a[35 * 3, 20 * 3]) == col             # bottom edge, scaled
    assert tuple(a[28 * 3, 10 * 3]) == col             # left edge, scaled
    assert tuple(a[28 * 3, 20 * 3]) == (0, 0, 0)       # inside stays the image
    assert (a[: 20 * 3, 10 * 3:] == col).all(axis=-1).sum() > 50   # the label box above it
    save_png(pil, tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").size == (150, 120)


def test_mosaic_places_each_picture():
    from deltaprop.detect.draw import mosaic
    tiles = [Image.new("RGB", (10, 8), (k * 40, 0, 0)) for k in range(5)]
    m = mosaic(tiles, columns=3, gap=2)
    assert m.size == (3 * 10 + 2 * 2, 2 * 8 + 2)
    a = np.asarray(m)
    assert tuple(a[0, 0]) == (0, 0, 0) and tuple(a[0, 12]) == (40, 0, 0) and tuple(a[10, 12]) == (160, 0, 0)
    assert tuple(a[10, 25]) == (255, 255, 255)          # the empty sixth cell


def test_training_curve_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the training curve needs matplotlib (the plot extra)")
    from deltaprop.detect.draw import plot_training_curve
    hist = [{"batch": b, "loss": 50.0 / b, "avg_loss": 60.0 / b} for b in range(1, 41)]
    hist[19]["map50"], hist[19]["map"] = 0.4, 0.2
    hist[39]["map50"], hist[39]["map"] = 0.8, 0.5
    out = plot_training_curve(hist, tmp_path / "chart.png")
    im = Image.open(out)
    assert im.format == "PNG" and im.size[0] > 300
    assert not list(tmp_path.glob("*.tmp*"))


def test_training_curve_without_numbers_is_an_error(tmp_path):
    pytest.importorskip("matplotlib", reason="the training curve needs matplotlib (the plot extra)")
    from deltaprop.detect.draw import plot_training_curve
    from deltaprop.errors import DataError
    with pytest.raises(DataError, match="no records"):
        plot_training_curve([{"batch": 1, "loss": float("nan")}], tmp_path / "c.png")
