"""Darknet's detection augmentation: boxes follow the objects, the HSV arithmetic, box correction."""
import colorsys

import numpy as np
import pytest
from PIL import Image

from deltaprop.data.augment import (Augment, augment_sample, correct_boxes, distort_image, hsv_to_rgb,
                                    place_image, rgb_to_hsv)
from deltaprop.data.detection import DetectionDataset, DetectionLoader
from deltaprop.errors import ValueRangeError


def _scene(w=90, h=60):
    """A dark grey image (saturation 0) with two saturated rectangles, and their label rows."""
    im = np.full((3, h, w), 0.2, np.float32)
    im[:, 10:30, 8:40] = np.array([1.0, 0.2, 0.2], np.float32)[:, None, None]     # red, left
    im[:, 35:55, 60:80] = np.array([0.2, 0.3, 1.0], np.float32)[:, None, None]    # blue, right
    rows = np.array([[0, (8 + 40) / 2 / w, (10 + 30) / 2 / h, 32 / w, 20 / h],
                     [1, (60 + 80) / 2 / w, (35 + 55) / 2 / h, 20 / w, 20 / h]], np.float32)
    return im, rows


def _saturated(x):
    mx, mn = x.max(0), x.min(0)
    return (mx - mn) / np.maximum(mx, 1e-6) > 0.25


@pytest.mark.parametrize("seed", range(12))
def test_boxes_stay_on_the_moved_objects(seed):
    im, rows = _scene()
    aug = Augment(jitter=0.3, hue=0.1, saturation=1.5, exposure=1.5, flip=True)
    x, boxes = augment_sample(im, rows, 64, 48, aug, np.random.default_rng(seed))
    assert x.shape == (3, 48, 64) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    assert boxes.shape == (2, 5)
    mask = _saturated(x)
    covered = np.zeros_like(mask)
    for c, bx, by, bw, bh in boxes:
        l, r = (bx - bw / 2) * 64, (bx + bw / 2) * 64
        t, b = (by - bh / 2) * 48, (by + bh / 2) * 48
        inner = mask[int(np.ceil(t)) + 1:int(b) - 1, int(np.ceil(l)) + 1:int(r) - 1]
        assert inner.size and inner.mean() > 0.97, (seed, c, inner.mean())      # the box is on the object
        covered[max(0, int(t) - 1):int(np.ceil(b)) + 1, max(0, int(l) - 1):int(np.ceil(r)) + 1] = True
    assert not (mask & ~covered).any(), seed                                      # no object outside a box


def test_flip_moves_the_left_object_right():
    im, rows = _scene()
    aug = Augment(jitter=0.0, hue=0.0, saturation=1.0, exposure=1.0, flip=True)
    flips = set()
    for seed in range(8):
        x, boxes = augment_sample(im, rows, 90, 60, aug, np.random.default_rng(seed))
        red = (x[0] > 0.9) & (x[1] < 0.3)
        ys, xs = np.nonzero(red)
        left_side = xs.mean() < 45
        flips.add(left_side)
        assert (boxes[0, 1] < 0.5) == left_side        # the class-0 box follows the red object
    assert flips == {True, False}                      # both outcomes occur


def test_same_seed_same_sample_different_seed_different():
    im, rows = _scene()
    aug = Augment()
    a = augment_sample(im, rows, 64, 64, aug, np.random.default_rng(5))
    b = augment_sample(im, rows, 64, 64, aug, np.random.default_rng(5))
    c = augment_sample(im, rows, 64, 64, aug, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_hsv_matches_colorsys(rng):
    im = rng.random((3, 7, 9)).astype(np.float32)
    im[:, 0, 0] = 0.4                                 # grey: hue and saturation 0
    im[:, 0, 1] = 0.0                                 # black
    hsv = rgb_to_hsv(im)
    for y in range(7):
        for x in range(9):
            want = colorsys.rgb_to_hsv(*im[:, y, x].astype(float))
            np.testing.assert_allclose(hsv[:, y, x], want, atol=1e-6)
    np.testing.assert_allclose(hsv_to_rgb(hsv), im, atol=1e-6)


def _darknet_hsv_to_rgb(h, s, v):
    """pjreddie/darknet's hsv_to_rgb for one pixel, sector by sector (the reference for the vectorised one)."""
    if s == 0:
        return v, v, v
    h6 = 6 * h
    index = int(np.floor(h6))
    f = h6 - index
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v)}.get(index, (v, p, q))


def test_hsv_to_rgb_is_darknets_sector_code(rng):
    hsv = rng.random((3, 6, 8)).astype(np.float32)
    hsv[1] *= 1.6                                      # saturation scaled past 1, as distort_image may
    hsv[0, 0, :3] = [0.0, 1.0, 0.5]                    # the sector edges, h = 1 included (Darknet's index 6)
    hsv[1, 1, 0] = 0.0
    out = hsv_to_rgb(hsv)
    for y in range(6):
        for x in range(8):
            want = _darknet_hsv_to_rgb(*hsv[:, y, x].astype(np.float64))
            np.testing.assert_allclose(out[:, y, x], want, atol=2e-6)


