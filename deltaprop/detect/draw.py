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


def draw_boxes(image: np.ndarray, boxes: Sequence[Box], classes: int = 80, scale: int = 1):
    """A PIL image of ``image`` (float (3, H, W) in [0, 1]) with each box drawn and labelled with its class
    name and score; ``scale`` > 1 enlarges the picture (nearest pixel) first, so that the labels of small
    images stay readable."""
    Image = _pil()
    from PIL import ImageDraw
    arr = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    pil = Image.fromarray((arr.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), "RGB")
    scale = max(1, int(scale))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(pil)
    width = max(1, int(pil.height * 0.006))
    for b in boxes:
        col = class_color(b.cls, classes)
        left, top, right, bottom = (v * scale for v in (b.left, b.top, b.right, b.bottom))
        draw.rectangle([left, top, right, bottom], outline=col, width=width)
        label = f"{b.name} {b.prob * 100:.0f}%"
        tl = draw.textbbox((0, 0), label)
        tw, th = tl[2] - tl[0], tl[3] - tl[1]
        y0 = max(top - th - 4, 0)
        draw.rectangle([left, y0, left + tw + 4, y0 + th + 4], fill=col)
        draw.text((left + 2, y0 + 1), label, fill=(0, 0, 0))
    return pil


def save_png(pil_image, path: "os.PathLike[str] | str") -> None:
    """Save a PIL image as PNG atomically."""
    buf = io.BytesIO()
    pil_image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def mosaic(pictures: Sequence, columns: int = 3, gap: int = 4):
    """One PIL image of several (e.g. drawn test scenes) in a grid, ``gap`` white pixels apart."""
    Image = _pil()
    if not pictures:
        raise ValueError("mosaic: no pictures")
    columns = max(1, min(int(columns), len(pictures)))
    rows = -(-len(pictures) // columns)
    w = max(p.width for p in pictures)
    h = max(p.height for p in pictures)
    out = Image.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap), (255, 255, 255))
    for k, p in enumerate(pictures):
        r, c = divmod(k, columns)
        out.paste(p, (c * (w + gap), r * (h + gap)))
    return out


def plot_training_curve(history: Sequence[dict], path: "os.PathLike[str] | str", title: str = "",
                        dpi: int = 100):
    """Darknet's ``chart.png`` for a detector: loss and its running average per batch (left axis, log scale
    when it spans more than 20×) and mAP@0.5 (right axis, %) at the batches where it was measured
    (``history`` records with ``batch``, ``loss``, ``avg_loss``, ``map50``, ``map``). Matplotlib is imported
    here only (the ``plot`` extra); written atomically as a PNG."""
    from ..explain import _figure, _save_png
    from ..errors import DataError
    recs = [r for r in history if isinstance(r.get("batch"), (int, float))]
    loss = [(r["batch"], r["loss"]) for r in recs if _finite(r.get("loss"))]
    avg = [(r["batch"], r["avg_loss"]) for r in recs if _finite(r.get("avg_loss"))]
    maps = [(r["batch"], r["map50"], r.get("map")) for r in recs if _finite(r.get("map50"))]
    if not loss and not maps:
        raise DataError("training curve: no records with a batch and a loss or mAP")
    fig = _figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    if loss:
        ax.plot(*zip(*loss), color="0.7", linewidth=0.8, label="loss")
    if avg:
        ax.plot(*zip(*avg), color="tab:blue", linewidth=1.4, label="avg loss")
    ys = [v for _, v in loss + avg]
    if ys and min(ys) > 0 and max(ys) > 20 * min(ys):
        ax.set_yscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if maps:
        ax2 = ax.twinx()
        xs = [m[0] for m in maps]
        ax2.plot(xs, [100 * m[1] for m in maps], color="tab:red", marker="o", markersize=3, label="mAP@0.5")
        if all(_finite(m[2]) for m in maps):
            ax2.plot(xs, [100 * m[2] for m in maps], color="tab:orange", marker="s", markersize=3,
                     linestyle="--", label="mAP@[.5:.95]")
        ax2.set_ylim(0, 100)
        ax2.set_ylabel("mAP (%)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    last = maps[-1] if maps else None
    fig.suptitle(title or (f"training: last mAP@0.5 {100 * last[1]:.1f}% at batch {last[0]}" if last
                           else "training loss"), fontsize=10)
    return _save_png(fig, path, dpi)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
