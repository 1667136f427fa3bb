"""AlexeyAB's mosaic (``[net] mosaic=1``): four pictures in one canvas, their boxes moved and cut by
``blend_truth_mosaic``'s rules. The boxes are checked against the pixels: every picture is a grey field with
solid rectangles of colours no other object has, so after composing, the pixels of an object's colour are what
is visible of it."""
import colorsys

import numpy as np
import pytest

from deltaprop.data.augment import (Augment, Crop, Shifts, crop_boxes, crop_image, draw_crop, mosaic_boxes,
                                    mosaic_cut, mosaic_sample, quadrant_bounds)
from deltaprop.errors import ValueRangeError

W, H = 96, 80
COLOURS = [np.array(colorsys.hsv_to_rgb(k / 12, 1.0, 1.0), np.float32) for k in range(12)]


def _pictures(rng):
    """Four pictures of different sizes, each with three non-overlapping solid rectangles (class = object id,
    colour = COLOURS[id]) on grey, and their label rows."""
    out = []
    for q, (pw, ph) in enumerate(((90, 60), (70, 100), (120, 80), (64, 64))):
        im = np.full((3, ph, pw), 0.5, np.float32)
        rows = []
        for k in range(3):                     # three vertical bands, one rectangle in each
            x0 = k * pw // 3 + int(rng.integers(0, 4))
            x1 = (k + 1) * pw // 3 - int(rng.integers(1, 4))
            y0 = int(rng.integers(0, ph // 2))
            y1 = int(rng.integers(y0 + ph // 4, ph + 1))
            cls = 3 * q + k
            im[:, y0:y1, x0:x1] = COLOURS[cls][:, None, None]
            rows.append([cls, (x0 + x1) / 2 / pw, (y0 + y1) / 2 / ph, (x1 - x0) / pw, (y1 - y0) / ph])
        out.append((im, np.array(rows, np.float32)))
    return out


def _visible(x, cls):
    """The mosaic's pixels of object ``cls``'s colour (blended edge pixels excluded)."""
    return np.abs(x - COLOURS[cls][:, None, None]).max(axis=0) < 0.08


def _rect(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1          # left, top, right, bottom (exclusive)


@pytest.mark.parametrize("bound", [False, True], ids=["canvas-cut", "mosaic_bound"])
@pytest.mark.parametrize("seed", range(10))
def test_the_kept_boxes_cover_their_objects_and_no_visible_object_is_lost(seed, bound):
    rng = np.random.default_rng(seed)
    aug = Augment(jitter=0.3, hue=0.0, saturation=1.0, exposure=1.0, flip=True, mosaic=True, mosaic_bound=bound)
    pictures = _pictures(rng)
    x, boxes = mosaic_sample(pictures, W, H, aug, rng)
    assert x.shape == (3, H, W) and x.dtype == np.float32 and boxes.dtype == np.float32
    kept = {int(c): b for c, *b in boxes}
    assert len(kept) == len(boxes)                                  # one box per object at most
    cut = _last_cut[0]
    for cls in range(12):
        mask = _visible(x, cls)
        quadrant = cls // 3
        if cls not in kept:
            # a dropped object shows at most a sliver (under 2 pixels one way: Darknet's 1-pixel rule + blur)
            assert not mask.any() or min(_rect(mask)[2] - _rect(mask)[0], _rect(mask)[3] - _rect(mask)[1]) <= 2, \
                (seed, cls)
            continue
        bx, by, bw, bh = kept[cls]
        left, right, top, bottom = (bx - bw / 2) * W, (bx + bw / 2) * W, (by - bh / 2) * H, (by + bh / 2) * H
        # inside the canvas to within the truncation of its corners to whole pixels (toward zero, as C's int())
        assert -1 < left and right < W + 1 and -1 < top and bottom < H + 1, (seed, cls)
        ql, qt, qr, qb = quadrant_bounds(quadrant, W, H, *cut)
        if bound:
            assert ql - 1e-4 <= left and right <= qr + 1e-4 and qt - 1e-4 <= top and bottom <= qb + 1e-4, \
                (seed, cls)
        if not mask.any():
            assert min(min(right, qr) - max(left, ql), min(bottom, qb) - max(top, qt)) <= 2.5, (seed, cls)
            continue
        vl, vt, vr, vb = _rect(mask)
        # what shows of the object lies in its box (one pixel of truncation allowed) ...
        assert left - 1.01 <= vl and vr <= right + 1.01 and top - 1.01 <= vt and vb <= bottom + 1.01, (seed, cls)
        # ... and the box, inside its quadrant, is what shows of it (the edges blend over about a pixel)
        assert max(left, ql) >= vl - 2.01 and min(right, qr) <= vr + 2.01, (seed, cls)
        assert max(top, qt) >= vt - 2.01 and min(bottom, qb) <= vb + 2.01, (seed, cls)


_last_cut = [None]


@pytest.fixture(autouse=True)
def _record_cut(monkeypatch):
    """Remember the cut point of each mosaic (mosaic_sample draws it first)."""
    import deltaprop.data.augment as augment
    real = augment.mosaic_cut

    def recording(rng, w, h):
        _last_cut[0] = real(rng, w, h)
        return _last_cut[0]
    monkeypatch.setattr(augment, "mosaic_cut", recording)


def test_the_quadrants_show_their_pictures():
    """Without jitter and colours each quadrant holds pixels of its own picture only (its background is a grey of
    its own)."""
    rng = np.random.default_rng(3)
    aug = Augment(jitter=0.0, hue=0.0, saturation=1.0, exposure=1.0, flip=False, mosaic=True)
    greys = [0.1, 0.3, 0.6, 0.9]
    pictures = [(np.full((3, 50 + 10 * q, 60), greys[q], np.float32), np.zeros((0, 5), np.float32))
                for q in range(4)]
    x, boxes = mosaic_sample(pictures, W, H, aug, rng)
    assert boxes.shape == (0, 5)
    for q in range(4):
        l, t, r, b = quadrant_bounds(q, W, H, *_last_cut[0])
        np.testing.assert_allclose(x[:, t:b, l:r], greys[q], atol=1e-6)


def test_the_cut_lies_in_the_middle_sixty_percent_and_reaches_both_ends():
    rng = np.random.default_rng(0)
    cuts = np.array([mosaic_cut(rng, 100, 50) for _ in range(3000)])
    assert cuts[:, 0].min() == 20 and cuts[:, 0].max() == 80
    assert cuts[:, 1].min() == 10 and cuts[:, 1].max() == 40


# --- blend_truth_mosaic's rules, by hand -------------------------------------------------------------------

def _row(cls, left, top, right, bottom):
    """A label row from pixel corners on the 100×100 canvas of a quadrant's picture."""
    return [cls, (left + right) / 200, (top + bottom) / 200, (right - left) / 100, (bottom - top) / 100]


def test_cut_rules_of_the_top_left_quadrant():
    """Canvas 100×100, cut at (40, 60): quadrant 0 shows its picture's canvas from (60, 40) (no shifts)."""
    rows = np.array([_row(0, 70, 60, 90, 80),       # fully inside the quadrant: moved by (-60, -40)
                     _row(1, 20, 20, 40, 40),       # left of the window: nothing shows, dropped
                     _row(2, 50.5, 50, 70.5, 70),   # across the canvas's left edge (-9.5): cut at the
                     #                                truncated pixel -9, half a pixel beyond the edge
                     _row(3, 65.5, 50, 75.5, 70),   # corners truncated to pixels: the float box is kept as is
                     _row(4, 60.2, 45, 61.2, 55),   # one pixel wide: not more than one pixel, dropped
                     ], np.float32)
    out = mosaic_boxes(rows, 0, Shifts(0, 0, 0, 0), 100, 100, 40, 60)
    np.testing.assert_array_equal(out[:, 0], [0, 2, 3])
    np.testing.assert_allclose(out[0, 1:], [0.2, 0.3, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(out[1, 1:], [0.05, 0.2, 0.11, 0.2], atol=1e-6)       # [-0.5, 10.5]
    np.testing.assert_allclose(out[2, 1:], [0.105, 0.2, 0.1, 0.2], atol=1e-6)
    bound = mosaic_boxes(rows, 0, Shifts(0, 0, 0, 0), 100, 100, 40, 60, bound=True)
    np.testing.assert_array_equal(bound[:, 0], [0, 2, 3])
    np.testing.assert_allclose(bound[1, 1:], [0.05, 0.2, 0.10, 0.2], atol=1e-6)     # [0, 10]
    np.testing.assert_allclose(bound[2, 1:], [0.10, 0.2, 0.1, 0.2], atol=1e-6)      # rebuilt from whole pixels


def test_a_box_over_the_cut_is_kept_whole_unless_mosaic_bound():
    """Quadrant 0 with a right shift of 10 (padding skipped): the window ends at picture x = 90; a box to 99
    reaches 9 pixels over the cut (x = 40) on the canvas, and is cut at the cut with mosaic_bound."""
    rows = np.array([_row(0, 85, 50, 99, 70)], np.float32)
    shifts = Shifts(0, 0, 10, 0)
    out = mosaic_boxes(rows, 0, shifts, 100, 100, 40, 60)
    np.testing.assert_allclose(out[0, 1:], [(35 + 49) / 200, 0.2, 0.14, 0.2], atol=1e-6)
    out = mosaic_boxes(rows, 0, shifts, 100, 100, 40, 60, bound=True)
    np.testing.assert_allclose(out[0, 1:], [(35 + 40) / 200, 0.2, 0.05, 0.2], atol=1e-6)


@pytest.mark.parametrize("quadrant,origin", [(0, (60 - 5, 40 - 7)), (1, (3 - 40, 40 - 7)), (2, (60 - 5, 2 - 60)),
                                              (3, (3 - 40, 2 - 60))])
def test_each_quadrant_shows_the_window_next_to_the_cut(quadrant, origin):
    shifts = Shifts(left=3, top=2, right=5, bottom=7)
    assert shifts.origin(quadrant, 100, 100, 40, 60) == origin
    l, t, r, b = quadrant_bounds(quadrant, 100, 100, 40, 60)
    ox, oy = origin
    cx, cy = (l + r) / 2 + ox, (t + b) / 2 + oy                      # the quadrant's centre in its picture
    out = mosaic_boxes(np.array([[7, cx / 100, cy / 100, 0.04, 0.04]], np.float32), quadrant, shifts, 100, 100,
                       40, 60)
    np.testing.assert_allclose(out[0], [7, (l + r) / 200, (t + b) / 200, 0.04, 0.04], atol=1e-6)


def test_shifts_are_the_padding_in_canvas_pixels_capped_by_the_quadrant():
    """A 200-pixel-wide picture padded 20 pixels on the left (pleft = -20) on a 100-wide canvas: 10 pixels;
    mirrored, the padding is on the right; never more than the quadrant."""
    crop = Crop(left=-20, top=-40, right=5, bottom=0, width=215, height=140, flip=False)
    assert Shifts.of(crop, 200, 100, 100, 100, 40, 60) == Shifts(left=10, top=40, right=0, bottom=0)
    flipped = Crop(-20, -40, 5, 0, 215, 140, True)
    assert Shifts.of(flipped, 200, 100, 100, 100, 40, 60) == Shifts(left=0, top=40, right=10, bottom=0)
    assert Shifts.of(crop, 200, 100, 100, 100, 5, 30) == Shifts(left=5, top=30, right=0, bottom=0)


def test_crop_pixels_and_boxes_agree():
    """The crop's window, padding and mirror move pixels and boxes alike: a one-pixel-wide white column."""
    im = np.zeros((3, 40, 80), np.float32)
    im[:, :, 30] = 1.0
    rows = np.array([[0, 30.5 / 80, 0.5, 1 / 80, 1.0]], np.float32)
    for crop in (Crop(-16, 0, 16, 0, 112, 40, False), Crop(10, 5, 6, 3, 64, 32, True)):
        x = crop_image(im, crop, 112 if crop.width == 112 else 64, 32 if crop.height == 32 else 40)
        b = crop_boxes(rows, crop, 80, 40, x.shape[2], x.shape[1])
        col = int(np.argmax(x[0].mean(axis=0)))
        assert abs((b[0, 1] * x.shape[2] - 0.5) - col) <= 0.5
    np.testing.assert_allclose(crop_image(im, Crop(-16, 0, 16, 0, 112, 40, False), 112, 40)[:, :, :16],
                               im.mean(), atol=1e-6)     # the padding is the picture's mean colour


class _Draws:
    """A stand-in generator returning the given values of ``random()`` in turn."""

    def __init__(self, values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


@pytest.mark.parametrize("quadrant", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_the_corner_move_puts_the_jitter_at_the_cut(quadrant, flip):
    """AlexeyAB's "move each 2nd image to the corner": the four sides' jitter (here left 8, right -2, top 6,
    bottom -5 pixels) goes to the sides that face the cut once the picture is (maybe) mirrored."""
    draws = [0.9, 0.4, 0.8, 0.25]                      # rand_precalc_random(-10, 10, r) = 20 r - 10
    crop = draw_crop(_Draws(draws + [0.2 if flip else 0.7, 0.1]), 100, 100, 0.1, True, quadrant)
    assert crop.flip == flip
    facing_right = (quadrant in (0, 2)) != flip       # the picture's right side faces the cut
    assert (crop.left, crop.right) == ((0, 6) if facing_right else (6, 0))
    assert (crop.top, crop.bottom) == ((0, 1) if quadrant in (0, 1) else (1, 0))
    assert (crop.width, crop.height) == (94, 99)
    kept = draw_crop(_Draws(draws + [0.7, 0.9]), 100, 100, 0.1, True, quadrant)
    assert (kept.left, kept.right, kept.top, kept.bottom, kept.width, kept.height) == (8, -2, 6, -5, 94, 99)


def test_mosaic_needs_four_pictures():
    with pytest.raises(ValueRangeError, match="four pictures"):
        mosaic_sample([(np.zeros((3, 4, 4), np.float32), np.zeros((0, 5)))] * 3, 8, 8, Augment(mosaic=True),
                      np.random.default_rng(0))


def test_augment_reads_mosaic_from_the_cfg():
    aug = Augment.from_cfg({"mosaic": "1", "mosaic_bound": "1"})
    assert aug.mosaic and aug.mosaic_bound
    assert not Augment.from_cfg({}).mosaic and not Augment.from_cfg({}).mosaic_bound
