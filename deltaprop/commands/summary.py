"""``deltaprop summary FILE.cfg``: Darknet's layer table (layer, filters, size/stride, input → output,
BFLOPs = 2·filters·size²·(channels/groups)·out_h·out_w/1e9 per conv layer, and the total), worked out
from the cfg alone: nothing is allocated, so even a large network prints at once."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "summary", help="Darknet's layer table of a .cfg (shapes, BFLOPs)",
        description="Print Darknet's layer table for a Darknet .cfg file (or the name of a cfg shipped with "
                    "deltaprop, e.g. yolov3-tiny): each layer's filters, size/stride, input and output "
                    "(width x height x channels) and BFLOPs, then the total and the parameter count.")
    p.add_argument("cfg", metavar="FILE.cfg", help="Darknet cfg file or shipped cfg name")
    p.add_argument("--width", type=int, help="override the [net] width")
    p.add_argument("--height", type=int, help="override the [net] height")
    p.add_argument("--channels", type=int, help="override the [net] channels")
    return p


def run(args) -> int:
    from ..darknet import plan_cfg
    plan = plan_cfg(args.cfg, width=args.width, height=args.height, channels=args.channels)
    for line in plan.table():
        print(line)
    return 0