def test_distort_scales_saturation_and_value_and_shifts_hue():
    im = np.array([0.8, 0.4, 0.2], np.float32).reshape(3, 1, 1)
    h, s, v = colorsys.rgb_to_hsv(0.8, 0.4, 0.2)
    out = distort_image(im, 0.95, 0.5, 1.1)                 # hue wraps past 1
    want = colorsys.hsv_to_rgb((h + 0.95) % 1.0, s * 0.5, min(v * 1.1, 10))
    np.testing.assert_allclose(out[:, 0, 0], np.clip(want, 0, 1), atol=1e-6)
    over = distort_image(im, 0.0, 1.0, 2.0)                  # exposure past 1 is clipped per channel
    np.testing.assert_allclose(over[:, 0, 0], [1.0, 0.8, 0.4], atol=1e-6)


def test_place_image_is_darknet_bilinear_on_grey_canvas():
    im = np.arange(12, dtype=np.float32).reshape(1, 3, 4) / 12
    canvas = place_image(np.repeat(im, 3, 0), 8, 6, 2, 1, 12, 9)
    assert canvas.shape == (3, 9, 12)
    assert (canvas[:, 0] == 0.5).all() and (canvas[:, :, :2] == 0.5).all() and (canvas[:, 7:] == 0.5).all()
    # canvas (2 + x, 1 + y) samples the source at (x * 4 / 8, y * 3 / 6), beyond the edge reading 0
    src = np.pad(im[0], ((0, 1), (0, 1)))
    for y in range(6):
        for x in range(8):
            rx, ry = x * 4 / 8, y * 3 / 6
            ix, iy = int(rx), int(ry)
            fx, fy = rx - ix, ry - iy
            want = ((1 - fy) * (1 - fx) * src[iy, ix] + fy * (1 - fx) * src[iy + 1, ix]
                    + (1 - fy) * fx * src[iy, ix + 1] + fy * fx * src[iy + 1, ix + 1])
            assert canvas[0, 1 + y, 2 + x] == pytest.approx(want, abs=1e-6)


def test_correct_boxes_clips_and_drops_tiny_boxes():
    rows = np.array([[3, 0.5, 0.5, 0.2, 0.2],      # moved right by 0.45: clipped at the right edge
                     [4, 0.1, 0.1, 0.0015, 0.2]],  # scaled by 0.5 -> width 0.00075 < 0.001: dropped
                    np.float32)
    out = correct_boxes(rows, 0.45, 0.0, 0.5, 1.0, flip=False)
    assert out.shape == (1, 5) and out[0, 0] == 3
    left, right = 0.4 * 0.5 + 0.45, min(0.6 * 0.5 + 0.45, 1.0)
    np.testing.assert_allclose(out[0, 1:], [(left + right) / 2, 0.5, right - left, 0.2], atol=1e-6)
    flipped = correct_boxes(rows[:1], 0.0, 0.0, 1.0, 1.0, flip=True)
    np.testing.assert_allclose(flipped[0, 1:], [0.5, 0.5, 0.2, 0.2], atol=1e-6)
    moved = correct_boxes(np.array([[0, 0.2, 0.5, 0.2, 0.2]]), 0.0, 0.0, 1.0, 1.0, flip=True)
    np.testing.assert_allclose(moved[0, 1], 0.8, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(jitter=1.0), dict(hue=-0.1), dict(saturation=0.5), dict(exposure=0.9)])
def test_augment_options_are_checked(bad):
    with pytest.raises(ValueRangeError):
        Augment(**bad)


def test_augment_from_cfg():
    a = Augment.from_cfg({"jitter": ".3", "hue": ".1", "saturation": "1.5", "exposure": "1.5", "flip": "0"})
    assert a == Augment(jitter=0.3, hue=0.1, saturation=1.5, exposure=1.5, flip=False)
    # Darknet's train_detector takes jitter from the last [yolo] layer (default .2 there)
    b = Augment.from_cfg({"hue": ".1", "jitter": ".1"}, yolo={"jitter": ".3", "mask": "0,1,2"})
    assert (b.jitter, b.hue, b.saturation, b.exposure, b.flip) == (0.3, 0.1, 1.0, 1.0, True)
    assert Augment.from_cfg({}).jitter == 0.2


def test_augmented_loader_batches_keep_boxes_on_objects(tmp_path):
    im, rows = _scene()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    paths = []
    for i in range(4):
        p = tmp_path / "images" / f"s{i}.png"
        Image.fromarray((im.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(p)
        (tmp_path / "labels" / f"s{i}.txt").write_text("".join(" ".join(f"{v:.6f}" if k else str(int(v))
                                                                         for k, v in enumerate(r)) + "\n"
                                                                for r in rows))
        paths.append(p)
    ds = DetectionDataset(paths, 2, 64, 48, augment=Augment(), seed=3)
    x, targets = next(iter(DetectionLoader(ds, 4, workers=2, seed=1)))
    for img, boxes in zip(x, targets):
        mask = _saturated(img)
        for c, bx, by, bw, bh in boxes:
            l, r = int(np.ceil((bx - bw / 2) * 64)) + 1, int((bx + bw / 2) * 64) - 1
            t, b = int(np.ceil((by - bh / 2) * 48)) + 1, int((by + bh / 2) * 48) - 1
            assert mask[t:b, l:r].mean() > 0.97
