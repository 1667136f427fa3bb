"""Darknet cfg helpers of the command line: the network size a cfg allows (its total stride) and the one
parameter count that ``summary`` and ``convert`` both print, with what it counts."""
from __future__ import annotations

from typing import Optional, Tuple

from ..errors import ConfigError


def total_stride(plan) -> int:
    """How many input pixels one cell of the network's coarsest map spans (32 for YOLOv3): the width and
    height must be multiples of it for the route/shortcut maps to line up."""
    _, _, w = plan.input_shape
    coarsest = min((s.out_shape[2] for s in plan.specs if s.out_shape[2] > 0), default=w)
    return max(1, w // max(coarsest, 1))


def plan_sized(cfg: str, width: Optional[int] = None, height: Optional[int] = None,
               channels: Optional[int] = None):
    """``plan_cfg`` with the size overrides; when the cfg refuses a size that is not a multiple of its total
    stride, the error says that (naming the option) instead of the cfg line where the maps stop lining up."""
    from ..darknet import plan_cfg
    try:
        return plan_cfg(cfg, width=width, height=height, channels=channels)
    except ConfigError:
        if width is None and height is None:
            raise
        try:
            stride = total_stride(plan_cfg(cfg, channels=channels))
        except ConfigError:
            stride = 0
        for option, value in (("--width", width), ("--height", height)):
            if stride > 1 and value is not None and value % stride:
                raise ConfigError(f"{option} {value}: must be a multiple of {stride} for {cfg} (its total stride), "
                                  f"e.g. {max(stride, value // stride * stride)} or "
                                  f"{(value // stride + 1) * stride}") from None
        raise


def running_statistics(plan, upto: Optional[int] = None) -> int:
    """Batch-norm rolling means and variances of the first ``upto`` layers (all by default): stored in .weights
    files, not trained."""
    return sum(2 * s.out_shape[0] for s in plan.specs[:upto] if s.attrs.get("batch_normalize"))


def parameter_counts(plan, upto: Optional[int] = None) -> Tuple[int, int]:
    """(trainable parameters, batch-norm running statistics) of the first ``upto`` layers (all by default);
    their sum is what a .weights file of those layers holds."""
    running = running_statistics(plan, upto)
    return sum(s.n_params for s in plan.specs[:upto]) - running, running


def count_line(trainable: int, running: int) -> str:
    """The parameter count as ``summary`` and ``convert`` print it, saying what each number counts."""
    if not running:
        return f"{trainable:,} trainable parameters (= the values in a .weights file)"
    return (f"{trainable:,} trainable parameters + {running:,} batch-norm running statistics = "
            f"{trainable + running:,} values in a .weights file")


__all__ = ["total_stride", "plan_sized", "running_statistics", "parameter_counts", "count_line"]
