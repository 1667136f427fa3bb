"""The input and truth arrays of a Darknet reference step, made from a photo and its label file the way Darknet's
detector sees them without augmentation: the photo letterboxed to the network's size (Darknet's
``letterbox_image``, reproduced bit for bit by ``deltaprop.geometry.letterbox``), the boxes moved onto the
letterboxed canvas, written as Darknet's truth array (``[x, y, w, h, class]`` × max_boxes per image).

    python3 tools/darknet_harness/make_inputs.py --size 416 416 --batch 1 --max-boxes 90 OUTDIR PHOTO.jpg [...]

writes OUTDIR/input.f32 (batch × 3 × H × W) and OUTDIR/truth.f32 (AlexeyAB's fork: ``--max-boxes 200
--truth-size 6``); each photo's label file is found as Darknet
finds it (images/ → labels/, .jpg → .txt).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deltaprop.data.detection import letterbox_rows
from deltaprop.data.images import load_image
from deltaprop.data.labels import label_path, read_labels
from deltaprop.geometry.letterbox import letterbox_image


def inputs_and_truths(photos, w: int, h: int, max_boxes: int = 90, truth_size: int = 5,
                      classes: int = 80) -> tuple:
    """(input (N, 3, h, w) float32, truth (N, max_boxes, truth_size) float32) of the photos, as written to
    ``input.f32`` and ``truth.f32``: each photo letterboxed, its label file's boxes moved onto the canvas."""
    inputs, truths = [], []
    for photo in photos:
        im = load_image(photo, 3)
        _, ih, iw = im.shape
        inputs.append(letterbox_image(im, w, h))
        rows = read_labels(label_path(photo), classes)
        rows = letterbox_rows(rows, iw, ih, w, h) if len(rows) else rows
        truth = np.zeros((max_boxes, truth_size), np.float32)
        for k, (cls, x, y, bw, bh) in enumerate(rows[:max_boxes]):
            truth[k, :5] = (x, y, bw, bh, cls)
        truths.append(truth)
    return np.stack(inputs).astype(np.float32), np.stack(truths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("photos", nargs="+", type=Path)
    ap.add_argument("--size", nargs=2, type=int, default=(416, 416), metavar=("W", "H"))
    ap.add_argument("--max-boxes", type=int, default=90)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--truth-size", type=int, default=5, choices=(5, 6),
                    help="floats per box: 5 (pjreddie: x y w h class), 6 (AlexeyAB: ... class track_id)")
    a = ap.parse_args()
    w, h = a.size
    x, truth = inputs_and_truths(a.photos, w, h, a.max_boxes, a.truth_size, a.classes)
    a.out.mkdir(parents=True, exist_ok=True)
    x.astype("<f4").tofile(a.out / "input.f32")
    truth.astype("<f4").tofile(a.out / "truth.f32")
    print(f"{len(x)} image(s) {w}x{h} -> {a.out}/input.f32, truth.f32")


if __name__ == "__main__":
    main()
