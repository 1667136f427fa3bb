"""Darknet's detection augmentation (pjreddie/darknet ``load_data_detection``, ``random_distort_image``,
``correct_boxes``, ``fill_truth_detection``), on float32 (3, H, W) images in [0, 1] and (k, 5) label rows
``[class, x, y, w, h]``.

One sample, in Darknet's order of random draws:

1. jitter: the aspect ratio becomes ``(W + U(-jW, jW)) / (H + U(-jH, jH))``; the longer side fills the
   network's canvas (``nw = w`` or ``nh = h``), the image is scaled to ``nw × nh`` and placed at
   ``dx ~ U(0, w - nw)``, ``dy ~ U(0, h - nh)`` on a 0.5-grey canvas (``place_image``: bilinear, pixels
   beyond the source read as 0, as Darknet's ``get_pixel_extend``);
2. ``random_distort_image``: hue shifted by ``U(-hue, hue)`` (wrapping in [0, 1)), saturation and value
   (exposure) scaled by ``rand_scale`` (``U(1, s)``, inverted on a coin toss), in HSV, clipped to [0, 1];
3. a horizontal flip on a coin toss;
4. boxes mapped the same way (``left·nw/w + dx/w`` ...), flipped, clipped to [0, 1], and dropped when
   narrower or lower than 0.001.

Deliberate difference: Darknet truncates ``nw, nh, dx, dy`` to integers for the pixels but corrects the
boxes with the untruncated floats (a sub-pixel mismatch); here both use the integers, so the boxes sit
exactly on the moved pixels. Darknet also shuffles the boxes of each image; here their order is kept.

**Mosaic** (AlexeyAB's ``[net] mosaic=1``: ``load_data_detection`` with ``use_mixup == 3`` and
``blend_truth_mosaic``, ``src/data.c``), on a coin toss per sample (AlexeyAB tosses once per loading thread's
share of a batch): four pictures into one canvas cut at ``(cut_x, cut_y)``, integers drawn in
``[0.2·w, 0.8·w]`` and ``[0.2·h, 0.8·h]``; picture ``q`` fills quadrant ``q`` (0 top-left, 1 top-right,
2 bottom-left, 3 bottom-right). Each picture is first augmented AlexeyAB's way (:func:`mosaic_piece`):

1. crop jitter: ``pleft, pright, ptop, pbot`` ~ ``U(−j·W, j·W)`` (``U(−j·H, j·H)``) truncated to pixels, the
   window ``[pleft, W − pright) × [ptop, H − pbot)`` of the picture (outside it: the picture's mean colour)
   resized to the whole ``w × h`` canvas (aspect not kept); a flip on a coin toss; on another coin toss the
   picture is moved to its quadrant's outer corner (the jitter of the inner sides moved to the outer ones, so
   most of the picture stays visible); the hue/saturation/exposure distortion;
2. the quadrant shows the part of that canvas next to the cut: quadrant 0 the window ending at
   ``(w − right_shift, h − bot_shift)``, where a shift is the padding the jitter added on that side in canvas
   pixels (``−pright·w/W``, at least 0, at most the quadrant) — so the quadrant shows the picture, not its
   padding; quadrant 1 the window starting at ``left_shift`` ..., and so on;
3. the boxes move with the window (``blend_truth_mosaic``): corners truncated to whole canvas pixels; without
   ``mosaic_bound`` a box is cut at the canvas's edges only (it may reach over the cut where the quadrant's
   window ends inside the picture), with ``mosaic_bound=1`` at its quadrant's; a box is kept when it then lies
   inside the canvas, its centre inside (0, 1) and its width and height in (1 pixel, the canvas).

Differences from AlexeyAB: the resize is bilinear sampling at ``x·W'/w`` (the convention of ``place_image``) where
OpenCV samples pixel centres, the distortion is Darknet's float HSV (AlexeyAB's OpenCV HSV rounds to 8 bits);
``[yolo] resize`` does not enlarge the jitter; the mosaic's main picture (the sample) takes a random quadrant
and the other three are drawn at random from the set (AlexeyAB draws all four at random). A sample that is not
a mosaic is augmented as above (pjreddie's ``place_image`` jitter).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import ValueRangeError

MIN_BOX = 0.001   # fill_truth_detection drops boxes with w or h below this
#: AlexeyAB's ``min_offset``: the mosaic's cut lies between 20% and 80% of the canvas.
MOSAIC_MIN_OFFSET = 0.2


@dataclass(frozen=True)
class Augment:
    """Darknet's [net] augmentation keys: ``jitter``, ``hue``, ``saturation``, ``exposure``, and a
    horizontal ``flip`` (on in Darknet's detector; ``flip=0`` in AlexeyAB's cfgs turns it off); AlexeyAB's
    ``mosaic`` (half the samples are four pictures in one) and ``mosaic_bound`` (their boxes cut at their
    quadrant)."""
    jitter: float = 0.3
    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: bool = True
    mosaic: bool = False
    mosaic_bound: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueRangeError(f"Augment: jitter must be in [0, 1), got {self.jitter}")
        if not 0 <= self.hue <= 1:
            raise ValueRangeError(f"Augment: hue must be in [0, 1], got {self.hue}")
        for name in ("saturation", "exposure"):
            if getattr(self, name) < 1:
                raise ValueRangeError(f"Augment: {name} must be at least 1 (1 = off), got {getattr(self, name)}")

    @classmethod
    def from_cfg(cls, net: Dict[str, Any], yolo: Optional[Dict[str, Any]] = None) -> "Augment":
        """From a Darknet cfg: ``hue``, ``saturation``, ``exposure`` (and ``flip``, ``mosaic``,
        ``mosaic_bound``) of the [net] section; ``jitter`` of the last [yolo] layer's options ``yolo`` where
        given, as Darknet's ``train_detector`` reads it (``l.jitter``, default .2), else of [net]. Missing keys
        take Darknet's defaults."""
        def num(key: str, default: float, section: Dict[str, Any]) -> float:
            return float(section.get(key, default))
        jitter = num("jitter", 0.2, yolo) if yolo is not None and "jitter" in yolo else num("jitter", 0.2, net)
        return cls(jitter=jitter, hue=num("hue", 0.0, net), saturation=max(1.0, num("saturation", 1.0, net)),
                   exposure=max(1.0, num("exposure", 1.0, net)), flip=bool(int(num("flip", 1, net))),
                   mosaic=bool(int(num("mosaic", 0, net))), mosaic_bound=bool(int(num("mosaic_bound", 0, net))))

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def rand_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Darknet's ``rand_uniform`` (the bounds may come in either order)."""
    if hi < lo:
        lo, hi = hi, lo
    return lo + (hi - lo) * float(rng.random())


