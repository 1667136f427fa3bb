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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import ValueRangeError

MIN_BOX = 0.001   # fill_truth_detection drops boxes with w or h below this


@dataclass(frozen=True)
class Augment:
    """Darknet's [net] augmentation keys: ``jitter``, ``hue``, ``saturation``, ``exposure``, and a
    horizontal ``flip`` (on in Darknet's detector; ``flip=0`` in AlexeyAB's cfgs turns it off)."""
    jitter: float = 0.3
    hue: float = 0.1
    saturation: float = 1.5
    exposure: float = 1.5
    flip: bool = True

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
        """From a Darknet cfg: ``hue``, ``saturation``, ``exposure`` (and ``flip``) of the [net] section;
        ``jitter`` of the last [yolo] layer's options ``yolo`` where given, as Darknet's ``train_detector``
        reads it (``l.jitter``, default .2), else of [net]. Missing keys take Darknet's defaults."""
        def num(key: str, default: float, section: Dict[str, Any]) -> float:
            return float(section.get(key, default))
        jitter = num("jitter", 0.2, yolo) if yolo is not None and "jitter" in yolo else num("jitter", 0.2, net)
        return cls(jitter=jitter, hue=num("hue", 0.0, net), saturation=max(1.0, num("saturation", 1.0, net)),
                   exposure=max(1.0, num("exposure", 1.0, net)), flip=bool(int(num("flip", 1, net))))

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


__all__ = ["Augment", "augment_sample", "correct_boxes", "place_image", "distort_image", "rgb_to_hsv",
           "hsv_to_rgb", "rand_uniform", "rand_scale", "MIN_BOX"]
