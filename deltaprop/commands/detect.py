"""``deltaprop detect --cfg C --weights W IMAGE...``: YOLO detection as Darknet's ``detector test``:
letterbox each image to the network size, run the network, decode the [yolo] boxes, per-class NMS;
print the boxes and write a PNG with the labelled boxes beside each image (or into ``--out``)."""
from __future__ import annotations

import argparse
import os


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detect", help="detect objects with a Darknet YOLO cfg + weights",
        description="Run a Darknet YOLO network (cfg + .weights) on images: print each box (class, confidence, "
                    "pixel corners) and save IMAGE_pred.png with the boxes drawn.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    p.add_argument("--cfg", required=True, help="Darknet .cfg (or a shipped cfg name, e.g. yolov3-tiny)")
    p.add_argument("--weights", help="Darknet .weights (default: random initial weights, for testing)")
    p.add_argument("--names", help="class names, one per line (e.g. coco.names)")
    p.add_argument("--thresh", type=float, default=0.5, help="confidence threshold (default 0.5)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold, 0 to disable (default 0.45)")
    p.add_argument("--width", type=int, help="network input width (default: the cfg's)")
    p.add_argument("--height", type=int, help="network input height (default: the cfg's)")
    p.add_argument("--numerics", choices=["darknet", "standard"], default="darknet",
                   help="batch-norm convention (default darknet)")
    p.add_argument("--out", metavar="DIR", help="directory for the PNGs (default: beside each image)")
    p.add_argument("--no-draw", action="store_true", help="only print the boxes")
    return p


def read_names(path: str):
    from ..errors import DataError
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read class names: {e.strerror or e}") from None


def run(args) -> int:
    from .. import darknet
    from ..detect import detect_image, load_image
    from ..detect.draw import draw_boxes, save_png
    net = darknet.load(args.cfg, args.weights, numerics=args.numerics, width=args.width, height=args.height)
    yolos = [l for l in net.layers if l.kind == "yolo"]
    if not yolos:
        from ..errors import ConfigError
        raise ConfigError(f"{args.cfg}: no [yolo] layer: not a detector")
    names = read_names(args.names) if args.names else None
    net.eval()
    for path in args.images:
        img = load_image(path, channels=net.input_shape[0])
        boxes = detect_image(net, img, args.thresh, args.nms, names)
        print(f"{path}: {len(boxes)} box(es)")
        for b in boxes:
            print(f"  {b}")
        if not args.no_draw:
            stem = os.path.splitext(os.path.basename(path))[0] + "_pred.png"
            out_dir = args.out or os.path.dirname(os.path.abspath(path))
            if args.out:
                os.makedirs(args.out, exist_ok=True)
            out = os.path.join(out_dir, stem)
            save_png(draw_boxes(img, boxes, yolos[0].classes), out)
            print(f"  wrote {out}")
    return 0
