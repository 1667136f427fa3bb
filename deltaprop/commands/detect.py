"""``deltaprop detect --cfg C --weights W IMAGE...``: YOLO detection as Darknet's ``detector test``:
letterbox each image to the network size, run the network, decode the [yolo] boxes, per-class NMS;
print the boxes and write a PNG with the labelled boxes beside each image (or into ``--out``).

Every picture is checked (and decoded) before the first PNG is written. A photo far larger than the network
input is reduced as it is decoded (``data.images.reduction``): its boxes are printed in its own pixels (to within
the reduction factor) and drawn on the reduced picture. Two images whose PNG names would meet in one folder get
their folder's name in front (``commands._files.prediction_paths``)."""
from __future__ import annotations

import argparse
import os
import sys

from ._options import positive_int, unit_interval


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detect", help="detect objects with a Darknet YOLO cfg + weights",
        description="Run a Darknet YOLO network (cfg + .weights) on images: print each box (class, confidence, "
                    "pixel corners) and save IMAGE_pred.png with the boxes drawn.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    p.add_argument("--cfg", required=True, help="Darknet .cfg (or a shipped cfg name, e.g. yolov3-tiny)")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument("--weights", help="Darknet .weights of the cfg (required unless --random-weights)")
    w.add_argument("--random-weights", action="store_true",
                   help="run with Darknet's random initial weights (a smoke test: with untrained batch-norm "
                        "statistics the boxes mean nothing)")
    p.add_argument("--names", help="class names, one per line (e.g. coco.names); a count other than the cfg's "
                                   "classes is warned about")
    p.add_argument("--thresh", type=unit_interval, default=0.5, help="confidence threshold in [0, 1] (default 0.5)")
    p.add_argument("--nms", type=unit_interval, default=0.45,
                   help="NMS IoU threshold in [0, 1], 0 to disable (default 0.45)")
    p.add_argument("--width", type=positive_int, help="network input width, a multiple of the network's total "
                                                      "stride (32 for YOLOv3) (default: the cfg's)")
    p.add_argument("--height", type=positive_int, help="network input height (default: the cfg's)")
    p.add_argument("--numerics", choices=["darknet", "standard"], default="darknet",
                   help="batch-norm convention (default darknet)")
    p.add_argument("--out", metavar="DIR", help="directory for the PNGs (default: beside each image)")
    p.add_argument("--no-draw", action="store_true", help="only print the boxes")
    return p


def run(args) -> int:
    import contextlib

    import numpy as np

    from .. import darknet
    from ..data.detection import read_names
    from ..data.images import image_header, load_image
    from ..detect import detect_image
    from ..detect.draw import draw_boxes, save_png
    from ._darknet import plan_sized
    from ._files import check_images, prediction_paths, require_weights
    plan = plan_sized(args.cfg, width=args.width, height=args.height)
    if not any(s.type == "yolo" for s in plan.specs):
        from ..errors import ConfigError
        raise ConfigError(f"{args.cfg}: no [yolo] layer: not a detector")
    if args.weights:
        require_weights(args.weights)
    names = read_names(args.names) if args.names else None     # one reader of .names files (a DataError if bad)
    check_images(args.images)       # every picture readable before the first PNG is written
    net = darknet.load(args.cfg, args.weights, numerics=args.numerics, width=args.width, height=args.height)
    yolos = [l for l in net.layers if l.kind == "yolo"]
    classes = yolos[0].classes
    if names is not None and len(names) != classes:
        print(f"warning: {args.names} has {len(names)} class names but {args.cfg} detects {classes} classes: "
              f"{'the extra names are unused' if len(names) > classes else 'classes without a name print as numbers'}",
              file=sys.stderr)
    quiet = contextlib.nullcontext()
    if args.random_weights:
        print("warning: --random-weights: the network is untrained (random weights, batch-norm statistics never "
              "estimated): the boxes below mean nothing", file=sys.stderr)
        quiet = np.errstate(all="ignore")   # random weights overflow; that is expected, not news
    net.eval()
    c, net_h, net_w = net.input_shape
    outs = prediction_paths(args.images, args.out)
    with quiet:
        for path, out in zip(args.images, outs):
            header = image_header(path)
            img = load_image(path, channels=c, fit=(net_w, net_h))
            try:
                boxes = detect_image(net, img, args.thresh, args.nms, names)
            except OverflowError:   # a box of infinite size cannot become pixel corners
                from ..errors import ValueRangeError
                raise ValueRangeError(f"{path}: the network's box sizes overflow to infinity: "
                                      + ("random weights give such outputs; use trained --weights"
                                         if args.random_weights else
                                         f"are {args.weights} really the weights of {args.cfg}?")) from None
            reduced = (img.shape[2], img.shape[1]) != (header.width, header.height)
            print(f"{path}: {len(boxes)} box(es)" + (f" (found on the picture reduced to {img.shape[2]}x"
                                                       f"{img.shape[1]}; pixels of the {header.width}x"
                                                       f"{header.height} original)" if reduced else ""))
            for b in boxes:
                print(f"  {in_picture(b, img.shape[2], img.shape[1], header) if reduced else b}")
            if not args.no_draw:
                if args.out:
                    os.makedirs(args.out, exist_ok=True)
                save_png(draw_boxes(img, boxes, classes), out)
                print(f"  wrote {out}")
    return 0


def in_picture(box, width: int, height: int, header):
    """``box`` (pixels of a ``width × height`` reduced picture) in the pixels of the original ``header``."""
    import dataclasses
    sx, sy = header.width / width, header.height / height
    return dataclasses.replace(box, left=min(int(box.left * sx), header.width - 1),
                               top=min(int(box.top * sy), header.height - 1),
                               right=min(int(box.right * sx), header.width - 1),
                               bottom=min(int(box.bottom * sy), header.height - 1))
