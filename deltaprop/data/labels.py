"""Darknet label files: one box a line, ``class x_center y_center width height``, normalised to [0, 1].

Where a label lives (Darknet's rule in ``fill_truth_detection``): the image's path with its ``images`` (or
``JPEGImages``) folder replaced by ``labels`` and its extension by ``.txt``. Darknet replaces the first
*substring* ``images`` anywhere in the path (so ``/data/my_images/set/images/a.jpg`` goes wrong); here the
last path *component* named exactly ``images``/``JPEGImages`` is replaced, and an image outside such a
folder has its label beside it (AlexeyAB's behaviour).

Bad labels never pass silently: every problem is a :class:`LabelProblem` (``file:line: reason``);
:func:`read_labels` raises :class:`~deltaprop.errors.LabelError` on the first one, :func:`check_label_file`
returns the good rows and every problem, for ``deltaprop data check`` and for loaders that skip bad lines.
An image without a label file is a *background image* (no objects), as in Darknet: not a problem, counted
(:func:`check_entry`). Label files are regular files of at most 16 MiB (:mod:`deltaprop.data.files`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, LabelError
from .files import LABEL_BYTES, shorten, text_problem

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
IMAGE_FOLDERS = ("images", "JPEGImages")
#: Boxes narrower or lower than this (a fraction of the image) are dropped by Darknet when it reads them
#: (``fill_truth_detection``); here they are a problem of the line.
MIN_SIZE = 0.001


@dataclass(frozen=True)
class LabelProblem:
    """One bad line (``line`` >= 1) or one bad file (``line`` 0: a missing label file, an orphan label)."""
    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


def label_file(image: str) -> str:
    """:func:`label_path` on strings (no Path objects: a list of a million images is checked with it)."""
    head, tail = os.path.split(image)
    parts = head.split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in IMAGE_FOLDERS:
            parts[i] = "labels"
            break
    return os.path.join(os.sep.join(parts), os.path.splitext(tail)[0] + ".txt")


def label_path(image: PathLike) -> Path:
    """The label file of ``image``: its last ``images``/``JPEGImages`` folder becomes ``labels``, its
    extension ``.txt`` (beside the image when no such folder is on its path)."""
    return Path(label_file(os.fspath(image)))


def image_candidates(label: PathLike) -> List[Path]:
    """The image paths whose label would be ``label`` (the reverse of :func:`label_path`), for finding
    orphan labels: the last ``labels`` folder becomes ``images`` or ``JPEGImages`` (or stays, for images
    kept beside their labels), with every image extension in either case."""
    p = Path(label)
    parts = list(p.parent.parts)
    parents = [p.parent]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "labels":
            parents = [Path(*parts[:i], folder, *parts[i + 1:]) for folder in IMAGE_FOLDERS] + [p.parent]
            break
    exts = [e for ext in IMAGE_EXTENSIONS for e in (ext, ext.upper())]
    return [d / (p.stem + e) for d in parents for e in exts]


def _check_line(fields: Sequence[str], classes: int) -> Tuple[Optional[List[float]], Optional[str]]:
    """One line's row ``[class, x, y, w, h]`` or the reason it is bad (a field is echoed shortened)."""
    if len(fields) != 5:
        return None, f"expected 5 fields 'class x_center y_center width height', got {len(fields)}"
    text = fields[0]
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        return None, f"class id {shorten(text)} is not an integer"
    if len(digits) > 18:                        # no int() of a 5000-digit string (Python refuses past 4300)
        return None, f"class id {shorten(text)} outside 0..{classes - 1} (classes = {classes})"
    cls = int(text)
    vals = []
    for name, text in zip(("x_center", "y_center", "width", "height"), fields[1:]):
        try:
            v = float(text)
        except ValueError:
            return None, f"{name} {shorten(text)} is not a number"
        if not math.isfinite(v):
            return None, f"{name} {shorten(text)} is not a finite number"
        vals.append(v)
    x, y, w, h = vals
    if not 0 <= cls < classes:
        return None, f"class id {cls} outside 0..{classes - 1} (classes = {classes})"
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        return None, f"centre ({x:g}, {y:g}) outside [0, 1]"
    if w <= 0 or h <= 0:
        return None, f"size {w:g} x {h:g} is zero or negative"
    if w > 1 or h > 1:
        return None, f"size {w:g} x {h:g} larger than the image (above 1)"
    if w < MIN_SIZE or h < MIN_SIZE:
        return None, f"size {w:g} x {h:g} below {MIN_SIZE:g} of the image (Darknet drops such boxes)"
    return [float(cls), x, y, w, h], None


