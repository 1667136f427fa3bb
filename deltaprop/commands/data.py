"""``deltaprop data``: detection data sets in Darknet's layout.

``deltaprop data check DATA``  opens every listed image (header and decode, as training does) and reads every
label file, in parallel threads, and lists each problem as ``file: reason`` or ``file:line: reason`` (bad label
lines, unreadable or oversized images, labels without images, listed images that do not exist), in list order;
exit status 1 when there is any. What it passes, training accepts.
``deltaprop data digits --out DIR``  writes the MNIST digit-scene set (``deltaprop.data.digits``)."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ._options import float_range, int_range, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="check detection data, make the digit-scene data set",
                              description="Detection data in Darknet's layout (.data, list files, labels/).")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = sub.add_parser("check", help="list every bad label line as file:line: reason",
                       description="Check a Darknet .data file's train and valid sets (or one list file or "
                                   "folder of images, with --classes): every bad label line, images without a "
                                   "label file, label files without an image, listed images that do not exist.")
    c.add_argument("data", metavar="DATA", help=".data file, or an image list file or folder")
    c.add_argument("--classes", type=positive_int, help="number of classes (≥ 1), when DATA is a list file or "
                                                        "folder")
    c.add_argument("--workers", type=positive_int, default=None,
                   help="threads opening images, ≥ 1 (default: the number of CPU cores)")
    c.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: past 5000 images, on a terminal)")
    d = sub.add_parser("digits", help="write scenes of MNIST digits as a detection data set",
                       description="Write scenes of 1-6 MNIST digits on noisy grey or coloured canvases in "
                                   "Darknet's layout (images/, labels/, train.txt, test.txt, digits.names, "
                                   "digits.data). Train scenes use MNIST's train digits, test scenes its test "
                                   "digits. Deterministic by --seed.")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    d.add_argument("--train", type=positive_int, default=4000, help="train scenes, ≥ 1 (default 4000)")
    d.add_argument("--test", type=positive_int, default=500, help="test scenes, ≥ 1 (default 500)")
    d.add_argument("--size", type=int_range(16), default=128, help="scene width and height in pixels, ≥ 16 "
                                                                  "(default 128)")
    d.add_argument("--digit-size", type=int_range(4), nargs=2, default=(14, 60), metavar=("MIN", "MAX"),
                   help="longer side of a digit's ink in pixels, 4 ≤ MIN ≤ MAX ≤ --size (default 14 60)")
    d.add_argument("--digits", type=positive_int, nargs=2, default=(1, 6), metavar=("MIN", "MAX"),
                   help="digits per scene, 1 ≤ MIN ≤ MAX (default 1 6)")
    d.add_argument("--noise", type=float_range(0.0, 0.5), default=0.06,
                   help="largest standard deviation of the pixel noise, as a fraction of full scale, in [0, 0.5] "
                        "(default 0.06)")
    d.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    d.add_argument("--seed", type=int_range(0, 2 ** 32 - 1), default=0, help="random seed, 0..2^32-1 (default 0)")
    d.add_argument("--mnist", metavar="DIR", help="folder holding the MNIST IDX files (default: the usual lookup)")
    d.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    p.set_defaults(_data_parser=p)
    return p


def load_split(data: str, classes: Optional[int], skip_bad: bool, split: str = "train"):
    """The DetectionDataset of ``split`` of a .data file (or of a list file / folder with ``classes``),
    and the .data file's DataConfig (None for a list)."""
    from ..data.detection import DetectionDataset, read_data_file
    from ..errors import DataError
    cfg = None
    path = Path(data)
    if path.suffix == ".data":
        cfg = read_data_file(path)
        source = getattr(cfg, split)
        if source is None:
            raise DataError(f"{path}: no '{split}' key")
        classes = cfg.classes
    else:
        if classes is None:
            raise DataError(f"{data}: not a .data file; give --classes N for a list file or folder")
        source = path
    return DetectionDataset(source, classes, 1, 1, skip_bad=skip_bad), cfg