def rand_scale(rng: np.random.Generator, s: float) -> float:
    """Darknet's ``rand_scale``: ``U(1, s)``, or its inverse on a coin toss."""
    scale = rand_uniform(rng, 1.0, s)
    return scale if rng.random() < 0.5 else 1.0 / scale


def rgb_to_hsv(im: np.ndarray) -> np.ndarray:
    """Darknet's ``rgb_to_hsv`` on (3, H, W) float32: hue in [0, 1], saturation ``Δ/max``, value ``max``."""
    r, g, b = im[0], im[1], im[2]
    mx = np.maximum(np.maximum(r, g), b)
    delta = mx - np.minimum(np.minimum(r, g), b)
    inv = np.divide(np.float32(1), delta, out=np.zeros_like(delta), where=delta > 0)
    h = np.where(r == mx, (g - b) * inv, np.where(g == mx, 2 + (b - r) * inv, 4 + (r - g) * inv))
    h[h < 0] += 6
    h *= np.float32(1 / 6)
    s = np.divide(delta, mx, out=np.zeros_like(delta), where=mx > 0)
    return np.stack([h, s, mx]).astype(im.dtype, copy=False)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Darknet's ``hsv_to_rgb`` on (3, H, W) (saturation may exceed 1 after scaling, as in Darknet). Its six
    sectors written as one formula per channel: ``c = v − v·s·clip(min(k, 4 − k), 0, 1)``,
    ``k = (n + 6h) mod 6`` with n = 5, 3, 1 for red, green, blue; at ``h = 1`` Darknet's last sector gives
    blue ``q = v`` (not the ``p`` of ``h = 0``), kept."""
    h6, s, v = 6 * hsv[0], hsv[1], hsv[2]
    vs = v * s
    out = np.empty_like(hsv)
    for ch, n in enumerate((5, 3, 1)):
        k = h6 + np.float32(n)
        k[k >= 6] -= 6
        m = np.minimum(k, 4 - k)
        np.clip(m, 0, 1, out=m)
        out[ch] = v - vs * m
    top = h6 >= 6
    if top.any():
        out[2][top] = v[top]
    return out


def distort_image(im: np.ndarray, hue: float, sat: float, val: float) -> np.ndarray:
    """Darknet's ``distort_image``: scale saturation and value, shift hue (wrapping), back to RGB, clip."""
    if hue == 0 and sat == 1 and val == 1:
        return im
    hsv = rgb_to_hsv(im)
    hsv[1] *= np.float32(sat)
    hsv[2] *= np.float32(val)
    h = hsv[0]
    h += np.float32(hue)
    h[h > 1] -= 1
    h[h < 0] += 1
    out = hsv_to_rgb(hsv)
    return np.clip(out, 0, 1, out=out)


