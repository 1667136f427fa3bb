"""Draw labelled boxes on an image and save it as PNG (Pillow, imported lazily), with Darknet's
per-class colours (``image.c``: ``get_color`` with offset ``class·123457 % classes``)."""
from __future__ import annotations

import io
import math
import os
from typing import Sequence, Tuple

import numpy as np

from ..atomic import atomic_write_bytes
from .boxes import Box
from .image import _pil

_COLORS = ((1, 0, 1), (0, 0, 1), (0, 1, 1), (0, 1, 0), (1, 1, 0), (1, 0, 0))


def _get_color(c: int, x: int, maximum: int) -> float:
    ratio = (x / maximum) * 5 if maximum else 0.0
    i, j = int(math.floor(ratio)), int(math.ceil(ratio))
    ratio -= i
    return (1 - ratio) * _COLORS[i][c] + ratio * _COLORS[j][c]


def class_color(cls: int, classes: int) -> Tuple[int, int, int]:
    """Darknet's colour of a class as 0..255 RGB."""
    classes = max(int(classes), 1)
    offset = cls * 123457 % classes
    return tuple(int(round(255 * _get_color(ch, offset, classes))) for ch in (2, 1, 0))  # type: ignore[return-value]


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], classes: int = 80):
    """A PIL image of ``image`` (float (3, H, W) in [0, 1]) with each box drawn and labelled."""
    Image = _pil()
    from PIL import ImageDraw
    arr = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    pil = Image.fromarray((arr.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(pil)
    width = max(1, int(pil.height * 0.006))
    for b in boxes:
        col = class_color(b.cls, classes)
        draw.rectangle([b.left, b.top, b.right, b.bottom], outline=col, width=width)
        label = f"{b.name} {b.prob * 100:.0f}%"
        tl = draw.textbbox((0, 0), label)
        tw, th = tl[2] - tl[0], tl[3] - tl[1]
        y0 = max(b.top - th - 4, 0)
        draw.rectangle([b.left, y0, b.left + tw + 4, y0 + th + 4], fill=col)
        draw.text((b.left + 2, y0 + 1), label, fill=(0, 0, 0))
    return pil


def save_png(pil_image, path: "os.PathLike[str] | str") -> None:
    """Save a PIL image as PNG atomically."""
    buf = io.BytesIO()
    pil_image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
