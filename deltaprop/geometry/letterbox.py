"""Darknet's image resizing and letterboxing on (C, H, W) float32 arrays: ``resize_image`` (its own bilinear
resize, in float32 as the C code) and ``letterbox_image`` (fit the network's canvas, keep the aspect ratio,
centre on a 0.5-grey background)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .boxes import letterbox_size


def resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``resize_image``: linear interpolation along x, then along y, in float32, with its
    edge rules (the last column/row copies the last source pixel). ``im`` (C, H, W)."""
    c, ih, iw = im.shape
    f = np.float32
    im = im.astype(f, copy=False)
    if w == 1 or iw == 1:
        part = np.repeat(im[:, :, iw - 1:iw], w, axis=2)   # the last source column, as Darknet
    else:
        w_scale = f(iw - 1) / f(w - 1)
        sx = np.arange(w, dtype=f) * w_scale
        ix = sx.astype(np.int64)
        dx = sx - ix.astype(f)
        last = np.arange(w) == w - 1
        ix = np.where(last, iw - 1, np.minimum(ix, iw - 2))
        dx = np.where(last, f(0), dx)
        part = (f(1) - dx) * im[:, :, ix] + dx * im[:, :, np.minimum(ix + 1, iw - 1)]
    if h == 1:
        h_scale = f(0)
    else:
        h_scale = f(ih - 1) / f(h - 1)
    sy = np.arange(h, dtype=f) * h_scale
    iy = np.minimum(sy.astype(np.int64), ih - 1)
    dy = sy - iy.astype(f)
    out = (f(1) - dy)[None, :, None] * part[:, iy, :]
    add = (np.arange(h) != h - 1) & (ih != 1)
    if add.any():
        nxt = np.minimum(iy + 1, ih - 1)
        out += np.where(add, dy, f(0))[None, :, None] * part[:, nxt, :]
    return out.astype(f, copy=False)


def letterbox_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's ``letterbox_image``: (C, H, W) → (C, h, w), aspect kept, centred on 0.5 grey."""
    c, ih, iw = im.shape
    new_w, new_h = letterbox_size(iw, ih, w, h)
    resized = resize_image(im, new_w, new_h)
    boxed = np.full((c, h, w), 0.5, dtype=np.float32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    boxed[:, dy:dy + new_h, dx:dx + new_w] = resized
    return boxed


def letterbox(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``letterbox_image`` for any (C, H, W) array (converted to float32); a ShapeError for another rank."""
    img = np.asarray(img)
    if img.ndim != 3:
        raise ShapeError(f"letterbox: expected an image (C, H, W), got shape {img.shape}")
    return letterbox_image(img.astype(np.float32, copy=False), int(w), int(h))
