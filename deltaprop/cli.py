"""The ``deltaprop`` command. Each subcommand lives in ``deltaprop/commands/<name>.py`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only dispatches."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from .errors import DeltapropError

# name -> module under deltaprop.commands (imported lazily so `deltaprop --help` is fast)
# optional packages -> the pyproject extra that installs them (named when one is missing)
EXTRA_OF = {"matplotlib": "plot", "PIL": "images", "numba": "fast", "threadpoolctl": "fast", "mpi4py": "mpi"}
COMMANDS = ["train", "eval", "predict", "gradcheck", "explain", "summary", "detect", "convert", "data", "anchors",
            "detector", "info", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deltaprop",
        description="deltaprop: train and inspect neural networks whose backpropagation is written out "
                    "equation by equation; run Darknet .cfg/.weights models in plain Python.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"deltaprop {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (allowed anywhere on the line)")
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


def _error_line(command: str, e: BaseException) -> str:
    """One line naming the problem: the project's message, or the file and reason of an OSError."""
    if isinstance(e, OSError) and not isinstance(e, DeltapropError):
        where = e.filename if e.filename is not None else ""
        where2 = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
        reason = e.strerror or str(e)
        if isinstance(e, FileExistsError) and where and os.path.isfile(where):
            reason = "a file is in the way: it exists and is not a directory"
        return f"deltaprop {command}: error: {where}{where2}: {reason}" if where else \
            f"deltaprop {command}: error: {reason}"
    if isinstance(e, ImportError):
        name = (getattr(e, "name", None) or "").split(".")[0]
        extra = EXTRA_OF.get(name)
        hint = f" (pip install 'deltaprop[{extra}]')" if extra and extra not in str(e) else ""
        return f"deltaprop {command}: error: a package this needs is missing: {e}{hint}"
    if isinstance(e, MemoryError):
        return f"deltaprop {command}: error: out of memory ({e or 'the arrays do not fit'})"
    if isinstance(e, DeltapropError):
        return f"deltaprop {command}: error: {e}"
    return (f"deltaprop {command}: internal error: {type(e).__name__}: {e} (this is a bug in deltaprop; "
            f"run again with --debug for the traceback)")


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and run the subcommand. A user's mistake ends in one line naming it and a non-zero exit
    (argparse's 2 for a bad option, 1 for a bad file or value found while running, 130 for Ctrl-C), never a
    traceback; ``--debug`` (anywhere on the line) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        from . import tune
        tune()          # malloc tuning, the BLAS library and the threads, before the command (docs/core.md)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"deltaprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except (Exception, MemoryError) as e:  # noqa: BLE001 - the command line's last line of defence
        if debug:
            raise
        print(_error_line(args.command, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