def place_image(im: np.ndarray, nw: int, nh: int, dx: int, dy: int, w: int, h: int) -> np.ndarray:
    """Darknet's ``place_image`` onto a fresh ``(3, h, w)`` canvas of 0.5 grey: canvas pixel
    ``(dx + x, dy + y)`` is the bilinear sample of ``im`` at ``(x·W/nw, y·H/nh)`` for ``x < nw, y < nh``."""
    c, ih, iw = im.shape
    padded = np.zeros((c, ih + 1, iw + 1), dtype=np.float32)   # get_pixel_extend: outside reads 0
    padded[:, :ih, :iw] = im
    rx = np.arange(nw, dtype=np.float32) / np.float32(nw) * np.float32(iw)
    ry = np.arange(nh, dtype=np.float32) / np.float32(nh) * np.float32(ih)
    ix, iy = np.floor(rx).astype(np.int64), np.floor(ry).astype(np.int64)
    fx, fy = rx - ix, ry - iy
    cols = (1 - fx) * padded[:, :, ix] + fx * padded[:, :, ix + 1]                     # (c, ih+1, nw)
    placed = (1 - fy)[None, :, None] * cols[:, iy, :] + fy[None, :, None] * cols[:, iy + 1, :]
    canvas = np.full((c, h, w), 0.5, dtype=np.float32)
    x0, y0 = max(dx, 0), max(dy, 0)
    x1, y1 = min(dx + nw, w), min(dy + nh, h)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = placed[:, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return canvas


def correct_boxes(rows: np.ndarray, dx: float, dy: float, sx: float, sy: float, flip: bool) -> np.ndarray:
    """Darknet's ``correct_boxes`` + the 0.001 filter of ``fill_truth_detection``: rows
    ``[class, x, y, w, h]`` of the source image move to ``left·sx + dx`` ..., flip, clip to [0, 1];
    boxes narrower or lower than 0.001 are dropped. (Here ``dx, dy`` are the offsets as fractions of the
    canvas, i.e. Darknet's ``-dx``.)"""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    left = (rows[:, 1] - rows[:, 3] / 2) * sx + dx
    right = (rows[:, 1] + rows[:, 3] / 2) * sx + dx
    top = (rows[:, 2] - rows[:, 4] / 2) * sy + dy
    bottom = (rows[:, 2] + rows[:, 4] / 2) * sy + dy
    if flip:
        left, right = 1 - right, 1 - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
    out = np.stack([rows[:, 0], (left + right) / 2, (top + bottom) / 2,
                    np.clip(right - left, 0, 1), np.clip(bottom - top, 0, 1)], axis=1)
    keep = (out[:, 3] >= MIN_BOX) & (out[:, 4] >= MIN_BOX)
    return out[keep].astype(np.float32)


def augment_sample(im: np.ndarray, rows: np.ndarray, w: int, h: int, aug: Augment,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One training sample as Darknet's ``load_data_detection`` makes it: ``im`` (3, H, W) float32 in
    [0, 1] and its label rows → the (3, h, w) network input and the corrected rows."""
    _, oh, ow = im.shape
    dw, dh = aug.jitter * ow, aug.jitter * oh
    new_ar = (ow + rand_uniform(rng, -dw, dw)) / (oh + rand_uniform(rng, -dh, dh))
    if new_ar < 1:
        nh = float(h)
        nw = nh * new_ar
    else:
        nw = float(w)
        nh = nw / new_ar
    fdx = rand_uniform(rng, 0, w - nw)
    fdy = rand_uniform(rng, 0, h - nh)
    nw_i, nh_i = max(1, int(nw)), max(1, int(nh))
    dx_i, dy_i = int(fdx), int(fdy)
    sized = place_image(im, nw_i, nh_i, dx_i, dy_i, w, h)
    dhue = rand_uniform(rng, -aug.hue, aug.hue)
    dsat = rand_scale(rng, aug.saturation)
    dexp = rand_scale(rng, aug.exposure)
    sized = distort_image(sized, dhue, dsat, dexp)
    flip = bool(rng.random() < 0.5) if aug.flip else False
    if flip:
        sized = sized[:, :, ::-1]
    boxes = correct_boxes(rows, dx_i / w, dy_i / h, nw_i / w, nh_i / h, flip)
    return np.ascontiguousarray(sized, dtype=np.float32), boxes


# --- AlexeyAB's mosaic ---------------------------------------------------------------------------------------

def rand_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """AlexeyAB's ``rand_int``: an integer in [lo, hi] (the bounds in either order)."""
    lo, hi = int(lo), int(hi)
    if hi < lo:
        lo, hi = hi, lo
    return int(rng.integers(lo, hi + 1))


def mosaic_cut(rng: np.random.Generator, w: int, h: int) -> Tuple[int, int]:
    """The cut point ``(cut_x, cut_y)``: AlexeyAB's ``rand_int(w·0.2, w·0.8)``, ``rand_int(h·0.2, h·0.8)``."""
    lo, hi = MOSAIC_MIN_OFFSET, 1 - MOSAIC_MIN_OFFSET
    return rand_int(rng, int(w * lo), int(w * hi)), rand_int(rng, int(h * lo), int(h * hi))


@dataclass(frozen=True)
class Crop:
    """AlexeyAB's jitter of one picture: the window of ``width × height`` picture pixels from ``(left, top)``
    (beyond the picture where negative: padding) becomes the whole canvas, mirrored when ``flip``. ``right``
    and ``bottom``: the jitter of the other two sides, which decide the quadrant's shifts (:class:`Shifts`)."""
    left: int
    top: int
    right: int
    bottom: int
    width: int
    height: int
    flip: bool


def draw_crop(rng: np.random.Generator, ow: int, oh: int, jitter: float, flip: bool, quadrant: int) -> Crop:
    """One ``W × H`` picture's crop for quadrant ``quadrant`` of a mosaic, as ``load_data_detection`` draws it:
    the four sides ``U(−dw, dw)`` (``dw = int(W·jitter)``, ``dh`` likewise) truncated to pixels, the flip, then on
    a coin toss all the jitter moved to the sides at the cut (the outer sides keep the picture's edges, so most
    of it is seen). A window of no pixels is the whole picture (AlexeyAB's "invalid resize", which keeps the
    right and bottom jitter for the shifts)."""
    dw, dh = int(ow * jitter), int(oh * jitter)
    r = [float(rng.random()) for _ in range(4)]
    left, right = int(r[0] * 2 * dw - dw), int(r[1] * 2 * dw - dw)     # rand_precalc_random(-dw, dw, r)
    top, bottom = int(r[2] * 2 * dh - dh), int(r[3] * 2 * dh - dh)
    flipped = bool(rng.random() < 0.5) if flip else False
    if rng.random() < 0.5:                      # "move each 2nd image to the corner"
        if (quadrant in (0, 2)) != flipped:     # the picture's left edge ends at the mosaic's outer side
            left, right = 0, left + right
        else:
            left, right = left + right, 0
        if quadrant in (0, 1):
            top, bottom = 0, top + bottom
        else:
            top, bottom = top + bottom, 0
    width, height = ow - left - right, oh - top - bottom
    if width <= 0 or height <= 0 or ow - left <= 0 or oh - top <= 0:
        return Crop(0, 0, right, bottom, ow, oh, flipped)
    return Crop(left, top, right, bottom, width, height, flipped)


def _resample(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """``im`` (C, H, W) resized to (C, h, w): canvas pixel ``x`` is the bilinear sample at ``x·W/w`` (edges
    repeated beyond the last pixel)."""
    c, ih, iw = im.shape
    rx = np.arange(w, dtype=np.float32) * np.float32(iw / w)
    ry = np.arange(h, dtype=np.float32) * np.float32(ih / h)
    ix, iy = np.floor(rx).astype(np.int64), np.floor(ry).astype(np.int64)
    fx, fy = rx - ix, ry - iy
    ix1, iy1 = np.minimum(ix + 1, iw - 1), np.minimum(iy + 1, ih - 1)
    cols = (1 - fx) * im[:, :, ix] + fx * im[:, :, ix1]
    return ((1 - fy)[None, :, None] * cols[:, iy, :] + fy[None, :, None] * cols[:, iy1, :]).astype(np.float32)


def crop_image(im: np.ndarray, crop: Crop, w: int, h: int) -> np.ndarray:
    """AlexeyAB's ``image_data_augmentation`` without the colours: the crop's window of ``im`` (C, H, W), the
    part beyond the picture filled with its mean colour, resized to (C, h, w), mirrored when ``crop.flip``."""
    c, oh, ow = im.shape
    window = np.empty((c, crop.height, crop.width), np.float32)
    window[...] = im.reshape(c, -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None]
    x0, y0 = max(crop.left, 0), max(crop.top, 0)
    x1, y1 = min(crop.left + crop.width, ow), min(crop.top + crop.height, oh)
    if x1 > x0 and y1 > y0:
        window[:, y0 - crop.top:y1 - crop.top, x0 - crop.left:x1 - crop.left] = im[:, y0:y1, x0:x1]
    out = _resample(window, w, h)
    return out[:, :, ::-1] if crop.flip else out


def crop_boxes(rows: np.ndarray, crop: Crop, ow: int, oh: int, w: int, h: int) -> np.ndarray:
    """The label rows of a ``W × H`` picture on its cropped ``w × h`` canvas (AlexeyAB's ``correct_boxes`` with
    ``dx = pleft/swidth``, ``sx = W/swidth``, then ``fill_truth_detection``'s filter: boxes under one canvas
    pixel wide or high are dropped)."""
    sw, sh = crop.width, crop.height
    out = correct_boxes(rows, -crop.left / sw, -crop.top / sh, ow / sw, oh / sh, crop.flip)
    return out[(out[:, 3] >= 1.0 / w) & (out[:, 4] >= 1.0 / h)]


@dataclass(frozen=True)
class Shifts:
    """How far quadrant ``q``'s window is moved into its picture's canvas from the cut: the padding the crop
    added on each side, in canvas pixels, each at most the quadrant's size (AlexeyAB's ``left_shift``,
    ``top_shift``, ``right_shift``, ``bot_shift``)."""
    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def of(cls, crop: Crop, ow: int, oh: int, w: int, h: int, cut_x: int, cut_y: int) -> "Shifts":
        left, right = (crop.right, crop.left) if crop.flip else (crop.left, crop.right)   # the padding flipped too
        return cls(left=min(cut_x, max(0, _c_div(-left * w, ow))), top=min(cut_y, max(0, _c_div(-crop.top * h, oh))),
                   right=min(w - cut_x, max(0, _c_div(-right * w, ow))),
                   bottom=min(h - cut_y, max(0, _c_div(-crop.bottom * h, oh))))

    def origin(self, quadrant: int, w: int, h: int, cut_x: int, cut_y: int) -> Tuple[int, int]:
        """The canvas pixel of the picture's canvas that lands on the mosaic's quadrant corner nearest (0, 0):
        the mosaic pixel (x, y) of quadrant ``quadrant`` shows picture pixel (x + ox, y + oy) for the
        returned ``(ox, oy)``."""
        ox = w - cut_x - self.right if quadrant in (0, 2) else self.left - cut_x
        oy = h - cut_y - self.bottom if quadrant in (0, 1) else self.top - cut_y
        return ox, oy


def _c_div(a: int, b: int) -> int:
    """C's integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def quadrant_bounds(quadrant: int, w: int, h: int, cut_x: int, cut_y: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of quadrant ``quadrant`` in mosaic pixels (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right)."""
    left, right = (0, cut_x) if quadrant in (0, 2) else (cut_x, w)
    top, bottom = (0, cut_y) if quadrant in (0, 1) else (cut_y, h)
    return left, top, right, bottom


def mosaic_boxes(rows: np.ndarray, quadrant: int, shifts: Shifts, w: int, h: int, cut_x: int, cut_y: int,
                 bound: bool = False) -> np.ndarray:
    """AlexeyAB's ``blend_truth_mosaic``: quadrant ``quadrant``'s label rows (on its picture's ``w × h``
    canvas) on the mosaic: moved with the window, corners truncated to whole pixels, cut at the canvas
    (``bound``: at the quadrant), kept when inside the canvas with the centre in (0, 1) and the width and height
    in (1 pixel, 1)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    ox, oy = shifts.origin(quadrant, w, h, cut_x, cut_y)
    xb, yb = rows[:, 1] - ox / w, rows[:, 2] - oy / h
    wb, hb = rows[:, 3].copy(), rows[:, 4].copy()
    left, right = np.trunc((xb - wb / 2) * w), np.trunc((xb + wb / 2) * w)
    top, bot = np.trunc((yb - hb / 2) * h), np.trunc((yb + hb / 2) * h)
    if bound:
        lo_x, lo_y, hi_x, hi_y = quadrant_bounds(quadrant, w, h, cut_x, cut_y)
        left, right = np.maximum(left, lo_x), np.minimum(right, hi_x)
        top, bot = np.maximum(top, lo_y), np.minimum(bot, hi_y)
        xb, wb = (right + left) / 2 / w, (right - left) / w
        yb, hb = (bot + top) / 2 / h, (bot - top) / h
    else:
        over = np.minimum(left, 0) / w                     # beyond the left edge: the box shrinks to it
        xb, wb = xb - over / 2, wb + over
        over = np.maximum(right - w, 0) / w
        xb, wb = xb - over / 2, wb - over
        over = np.minimum(top, 0) / h
        yb, hb = yb - over / 2, hb + over
        over = np.maximum(bot - h, 0) / h
        yb, hb = yb - over / 2, hb - over
        left, right = np.trunc((xb - wb / 2) * w), np.trunc((xb + wb / 2) * w)
        top, bot = np.trunc((yb - hb / 2) * h), np.trunc((yb + hb / 2) * h)
    keep = ((left >= 0) & (right <= w) & (top >= 0) & (bot <= h) & (wb > 0) & (wb < 1) & (hb > 0) & (hb < 1)
            & (xb > 0) & (xb < 1) & (yb > 0) & (yb < 1) & (wb > 1.0 / w) & (hb > 1.0 / h))
    out = np.stack([rows[:, 0], xb, yb, wb, hb], axis=1)
    return out[keep].astype(np.float32)


def mosaic_piece(im: np.ndarray, rows: np.ndarray, quadrant: int, w: int, h: int, cut_x: int, cut_y: int,
                 aug: Augment, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, Shifts]:
    """One picture of a mosaic, augmented for quadrant ``quadrant`` (the crop, flip, corner move and colours of
    ``load_data_detection``): its ``(3, h, w)`` canvas, its rows on that canvas, and the quadrant's shifts."""
    _, oh, ow = im.shape
    crop = draw_crop(rng, ow, oh, aug.jitter, aug.flip, quadrant)
    dhue = rand_uniform(rng, -aug.hue, aug.hue)
    dsat = rand_scale(rng, aug.saturation)
    dexp = rand_scale(rng, aug.exposure)
    canvas = distort_image(crop_image(im, crop, w, h), dhue, dsat, dexp)
    return canvas, crop_boxes(rows, crop, ow, oh, w, h), Shifts.of(crop, ow, oh, w, h, cut_x, cut_y)


def mosaic_sample(pictures, w: int, h: int, aug: Augment,
                  rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Four ``(image (3, H, W), rows)`` pictures, in quadrant order, as one mosaic (module docstring): the
    ``(3, h, w)`` network input and its label rows."""
    if len(pictures) != 4:
        raise ValueRangeError(f"a mosaic is four pictures, got {len(pictures)}")
    cut_x, cut_y = mosaic_cut(rng, w, h)
    out = np.zeros((3, h, w), np.float32)
    boxes = []
    for q, (im, rows) in enumerate(pictures):
        canvas, piece_rows, shifts = mosaic_piece(im, rows, q, w, h, cut_x, cut_y, aug, rng)
        x0, y0, x1, y1 = quadrant_bounds(q, w, h, cut_x, cut_y)
        ox, oy = shifts.origin(q, w, h, cut_x, cut_y)
        out[:, y0:y1, x0:x1] = canvas[:, y0 + oy:y1 + oy, x0 + ox:x1 + ox]
        boxes.append(mosaic_boxes(piece_rows, q, shifts, w, h, cut_x, cut_y, aug.mosaic_bound))
    return out, np.concatenate(boxes).astype(np.float32)


__all__ = ["Augment", "augment_sample", "correct_boxes", "place_image", "distort_image", "rgb_to_hsv",
           "hsv_to_rgb", "rand_uniform", "rand_scale", "MIN_BOX", "mosaic_sample", "mosaic_piece", "mosaic_boxes",
           "mosaic_cut", "draw_crop", "crop_image", "crop_boxes", "Crop", "Shifts", "quadrant_bounds",
           "MOSAIC_MIN_OFFSET"]
