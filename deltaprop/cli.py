"""The ``deltaprop`` command. Each subcommand lives in ``deltaprop/commands/<name>.py`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this file dispatches, and reads Darknet's command-line habits
first (``darknet_habits``: ``-map``, ``-thresh 0.25``, ``-gpus 0``, ``detector calc_anchors``, ...;
docs/darknet.md, "Darknet's command-line habits")."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

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


# --- Darknet's command-line habits ----------------------------------------------------------------------------

class HabitError(Exception):
    """A Darknet habit deltaprop answers instead of running: the one line saying what to type."""


#: Darknet's single-dash options that deltaprop reads as one of its own (when the verb has it): -x → --x-with-dashes
#: unless named here.
DARKNET_SPELLINGS = {"-num_of_clusters": "--num", "-ext_output": "--ext-output", "-map": "--map", "-clear": "--clear",
                     "-thresh": "--thresh", "-width": "--width", "-height": "--height"}
#: Darknet's options that change nothing here (dropped, said once).
NO_OPS = {"-dont_show": "no window is ever opened", "-nogpu": "deltaprop runs on the CPU",
          "-letter_box": "deltaprop letterboxes always", "-show_imgs": "no window is ever opened"}
#: Darknet's options deltaprop has no counterpart for, with what to do instead.
ANSWERS = {
    "-gpus": "deltaprop runs on the CPU; drop -gpus (its threads: DELTAPROP_BLAS_THREADS)",
    "-out": "Darknet's -out FILE writes JSON detections: `deltaprop detector valid DATA CFG WEIGHTS --out FILE` does",
    "-iou_thresh": "deltaprop's detector map reports mAP at IoU 0.5 and COCO's over 0.5..0.95 (no -iou_thresh)",
    "-points": "deltaprop's detector map reads the precision at COCO's 101 recall points (no -points)",
    "-show": "`deltaprop anchors` prints the anchors (no -show window)",
    "-mjpeg_port": "deltaprop serves no streams", "-json_port": "deltaprop serves no streams",
    "-http_port": "deltaprop serves no streams",
}
_DASH_WORD = re.compile(r"^-[A-Za-z][A-Za-z0-9_]+$")       # Darknet's -map, -dont_show (not -n, not -1)


def _verb_parser(parser: argparse.ArgumentParser, argv: List[str]) -> Tuple[argparse.ArgumentParser, str]:
    """The (sub)parser that will read ``argv``'s options and its command name ("detector test")."""
    names: List[str] = []
    cur = parser
    for tok in argv:
        sub = next((a for a in cur._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or tok not in sub.choices:
            if not tok.startswith("-") and sub is not None:
                break
            continue
        cur = sub.choices[tok]
        names.append(tok)
    return cur, " ".join(names)


def darknet_habits(parser: argparse.ArgumentParser, argv: List[str]) -> Tuple[List[str], List[str]]:
    """``argv`` with Darknet's habits read as deltaprop's (docs/darknet.md, "Darknet's command-line habits"), and
    the notes to print:
    ``detector calc_anchors DATA`` runs ``anchors DATA``; a single-dash Darknet option becomes the verb's own
    long option (``-map`` → ``--map``, ``-thresh 0.25`` → ``--thresh 0.25``, ``-num_of_clusters 9`` →
    ``--num 9``, ``-width``/``-height`` of ``anchors`` → ``--size``), is dropped when it changes nothing here
    (``-dont_show``), or ends in a ``HabitError`` with the one line to type instead (``-gpus``, an option the
    verb lacks)."""
    argv = list(argv)
    notes: List[str] = []
    if argv[:2] == ["detector", "calc_anchors"]:
        argv = ["anchors"] + argv[2:]
        notes.append("detector calc_anchors is `deltaprop anchors`")
    if argv[:2] == ["detector", "demo"] and "demo" not in _subcommands(parser, "detector"):
        raise HabitError("detector demo: deltaprop has no demo (video) verb; for images: `deltaprop detector test "
                         "DATA CFG WEIGHTS IMG...`")
    verb, name = _verb_parser(parser, argv)
    known = verb._option_string_actions
    out: List[str] = []
    size: Dict[str, str] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            out += argv[i:]
            break
        if tok == "-i" and "-i" not in known and i + 1 < len(argv) and argv[i + 1].isdigit():
            raise HabitError("-i N (Darknet's GPU index): deltaprop runs on the CPU; drop it")
        if not _DASH_WORD.match(tok) or tok in known:
            out.append(tok)
            i += 1
            continue
        if tok in NO_OPS:
            notes.append(f"{tok} dropped ({NO_OPS[tok]})")
            i += 1
            continue
        if tok in ANSWERS:
            raise HabitError(f"{tok}: {ANSWERS[tok]}")
        if name == "anchors" and tok in ("-width", "-height") and i + 1 < len(argv):
            size[tok] = argv[i + 1]
            i += 2
            continue
        long = DARKNET_SPELLINGS.get(tok, "-" + tok.replace("_", "-"))
        if long in known:
            out.append(long)
            notes.append(f"{tok} read as {long}")
            i += 1
            continue
        if tok == "-ext_output":
            notes.append(f"{tok} dropped (every box is listed with its corners already)")
            i += 1
            continue
        raise HabitError(f"{tok} is Darknet's spelling; deltaprop{' ' + name if name else ''} has no {long} "
                         f"(its options have two dashes: deltaprop {name + ' ' if name else ''}--help)")
    if size:
        out += ["--size", size.get("-width", "416"), size.get("-height", size.get("-width", "416"))]
        notes.append(f"{' '.join(sorted(size))} read as --size")
    return out, notes


def _subcommands(parser: argparse.ArgumentParser, command: str) -> List[str]:
    """The verbs of ``deltaprop COMMAND`` (empty when it has none)."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    cmd = sub.choices.get(command) if sub is not None else None
    inner = next((a for a in cmd._actions if isinstance(a, argparse._SubParsersAction)), None) if cmd else None
    return list(inner.choices) if inner is not None else []


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
    try:
        argv, notes = darknet_habits(parser, argv)
    except HabitError as e:
        print(f"deltaprop: error: {e}", file=sys.stderr)
        return 2
    if notes:
        print(f"deltaprop: Darknet's habits: {'; '.join(notes)}", file=sys.stderr)
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
