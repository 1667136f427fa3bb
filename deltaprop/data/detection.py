"""Detection data in Darknet's layout: a ``.data`` file (``classes``, ``train``, ``valid``, ``names``,
``backup``), list files (one image path a line) or folders of images, label files found by Darknet's
``images``/``JPEGImages`` → ``labels`` rule (:mod:`deltaprop.data.labels`), ``.names`` files.

:class:`DetectionDataset` turns an image and its labels into a network input: letterboxed (Darknet's
``letterbox_image``) without augmentation, or Darknet's training augmentation (:mod:`deltaprop.data.augment`)
with ``augment=Augment(...)``. Every random draw comes from a generator seeded by ``(seed, epoch, index)``, so
a sample never depends on thread timing or on what was loaded before it.

:class:`DetectionLoader` batches a dataset — ``x`` float32 ``(N, 3, H, W)`` in [0, 1] and ``targets``, a list of
float32 ``(k, 5)`` rows ``[class, x_center, y_center, width, height]`` — building the next batches in worker
threads while the current one trains (image decoding, resizing and the HSV arithmetic release the GIL).
``set_size`` changes the size of the batches not yet handed out (multi-scale training); ``state_dict`` /
``load_state_dict`` (epoch, position) resume exactly.
"""
from __future__ import annotations

import array
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, LabelError
from ..geometry.boxes import letterbox_size
from ..geometry.letterbox import letterbox, letterbox_image
from .augment import Augment, augment_sample, correct_boxes
from .files import DATA_FILE_BYTES, LIST_BYTES, NAMES_BYTES, progress as progress_bar, read_text, shorten
from .images import load_image
from .labels import IMAGE_EXTENSIONS, LabelProblem, check_entry, check_images, label_path, read_labels

PathLike = Union[str, "os.PathLike[str]"]
#: How many problems a dataset keeps to show (all are counted).
KEPT_PROBLEMS = 1000
Batch = Tuple[np.ndarray, List[np.ndarray]]


@dataclass
class DataConfig:
    """A Darknet ``.data`` file. Paths are resolved (:func:`resolve_path`): relative ones against the ``.data``
    file's folder (so a data set can move); an input (``train``, ``valid``, ``names``) found only relative to
    the working directory is taken from there (Darknet's own rule); ``backup``, where trainers write, always
    lies in the ``.data`` file's folder when relative."""
    classes: int
    train: Optional[Path]
    valid: Optional[Path]
    names: Optional[Path]
    backup: Optional[Path]
    path: Path
    options: Dict[str, str] = field(default_factory=dict)


def resolve_path(value: str, base: Path, output: bool = False) -> Path:
    """``value`` as written in a data or list file whose folder is ``base``: an absolute path as is; a relative
    one beside the file, or (an input, not ``output``) relative to the working directory when it exists only
    there."""
    p = Path(os.path.expanduser(value))
    if p.is_absolute():
        return p
    beside = base / p
    if output or os.path.exists(beside) or not os.path.exists(p):     # False for a name too long, a NUL byte
        return beside
    return p


def read_data_file(path: PathLike) -> DataConfig:
    """Parse a Darknet ``.data`` file (``key = value`` lines, ``#``/``;`` comments). ``classes`` is
    required; a malformed line raises :class:`DataError` naming ``file:line``."""
    p = Path(path)
    text = read_text(p, "data file", DATA_FILE_BYTES)
    options: Dict[str, str] = {}
    lines: Dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if "=" not in line:
            raise DataError(f"{p}:{number}: expected 'key = value', got {shorten(line, 60)}")
        key, value = (s.strip() for s in line.split("=", 1))
        if not key:
            raise DataError(f"{p}:{number}: a value without a key")
        options[key] = value
        lines[key] = number
    if "classes" not in options:
        raise DataError(f"{p}: missing the required key 'classes'")
    raw_classes = options["classes"]
    if not (raw_classes.isascii() and raw_classes.lstrip("+-").isdigit()) or len(raw_classes) > 18:
        raise DataError(f"{p}:{lines['classes']}: classes {shorten(raw_classes)} is not an integer"
                        + (" of at most 18 digits" if raw_classes.isascii() and raw_classes.isdigit() else ""))
    classes = int(raw_classes)
    if classes < 1:
        raise DataError(f"{p}:{lines['classes']}: classes must be at least 1, got {classes}")
    base = p.resolve().parent

    def opt(key: str, output: bool = False) -> Optional[Path]:
        return resolve_path(options[key], base, output) if options.get(key) else None
    return DataConfig(classes=classes, train=opt("train"), valid=opt("valid"), names=opt("names"),
                      backup=opt("backup", output=True), path=p, options=options)