def _sets(data: str, classes: Optional[int]) -> Tuple[int, List[Tuple[str, Path]], List[str]]:
    """(classes, [(name, list or folder)], problems of the .data file itself)."""
    from ..data.detection import read_data_file, read_names
    from ..errors import DataError
    path = Path(data)
    if path.suffix != ".data":
        if classes is None:
            raise DataError(f"{data}: not a .data file; give --classes N for a list file or folder")
        return classes, [(str(path), path)], []
    cfg = read_data_file(path)
    notes = []
    if cfg.names is not None:
        try:
            names = read_names(cfg.names)
            if len(names) != cfg.classes:
                notes.append(f"{cfg.names}: {len(names)} names for classes = {cfg.classes} in {path}")
        except DataError as e:
            notes.append(str(e))
    sets = [(k, getattr(cfg, k)) for k in ("train", "valid") if getattr(cfg, k) is not None]
    if not sets:
        raise DataError(f"{path}: neither 'train' nor 'valid' is set")
    if len(sets) == 2 and sets[0][1] == sets[1][1]:
        sets = sets[:1]
    return cfg.classes, sets, notes


def _check_one(image: str, classes: int) -> Tuple[List[str], bool]:
    """The problems of one listed image (its label file's, then its picture's) and whether it is a background
    image."""
    from ..data.images import check_image
    from ..data.labels import check_entry
    from ..errors import DataError
    entry = check_entry(image, classes)
    problems = [str(p) for p in entry.problems]
    if not entry.missing:
        try:
            check_image(image)
        except DataError as e:
            problems.insert(0, str(e))
    return problems, entry.background


def _check_set(paths: List[str], classes: int, workers: int, bar) -> Iterator[Tuple[List[str], bool]]:
    """``_check_one`` of every path, in list order, ``workers`` threads at a time (decoding releases the
    GIL); at most a few chunks in flight, so a list of millions costs memory for a chunk, not for the list."""
    from concurrent.futures import ThreadPoolExecutor
    chunk = 64 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="deltaprop-check") as pool:
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            yield from pool.map(lambda p: _check_one(p, classes), part)
            if bar is not None:
                bar.update(len(part))


def _check(args) -> int:
    from ..data.detection import read_image_list
    from ..data.files import progress
    from ..data.labels import orphan_labels
    from ..errors import DataError
    classes, sets, notes = _sets(args.data, args.classes)
    workers = args.workers or os.cpu_count() or 1
    count = len(notes)
    for line in notes:
        print(line)
    lines = []
    folders = []
    for name, source in sets:
        try:
            listing = read_image_list(source)
        except DataError as e:
            print(e)
            count += 1
            continue
        if not len(listing):
            what = "folder" if os.path.isdir(source) else "image list"
            print(f"{source}: {what} with no images")
            count += 1
        bar = progress(len(listing), f"checking {name}", args.progress)
        found = background = 0
        try:
            for problems, is_background in _check_set(listing.paths, classes, workers, bar):
                for line in problems:
                    if bar is not None:
                        bar.clear()
                    print(line)
                found += len(problems)
                background += is_background
        finally:
            if bar is not None:
                bar.close()
        count += found
        extra = f", {listing.duplicates:,} repeated lines dropped" if listing.duplicates else ""
        lines.append(f"{name}: {len(listing):,} images ({background:,} background: no label file{extra}), "
                     f"{found:,} problem(s)")
        folders.extend({os.path.dirname(p) for p in listing.paths})
    for p in orphan_labels(os.path.join(d, "x") for d in set(folders)):
        print(p)
        count += 1
    for line in lines:
        print(line)
    print(f"{count:,} problem(s) in {args.data}" if count else f"{args.data}: no problems")
    return 1 if count else 0


def _digits(args) -> int:
    from ..data.digits import DigitScenes, make_digit_scenes
    from ._files import check_folder
    opts = DigitScenes(train=args.train, test=args.test, size=args.size, digit_min=args.digit_size[0],
                       digit_max=args.digit_size[1], min_digits=args.digits[0], max_digits=args.digits[1],
                       noise=args.noise, seed=args.seed, format=args.format)
    check_folder(args.mnist, "--mnist")
    start = time.perf_counter()
    data = make_digit_scenes(args.out, opts, mnist_root=args.mnist, force=args.force)
    print(f"{data}: {opts.train} train + {opts.test} test scenes of {opts.size}x{opts.size} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def run(args) -> int:
    if args.data_command == "check":
        return _check(args)
    if args.data_command == "digits":
        return _digits(args)
    args._data_parser.print_help()
    return 2