def parse_labels(text: str, classes: int, name: PathLike = "<labels>"
                 ) -> Tuple[np.ndarray, List[LabelProblem]]:
    """The good rows of a label file's text as float32 (k, 5), and a problem for each bad line.
    Blank lines are allowed."""
    rows: List[List[float]] = []
    problems: List[LabelProblem] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        row, reason = _check_line(fields, classes)
        if reason is None:
            rows.append(row)
        else:
            problems.append(LabelProblem(Path(name), number, reason))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5), problems


def check_label_file(path: PathLike, classes: int) -> Tuple[np.ndarray, List[LabelProblem]]:
    """Read one label file: its good rows and its problems (a missing, unreadable, oversized or non-regular
    file is one problem)."""
    p = Path(path)
    text, reason = text_problem(p, "label file", LABEL_BYTES)
    if text is None:
        return np.zeros((0, 5), np.float32), [LabelProblem(p, 0, "label file missing" if reason ==
                                                           "no such label file" else reason)]
    return parse_labels(text, classes, p)


def read_labels(path: PathLike, classes: int) -> np.ndarray:
    """A label file as float32 (k, 5) rows ``[class, x_center, y_center, width, height]``; the first bad
    line raises :class:`LabelError` ``file:line: reason``."""
    if classes < 1:
        raise LabelError(f"{path}: classes must be at least 1, got {classes}")
    rows, problems = check_label_file(path, classes)
    if problems:
        raise LabelError(str(problems[0]))
    return rows


def orphan_labels(images: Iterable[PathLike]) -> List[LabelProblem]:
    """Label files in the ``labels`` folders of ``images`` that belong to no image on disk (labels kept
    beside their images are not searched: that folder may hold other ``.txt`` files, list files)."""
    folders = sorted({Path(label_file(os.path.join(d, "x"))).parent
                      for d in {os.path.dirname(os.fspath(i)) for i in images}})
    problems = []
    for folder in folders:
        if "labels" not in folder.parts or not folder.is_dir():
            continue
        stems = set()
        for d in {c.parent for c in image_candidates(folder / "x.txt")}:
            if d.is_dir():
                stems.update(f.stem for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        for label in sorted(folder.glob("*.txt")):
            if label.stem not in stems:
                problems.append(LabelProblem(label, 0, "label file without an image"))
    return problems


@dataclass
class Entry:
    """What one listed image brings: its rows (float32 (k, 5)), its problems, and whether it is a background
    image (no label file) or missing."""
    rows: np.ndarray
    problems: List[LabelProblem]
    background: bool = False
    missing: bool = False


def check_entry(image: PathLike, classes: int) -> Entry:
    """One listed image: missing (a problem), a background image (no label file: no rows, no problem), or its
    label file's good rows and problems."""
    name = os.fspath(image)
    if not os.path.isfile(name):
        reason = "listed image does not exist" if not os.path.lexists(name) else "listed image is not a file"
        return Entry(np.zeros((0, 5), np.float32), [LabelProblem(Path(name), 0, reason)], missing=True)
    label = label_file(name)
    if not os.path.lexists(label):
        return Entry(np.zeros((0, 5), np.float32), [], background=True)
    rows, problems = check_label_file(label, classes)
    return Entry(rows, problems)


def check_images(images: Sequence[PathLike], classes: int, orphans: bool = True) -> List[LabelProblem]:
    """Every problem of a set of images and their labels: listed images that do not exist, each bad line or
    label file, and (``orphans``) label files without an image. Images without a label file are background
    images, not problems."""
    if classes < 1:
        raise DataError(f"classes must be at least 1, got {classes}")
    problems: List[LabelProblem] = []
    for image in images:
        problems.extend(check_entry(image, classes).problems)
    if orphans:
        problems.extend(orphan_labels(images))
    return problems


__all__ = ["LabelProblem", "Entry", "label_path", "image_candidates", "parse_labels", "check_label_file",
           "read_labels", "check_entry", "orphan_labels", "check_images", "IMAGE_EXTENSIONS", "MIN_SIZE"]
