"""Digit scenes: a detection data set anyone can make from MNIST (``deltaprop data digits``).

Each scene is a ``size × size`` RGB canvas — a grey or coloured background with a gentle linear gradient
and Gaussian pixel noise — holding 1 to 6 MNIST digits, each scaled so its ink's longer side is
``digit_min..digit_max`` pixels, drawn in an ink colour that contrasts with the background, placed without
overlapping the others. The box of a digit is tight around its ink (not the 28×28 MNIST frame).
Train scenes use MNIST's train digits, test scenes its test digits.

Written in Darknet's layout::

    DIR/images/{train,test}_NNNNNN.jpg   DIR/labels/{train,test}_NNNNNN.txt   (class x y w h, normalised)
    DIR/train.txt  DIR/test.txt   (image paths relative to DIR)
    DIR/digits.names   DIR/digits.data   (classes, train, valid, names, backup)   DIR/backup/

Every scene is a function of (seed, split, index) alone, so the set is the same whatever the thread timing.
The whole folder is built beside ``DIR`` and renamed into place when complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..atomic import _umask
from ..errors import DataError, ValueRangeError

PathLike = Union[str, "os.PathLike[str]"]
INK_THRESHOLD = 32          # an MNIST pixel above this (of 255) is ink, for the tight box
MIN_CONTRAST = 0.4          # |luminance(ink) - luminance(background)| at least this
LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class DigitScenes:
    """The options of a digit-scene set (the command's flags)."""
    train: int = 4000
    test: int = 500
    size: int = 128
    digit_min: int = 14
    digit_max: int = 60
    min_digits: int = 1
    max_digits: int = 6
    noise: float = 0.06          # largest standard deviation of the pixel noise (fraction of full scale)
    seed: int = 0
    format: str = "jpg"          # "jpg" (quality 95, ~8 KB a scene) or "png" (exact, ~40 KB: noise compresses badly)

    def __post_init__(self) -> None:
        if self.train < 1 or self.test < 1:
            raise ValueRangeError(f"--train and --test must be at least 1, got {self.train} and {self.test}")
        if self.size < 16:
            raise ValueRangeError(f"--size must be at least 16 pixels, got {self.size}")
        if not 4 <= self.digit_min <= self.digit_max:
            raise ValueRangeError(f"digit sizes must satisfy 4 <= min <= max, got {self.digit_min}..{self.digit_max}")
        if self.digit_max > self.size:
            raise ValueRangeError(f"the largest digit ({self.digit_max} px) does not fit a {self.size} px scene")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueRangeError(f"digits per scene must satisfy 1 <= min <= max, got "
                                  f"{self.min_digits}..{self.max_digits}")
        if self.format not in ("jpg", "png"):
            raise ValueRangeError(f"--format must be jpg or png, got {self.format!r}")
        if not 0 <= self.noise <= 0.5:
            raise ValueRangeError(f"--noise must be in [0, 0.5], got {self.noise}")


def ink_crop(digit: np.ndarray) -> np.ndarray:
    """The part of a 28×28 MNIST digit inside the bounding box of its ink (pixels above INK_THRESHOLD)."""
    ys, xs = np.nonzero(digit > INK_THRESHOLD)
    if ys.size == 0:
        return digit
    return digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _luma(rgb: np.ndarray) -> float:
    return float(LUMA @ rgb)


def _colours(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A background (grey half of the time, else a colour) and an ink colour contrasting with it."""
    if rng.random() < 0.5:
        bg = np.full(3, rng.uniform(0.0, 1.0))
    else:
        bg = rng.uniform(0.0, 1.0, 3)
    for _ in range(100):
        ink = rng.uniform(0.0, 1.0, 3)
        if abs(_luma(ink) - _luma(bg)) >= MIN_CONTRAST:
            return bg, ink
    ink = np.zeros(3) if _luma(bg) > 0.5 else np.ones(3)
    return bg, ink


def _resize(crop: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(crop).resize((out_w, out_h), Image.BILINEAR), dtype=np.float64) / 255.0


def render_scene(digits: np.ndarray, labels: np.ndarray, opts: DigitScenes, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """One scene drawn from ``digits`` (N, 28, 28) uint8 / ``labels`` (N,): (size, size, 3) uint8 and
    its rows ``[class, x, y, w, h]`` (float64, normalised)."""
    s = opts.size
    bg, ink = _colours(rng)
    ramp = np.linspace(-0.5, 0.5, s, dtype=np.float32)
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    shade = np.float32(gy) * ramp[:, None] + np.float32(gx) * ramp[None, :]
    canvas = np.clip(bg.astype(np.float32)[None, None, :] + shade[:, :, None], 0, 1)
    count = int(rng.integers(opts.min_digits, opts.max_digits + 1))
    boxes: List[Tuple[int, int, int, int]] = []   # left, top, right, bottom (exclusive) in pixels
    rows = []
    for _ in range(count):
        k = int(rng.integers(len(digits)))
        crop = ink_crop(digits[k])
        side = int(rng.integers(opts.digit_min, opts.digit_max + 1))
        ch, cw = crop.shape
        scale = side / max(ch, cw)
        h, w = max(1, int(round(ch * scale))), max(1, int(round(cw * scale)))
        alpha = _resize(crop, w, h)
        for _attempt in range(30):
            x0, y0 = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
            if all(x0 >= r + 1 or x0 + w + 1 <= l or y0 >= b + 1 or y0 + h + 1 <= t for l, t, r, b in boxes):
                break
        else:
            continue
        ys, xs = np.nonzero(alpha > INK_THRESHOLD / 255.0)
        if ys.size == 0:
            continue
        region = canvas[y0:y0 + h, x0:x0 + w]
        a = alpha[:, :, None].astype(np.float32)
        canvas[y0:y0 + h, x0:x0 + w] = region + (ink.astype(np.float32)[None, None, :] - region) * a
        l, t, r, b = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
        boxes.append((x0, y0, x0 + w, y0 + h))
        rows.append([int(labels[k]), (l + r) / 2 / s, (t + b) / 2 / s, (r - l) / s, (b - t) / s])
    sigma = rng.uniform(0.0, opts.noise)
    canvas += np.float32(sigma) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0 if split == "train" else 1, int(index)]))


def label_text(rows: np.ndarray) -> str:
    return "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)


def _write_split(root: Path, split: str, n: int, digits: np.ndarray, labels: np.ndarray, opts: DigitScenes,
                 workers: int) -> List[str]:
    from PIL import Image

    def one(i: int) -> str:
        image, rows = render_scene(digits, labels, opts, _scene_rng(opts.seed, split, i))
        name = f"{split}_{i:06d}"
        path = root / "images" / f"{name}.{opts.format}"
        if opts.format == "png":
            Image.fromarray(image, "RGB").save(path, compress_level=1)
        else:
            Image.fromarray(image, "RGB").save(path, quality=95)
        (root / "labels" / f"{name}.txt").write_text(label_text(rows), encoding="utf-8")
        return f"images/{path.name}"
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(n)))
    return [one(i) for i in range(n)]


def write_digit_scenes(out: PathLike, opts: DigitScenes, train: Tuple[np.ndarray, np.ndarray],
                       test: Tuple[np.ndarray, np.ndarray], force: bool = False, workers: int = 2) -> Path:
    """Write the scene set into ``out`` (see the module docstring) from MNIST-like (images, labels) pairs
    for the train and test splits. ``out`` must not exist or be empty unless ``force`` (then it is
    replaced, after the new set is complete). Returns the path of ``digits.data``."""
    out = Path(out)
    for name, (x, y) in (("train", train), ("test", test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 3 or x.dtype != np.uint8 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise DataError(f"{name} digits: expected uint8 images (N, H, W) with N labels, got "
                            f"{x.shape} {x.dtype} and {y.shape}")
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{name} digits: labels must be 0..9, got {int(y.min())}..{int(y.max())}")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder exists and is not empty (choose another --out, or --force to replace it)")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise DataError(f"{out}: cannot create the data set there ({e.strerror or e})") from None
    try:
        for sub in ("images", "labels", "backup"):
            (tmp / sub).mkdir()
        lists: Dict[str, List[str]] = {}
        for split, n, (x, y) in (("train", opts.train, train), ("test", opts.test, test)):
            lists[split] = _write_split(tmp, split, n, np.asarray(x), np.asarray(y), opts, workers)
            (tmp / f"{split}.txt").write_text("".join(p + "\n" for p in lists[split]), encoding="utf-8")
        (tmp / "digits.names").write_text("".join(f"{d}\n" for d in range(10)), encoding="utf-8")
        (tmp / "digits.data").write_text(
            "classes = 10\ntrain = train.txt\nvalid = test.txt\nnames = digits.names\nbackup = backup/\n"
            f"# deltaprop data digits --train {opts.train} --test {opts.test} --size {opts.size} "
            f"--digit-size {opts.digit_min} {opts.digit_max} --digits {opts.min_digits} {opts.max_digits} "
            f"--noise {opts.noise} --format {opts.format} --seed {opts.seed}\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())     # mkdtemp's 0700 -> what mkdir would give (honours the umask)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "set")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "digits.data"


def make_digit_scenes(out: PathLike, opts: Optional[DigitScenes] = None, mnist_root: Optional[PathLike] = None,
                      force: bool = False, workers: int = 2) -> Path:
    """``deltaprop data digits``: read MNIST (``deltaprop.data.mnist`` lookup; no download) and write the set."""
    from .mnist import load_mnist
    opts = opts or DigitScenes()
    train = load_mnist(mnist_root, "train", download=False)
    test = load_mnist(mnist_root, "test", download=False)
    return write_digit_scenes(out, opts, train, test, force=force, workers=workers)


__all__ = ["DigitScenes", "render_scene", "write_digit_scenes", "make_digit_scenes", "ink_crop", "label_text"]
