"""``deltaprop predict MODEL.npz IMAGE...``: the top classes of digit pictures or IDX rows."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ._options import int_range, positive_int

LOW_CONFIDENCE = 0.5   # a top class below this probability is flagged
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict", help="top-3 classes with probabilities for digit pictures (PNG/JPEG) or IDX rows",
        description="Classify each IMAGE with the model in MODEL.npz. Pictures (PNG, JPEG, ...) are made MNIST-like: "
                    "grayscale, dark-on-light inverted, the digit scaled into 20x20 and centred in 28x28. Other "
                    "files are read as IDX (e.g. t10k-images-idx3-ubyte.gz); --index picks their rows.")
    p.add_argument("model", metavar="MODEL.npz", help="model or checkpoint file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="picture files or IDX files")
    p.add_argument("--index", metavar="ROW", type=int_range(), nargs="+", default=[0],
                   help="rows of IDX files to classify (default 0)")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show, ≥ 1 (default 3)")
    p.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                   help="invert pictures: auto (when the border is light), yes, no (default auto)")
    return p


def _inputs(paths: List[str], rows: List[int], invert) -> Tuple[List[str], np.ndarray]:
    from ..data import read_idx
    from ..data.images import load_digit
    from ..errors import DataError
    names, arrays = [], []
    for path in paths:
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            arrays.append(load_digit(path, invert=invert))
            names.append(path)
            continue
        a = read_idx(path)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise DataError(f"{path}: IDX array of shape {a.shape} is not an image stack (N, H, W)")
        for r in rows:
            if not -len(a) <= r < len(a):
                raise DataError(f"{path}: row {r} out of range (the file has {len(a)} rows)")
            arrays.append(a[r])
            names.append(f"{path}[{r}]")
    return names, np.stack(arrays).astype(np.uint8, copy=False)


def run(args) -> int:
    from ..data import preprocess
    from ._classify import check_input, class_probabilities, load_classifier
    ck, model, spec = load_classifier(args.model)
    invert = {"auto": "auto", "yes": True, "no": False}[args.invert]
    names, images = _inputs(args.images, args.index, invert)
    X = preprocess(images, spec, dtype=model.dtype)
    check_input(model, X, args.model)
    prob = class_probabilities(model, X)
    k = min(args.top, prob.shape[1])
    for name, img, p in zip(names, images, prob):
        top = np.argsort(-p, kind="stable")[:k]
        line = f"{name}: " + ", ".join(f"{c} ({100 * p[c]:.1f}%)" for c in top)
        if int(img.max()) == int(img.min()):
            line += "  [blank picture: no digit in it; the answer means nothing]"
        elif p[top[0]] < LOW_CONFIDENCE:
            line += "  [low confidence: the top class has less than half the probability; this may not be a digit]"
        print(line)
    return 0
