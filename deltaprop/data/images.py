"""Reading pictures with Pillow (extra ``images``): photos for detection as float32 (C, H, W) in [0, 1]
(``load_image``), digit pictures as MNIST-like 28×28 uint8 arrays (``read_image``, ``load_digit``)."""
from __future__ import annotations

import os
from typing import Union

import numpy as np

from ..errors import DataError


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading and drawing images needs Pillow: pip install 'deltaprop[images]' "
                          "(or pip install Pillow)") from None
    return Image


def load_image(path: "os.PathLike[str] | str", channels: int = 3) -> np.ndarray:
    """An image file as float32 (channels, H, W) in [0, 1] (RGB for 3 channels, grey for 1)."""
    Image = _pil()
    path = os.fspath(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            arr = np.asarray(im, dtype=np.float32) / np.float32(255)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read image: {e}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()



def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """A picture as uint8 grayscale (H, W)."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)  # transparent -> white paper
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: not a readable image ({e})") from None


def to_mnist(gray: np.ndarray, invert: Union[bool, str] = "auto") -> np.ndarray:
    """Make a grayscale digit look like MNIST: white ink on black, the digit's bounding box scaled to fit
    20×20 and centred by its centre of mass in 28×28. ``invert="auto"`` inverts when the border is light
    (dark ink on white paper). A 28×28 input that is already dark-background is returned as is."""
    Image = _pil()
    g = np.asarray(gray, dtype=np.uint8)
    if g.ndim != 2:
        raise DataError(f"expected a grayscale image (H, W), got shape {g.shape}")
    if invert == "auto":
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        invert = border.mean() > 127
    if invert:
        g = 255 - g
    if g.shape == (28, 28):
        return g.copy()
    ys, xs = np.nonzero(g > 30)
    if ys.size == 0:
        return np.zeros((28, 28), dtype=np.uint8)
    crop = g[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape
    s = 20.0 / max(h, w)
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.LANCZOS), dtype=np.float64)
    out = np.zeros((28, 28), dtype=np.float64)
    tot = small.sum()
    cy = (small.sum(1) @ np.arange(nh)) / tot if tot else nh / 2
    cx = (small.sum(0) @ np.arange(nw)) / tot if tot else nw / 2
    top = int(np.clip(round(14 - cy), 0, 28 - nh))
    left = int(np.clip(round(14 - cx), 0, 28 - nw))
    out[top:top + nh, left:left + nw] = small
    return np.clip(out, 0, 255).astype(np.uint8)


def load_digit(path: Union[str, os.PathLike], invert: Union[bool, str] = "auto") -> np.ndarray:
    """Read a picture of one digit as a 28×28 uint8 MNIST-like array (see ``to_mnist``)."""
    return to_mnist(read_image(path), invert)
