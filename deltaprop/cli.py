"""The ``deltaprop`` command. Each subcommand lives in ``deltaprop/commands/<name>.py`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .errors import DeltapropError

# name -> module under deltaprop.commands (imported lazily so `deltaprop --help` is fast)
COMMANDS = ["train", "eval", "predict", "gradcheck", "explain", "summary", "detect", "convert", "data", "anchors"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltaprop",
        description="deltaprop: train and inspect neural networks whose backpropagation is written out "
                    "equation by equation; run Darknet .cfg/.weights models in plain Python.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"deltaprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"commands.{name}"):
                continue  # command not built yet
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except DeltapropError as e:
        print(f"deltaprop {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"deltaprop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