def read_names(path: PathLike) -> List[str]:
    """A ``.names`` file: class k is line k (blank trailing lines ignored)."""
    p = Path(path)
    lines = read_text(p, "names file", NAMES_BYTES).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    for number, name in enumerate(names, 1):
        if not name:
            raise DataError(f"{p}:{number}: empty class name")
    return names


@dataclass
class ImageList:
    """The images of a list file or folder, each once, in the order first listed (``paths``, strings), with
    the count of listed lines (``lines``, blank and ``#`` lines left out) and of repeats dropped
    (``duplicates``: a path listed again, also as ``a/./b`` or ``a//b``)."""
    source: Path
    paths: List[str]
    lines: int
    duplicates: int

    def __len__(self) -> int:
        return len(self.paths)


def read_image_list(source: PathLike) -> ImageList:
    """The images of a list file (one path a line, relative paths as in :func:`resolve_path`, blank and ``#``
    lines skipped, a path listed twice kept once; at most 1 GiB of text) or of a folder (its image files,
    sorted)."""
    p = Path(source)
    if os.path.isdir(p):
        found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        return ImageList(p, found, len(found), 0)
    text = read_text(p, "image list or folder" if not os.path.lexists(p) else "image list", LIST_BYTES)
    base = str(p.resolve().parent)
    here = os.getcwd()
    out: List[str] = []
    written = set()                 # the lines as written: a repeat costs a set lookup, not a stat
    seen = set()                    # the paths they name, normalised
    lines = 0
    for line in _lines(text):
        line = line.strip()
        if not line or line[0] == "#":
            continue
        lines += 1
        if line in written:
            continue
        written.add(line)
        path = os.path.expanduser(line)
        if not os.path.isabs(path):
            beside = os.path.join(base, path)
            path = beside if os.path.exists(beside) or not os.path.exists(path) else os.path.join(here, path)
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            out.append(key if key == path else path)      # one string object when the spelling is normal
    return ImageList(p, out, lines, lines - len(out))


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (``splitlines`` would hold a million strings at once)."""
    start, n = 0, len(text)
    while start < n:
        end = text.find("\n", start)
        if end < 0:
            end = n
        yield text[start:end]
        start = end + 1


def image_list(source: PathLike) -> List[Path]:
    """The images of a list file or folder (:func:`read_image_list`), each once, as paths."""
    return [Path(s) for s in read_image_list(source).paths]


def letterbox_rows(rows: np.ndarray, img_w: int, img_h: int, w: int, h: int) -> np.ndarray:
    """Label rows of an ``img_w × img_h`` image moved onto its letterboxed ``w × h`` canvas."""
    new_w, new_h = letterbox_size(img_w, img_h, w, h)
    return correct_boxes(rows, ((w - new_w) // 2) / w, ((h - new_h) // 2) / h, new_w / w, new_h / h, False)


class DetectionDataset:
    """Images and their labels, as network inputs of ``width × height``.

    ``images``: a list of image paths, or a list file / folder (:func:`read_image_list`: a path listed twice is
    kept once, ``duplicates`` counts the repeats). Every label is read and checked here: an image without a
    label file is a background image (no objects, as in Darknet; counted in ``background_images``); bad lines,
    bad label files and missing images raise :class:`LabelError` naming the first ones, unless
    ``skip_bad=True``, which keeps the good lines, drops missing images, and counts what it skipped
    (``skipped_lines``, ``skipped_images``, ``problem_count``; ``problems`` keeps the first
    :data:`KEPT_PROBLEMS`). :meth:`describe` says it all in one line, for a trainer's header. A progress bar
    shows past :data:`~deltaprop.data.files.PROGRESS_FROM` images on a terminal (``progress``).

    Memory per image: its path (a string) and its rows, in one float32 array for the whole set."""

    def __init__(self, images: Union[PathLike, Sequence[PathLike]], classes: int, width: int, height: int,
                 augment: Optional[Augment] = None, seed: int = 0, skip_bad: bool = False,
                 progress: Optional[bool] = None) -> None:
        if int(classes) < 1:
            raise DataError(f"classes must be at least 1, got {classes}")
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"augment must be None or an Augment, got {type(augment).__name__}")
        self.duplicates = 0
        if isinstance(images, (str, os.PathLike)):
            listing = read_image_list(images)
            paths: Sequence[str] = listing.paths
            self.duplicates = listing.duplicates
        else:
            paths = [os.fspath(p) for p in images]
        self.classes = int(classes)
        self.width, self.height = _check_size(width, height)
        self.augment = augment
        self.seed = int(seed)
        self.problems: List[LabelProblem] = []
        self.problem_count = 0
        self.images: List[str] = []
        self.skipped_lines = 0
        self.skipped_images = 0
        self.background_images = 0
        flat = array.array("f")
        ends = array.array("q", [0])
        bar = progress_bar(len(paths), "reading labels", progress)
        for n, image in enumerate(paths):
            entry = check_entry(image, self.classes)
            self.problem_count += len(entry.problems)
            self.problems.extend(entry.problems[:max(0, KEPT_PROBLEMS - len(self.problems))])
            if entry.missing:
                self.skipped_images += 1
            else:
                self.skipped_lines += len(entry.problems)
                self.background_images += entry.background
                self.images.append(image)
                flat.frombytes(np.ascontiguousarray(entry.rows, np.float32).tobytes())
                ends.append(len(flat) // 5)
            if bar is not None and (n & 1023) == 1023:
                bar.update(1024)
        if bar is not None:
            bar.close()
        self._rows = np.frombuffer(flat, dtype=np.float32).reshape(-1, 5) if len(flat) else np.zeros((0, 5), np.float32)
        self._ends = np.frombuffer(ends, dtype=np.int64)
        if self.problem_count and not skip_bad:
            first = "; ".join(str(p) for p in self.problems[:3])
            more = f" (and {self.problem_count - 3} more)" if self.problem_count > 3 else ""
            raise LabelError(f"{self.problem_count} bad label line(s) or file(s): {first}{more}; "
                             f"list them all with 'deltaprop data check', or skip them explicitly "
                             f"(skip_bad=True, --skip-bad-labels)")
        if not self.images:
            raise DataError("no usable images in the data set")

    def __len__(self) -> int:
        return len(self.images)

    def _labels(self, index: int) -> np.ndarray:
        return self._rows[self._ends[index]:self._ends[index + 1]]

    def labels(self, index: int) -> np.ndarray:
        """The label rows of image ``index`` as read (relative to the original image)."""
        return self._labels(index).copy()

    def describe(self) -> str:
        """The set in one line: images, boxes, background images, repeats dropped and what was skipped."""
        parts = [f"{len(self):,} images, {len(self._rows):,} boxes"]
        if self.background_images:
            parts.append(f"{self.background_images:,} background images (no label file)")
        if self.duplicates:
            parts.append(f"{self.duplicates:,} repeated list lines dropped")
        if self.skipped_images or self.skipped_lines:
            parts.append(f"skipped {self.skipped_images:,} missing images and {self.skipped_lines:,} bad label "
                         f"lines or files")
        return ", ".join(parts)

    def rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        """The generator of sample ``index`` in ``epoch``: seeded by (seed, epoch, index) only."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), int(index)]))

    def sample(self, index: int, epoch: int = 0, width: Optional[int] = None,
               height: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Image ``index`` as a float32 (3, h, w) input and its (k, 5) rows: augmented when the dataset has
        an ``Augment`` (deterministic in seed, epoch and index), else letterboxed. A photo far larger than the
        input is reduced as it is decoded (:func:`~deltaprop.data.images.reduction`)."""
        w = self.width if width is None else int(width)
        h = self.height if height is None else int(height)
        im = load_image(self.images[index], 3, fit=(w, h))
        rows = self._labels(index)
        if self.augment is None:
            _, ih, iw = im.shape
            return letterbox_image(im, w, h), letterbox_rows(rows, iw, ih, w, h)
        return augment_sample(im, rows, w, h, self.augment, self.rng(index, epoch))

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.sample(index)


def _check_size(width: int, height: int) -> Tuple[int, int]:
    w, h = int(width), int(height)
    if w < 1 or h < 1:
        raise DataError(f"input size must be positive, got {width}x{height}")
    return w, h


class DetectionLoader:
    """Batches of a :class:`DetectionDataset`, built ahead in ``workers`` threads (0: in the caller).

    Iterating yields the rest of the current epoch; the order of epoch ``e`` is a permutation seeded by
    ``(seed, e)`` (``shuffle=False``: file order). The last batch is smaller when the set does not divide
    evenly (``drop_last=True`` drops it). :meth:`batches` repeats epochs forever (Darknet's trainers count
    batches, not epochs)."""

    def __init__(self, dataset: DetectionDataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 workers: int = 2, drop_last: bool = False, prefetch: Optional[int] = None) -> None:
        if int(batch_size) < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if int(workers) < 0:
            raise DataError(f"workers must be 0 or more, got {workers}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.workers = int(workers)
        self.drop_last = bool(drop_last)
        self.prefetch = max(1, self.workers if prefetch is None else int(prefetch))
        self.width, self.height = dataset.width, dataset.height
        self.epoch = 0
        self.position = 0
        self._pool: Optional[ThreadPoolExecutor] = None
        if len(self) == 0:
            raise DataError(f"{len(dataset)} images make no batch of {batch_size} (drop_last)")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_size(self, width: int, height: int) -> None:
        """The size of every batch not yet handed out (batches built ahead at another size are rebuilt)."""
        self.width, self.height = _check_size(width, height)

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch), 0x5EED])).permutation(n)

    def make_batch(self, epoch: int, position: int, width: int, height: int) -> Batch:
        """Batch ``position`` of ``epoch`` at ``width × height`` (a pure function of its arguments)."""
        idx = self.order(epoch)[position * self.batch_size:(position + 1) * self.batch_size]
        x = np.empty((len(idx), 3, height, width), dtype=np.float32)
        targets = []
        for k, i in enumerate(idx):
            x[k], rows = self.dataset.sample(int(i), epoch, width, height)
            targets.append(rows)
        return x, targets

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "width": self.width, "height": self.height}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"loader state needs integer 'epoch' and 'position', got {state!r}") from None
        if epoch < 0 or not 0 <= position <= len(self):
            raise DataError(f"loader state out of range: epoch {epoch}, position {position} of {len(self)}")
        self.epoch, self.position = epoch, position
        if "width" in state and "height" in state:
            self.set_size(state["width"], state["height"])

    def _submit(self, position: int) -> Tuple[Tuple[int, int], Any]:
        size = (self.width, self.height)
        if self.workers == 0:
            return size, None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="deltaprop-data")
        return size, self._pool.submit(self.make_batch, self.epoch, position, *size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self)
        if self.position >= n:
            self.epoch, self.position = self.epoch + 1, 0
        pending: Dict[int, Tuple[Tuple[int, int], Optional[Future]]] = {}
        try:
            while self.position < n:
                pos = self.position
                for p in range(pos, min(n, pos + self.prefetch)):
                    if p not in pending or pending[p][0] != (self.width, self.height):
                        if p in pending and pending[p][1] is not None:
                            pending[p][1].cancel()
                        pending[p] = self._submit(p)
                size, fut = pending.pop(pos)
                batch = fut.result() if fut is not None else self.make_batch(self.epoch, pos, *size)
                self.position = pos + 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0
        finally:
            for _, fut in pending.values():
                if fut is not None:
                    fut.cancel()

    def batches(self) -> Iterator[Batch]:
        """Batches without end, epoch after epoch."""
        while True:
            yield from self

    def close(self) -> None:
        """Stop the worker threads (also done when the loader is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["DataConfig", "read_data_file", "read_names", "image_list", "read_image_list", "ImageList", "label_path", "read_labels", "letterbox",
           "letterbox_rows", "resolve_path", "DetectionDataset", "DetectionLoader", "Augment", "check_images",
           "LabelProblem"]
