"""``deltaprop summary FILE.cfg``: Darknet's layer table (layer, filters, size/stride, input → output,
BFLOPs = 2·filters·size²·(channels/groups)·out_h·out_w/1e9 per conv layer, and the total), worked out
from the cfg alone: nothing is allocated, so even a large network prints at once."""
from __future__ import annotations

import argparse

from ._options import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "summary", help="Darknet's layer table of a .cfg (shapes, BFLOPs)",
        description="Print Darknet's layer table for a Darknet .cfg file (or the name of a cfg shipped with "
                    "deltaprop, e.g. yolov3-tiny): each layer's filters, size/stride, input and output "
                    "(width x height x channels) and BFLOPs, then the total and the parameter count (trainable "
                    "parameters and batch-norm running statistics, which `deltaprop convert` prints the same way).")
    p.add_argument("cfg", metavar="FILE.cfg", help="Darknet cfg file or shipped cfg name")
    p.add_argument("--width", type=positive_int, help="override the [net] width (a multiple of the network's "
                                                      "total stride, e.g. 32 for YOLOv3)")
    p.add_argument("--height", type=positive_int, help="override the [net] height")
    p.add_argument("--channels", type=positive_int, help="override the [net] channels")
    return p


def run(args) -> int:
    from ._darknet import count_line, parameter_counts, plan_sized
    plan = plan_sized(args.cfg, width=args.width, height=args.height, channels=args.channels)
    lines = plan.table()
    for line in lines[:-1]:
        print(line)
    print(f"total {plan.bflops:.3f} BFLOPs; {count_line(*parameter_counts(plan))}")
    return 0
