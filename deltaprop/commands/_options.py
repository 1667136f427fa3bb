"""Option types of the ``deltaprop`` command line: each checks its value when the command line is parsed and
refuses it with one line naming the allowed values (argparse prefixes the option: ``argument --lr: ...``).

``positive_int``, ``nonneg_int``, ``int_range(lo, hi)``, ``float_range(lo, hi, lo_open, hi_open)`` (finite
numbers only: ``nan`` and ``inf`` are refused everywhere), ``keep_count`` (an integer ≥ 1 or ``all``)."""
from __future__ import annotations

import argparse
import math
from typing import Callable, Optional


def _fmt(x: float) -> str:
    return f"{x:g}"


def _bounded(kind: type, lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool
             ) -> Callable[[str], float]:
    """An argparse type: a ``kind`` (int or float) value in the interval [lo, hi] (``lo_open``/``hi_open``:
    that end excluded; None: unbounded); floats must be finite. The one home of both range checks."""
    noun = "an integer" if kind is int else "a finite number"
    fmt = str if kind is int else _fmt
    if lo is not None and hi is not None:
        allowed = (f"an integer from {lo} to {hi}" if kind is int else
                   f"a number in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}")
    elif lo is not None:
        allowed = f"{noun} {'>' if lo_open else '≥'} {fmt(lo)}"
    elif hi is not None:
        allowed = f"{noun} {'<' if hi_open else '≤'} {fmt(hi)}"
    else:
        allowed = noun

    def parse(text: str):
        try:
            v = int(text, 10) if kind is int else float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        bad = kind is float and not math.isfinite(v)
        if lo is not None:
            bad = bad or (v <= lo if lo_open else v < lo)
        if hi is not None:
            bad = bad or (v >= hi if hi_open else v > hi)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return v
    parse.__name__ = kind.__name__
    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def int_range(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (either end open when None)."""
    return _bounded(int, lo, hi, False, False)  # type: ignore[return-value]


def float_range(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
                hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval [lo, hi] (``lo_open``/``hi_open``: (lo, or , hi))."""
    return _bounded(float, lo, hi, lo_open, hi_open)


def keep_count(text: str):
    """An argparse type: how many numbered checkpoints stay, an integer ≥ 1 or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        v = int(text, 10)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 1 or 'all', got {text!r}")
    return v


positive_int = int_range(1)
nonneg_int = int_range(0)
positive_float = float_range(0.0, lo_open=True)
nonneg_float = float_range(0.0)
unit_interval = float_range(0.0, 1.0)                  # thresholds, probabilities: [0, 1]
unit_fraction = float_range(0.0, 1.0, hi_open=True)    # a held-out fraction: [0, 1)
momentum_range = float_range(0.0, 1.0, hi_open=True)   # SGD momentum: [0, 1)

__all__ = ["int_range", "float_range", "keep_count", "positive_int", "nonneg_int", "positive_float", "nonneg_float",
           "unit_interval", "unit_fraction", "momentum_range"]
