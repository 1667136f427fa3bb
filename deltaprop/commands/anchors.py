"""``deltaprop anchors DATA -n 6 --size W H``: anchors for a [yolo] cfg by k-means on IoU over the train set's
boxes (AlexeyAB's ``darknet detector calc_anchors``), printed as the cfg line ``anchors = ...``."""
from __future__ import annotations

import argparse

from ._options import int_range, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "anchors", help="compute [yolo] anchors by k-means on IoU over a data set's boxes",
        description="Cluster the box shapes of the train images of a Darknet .data file (or of a list file or "
                    "folder of images, with --classes) by k-means with distance 1 - IoU, as AlexeyAB's "
                    "calc_anchors, and print them sorted by area as a cfg line.")
    p.add_argument("data", metavar="DATA", help=".data file (its train list), or an image list file or folder")
    p.add_argument("-n", "--num", type=positive_int, default=9,
                   help="number of anchors, ≥ 1 (default 9; yolov3-tiny uses 6)")
    p.add_argument("--size", type=positive_int, nargs=2, metavar=("W", "H"), default=(416, 416),
                   help="network input width and height in pixels, ≥ 1 (default 416 416)")
    p.add_argument("--classes", type=positive_int, help="number of classes (≥ 1), when DATA is a list file or "
                                                        "folder")
    p.add_argument("--seed", type=int_range(0, 2 ** 32 - 1), default=0,
                   help="seed of the random starts, 0..2^32-1 (default 0)")
    p.add_argument("--restarts", type=positive_int, default=10,
                   help="keep the best of this many random starts, ≥ 1 (default 10; 1 = AlexeyAB's single run)")
    p.add_argument("--skip-bad-labels", action="store_true", help="skip bad label lines instead of refusing")
    return p


def run(args) -> int:
    from ..data.anchors import kmeans_anchors, label_shapes
    from ..errors import DataError
    from .data import load_split
    w, h = args.size
    if w < 1 or h < 1:
        raise DataError(f"--size must be positive, got {w} {h}")
    ds, _ = load_split(args.data, args.classes, args.skip_bad_labels, "train")
    rows = [ds.labels(i) for i in range(len(ds))]
    counts = [0] * ds.classes
    for r in rows:
        for c in r[:, 0].astype(int):
            counts[c] += 1
    try:
        result = kmeans_anchors(label_shapes(rows, w, h), args.num, seed=args.seed, restarts=args.restarts)
    except DataError as e:          # too few boxes: say in which data
        raise DataError(f"{args.data}: {e} ({ds.describe()})") from None
    print(f"{result.boxes} boxes in {len(ds)} images; {args.num} anchors for {w}x{h}; "
          f"{result.rounds} k-means rounds")
    if ds.background_images or ds.duplicates:
        print(ds.describe())
    print("counters_per_class = " + ", ".join(str(c) for c in counts))
    print(f"avg IoU = {100 * result.avg_iou:.2f} %")
    print(result.cfg_line(w))
    return 0
