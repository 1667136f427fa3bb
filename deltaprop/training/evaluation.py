"""Periodic evaluation: accuracy on held-out data for classifiers, mAP on the valid list for detectors.

Every ``every`` updates (and after the last), or at each epoch end, ``measure()`` gives numbers that go into the
history; the best value of ``monitor`` so far is kept (in checkpoints too) and each improvement writes the
``best`` checkpoint. With ``patience``, the run ends after that many evaluations without improvement (early
stopping)."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

from .loop import Callback, Loop, Record, StepOutput


def better(value: Optional[float], best: Optional[float], mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` ("min": lower is better, "max": higher)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Evaluation(Callback):
    """``measure``: a function returning ``{name: value}`` (None: the numbers are already in the epoch record,
    e.g. the training loss). ``every``: updates between measurements; ``at_epoch_end``: measure at each epoch
    end instead (the numbers join that epoch's record). ``announce(updates done, values, path of the new best
    checkpoint or None)``: the line printed after a measurement (None: nothing printed). ``step_key``: the record's name
    for the update count."""

    key = "evaluation"

    def __init__(self, measure: Optional[Callable[[], Dict[str, Any]]], *, monitor: str, mode: str = "max",
                 every: Optional[int] = None, at_epoch_end: bool = False, min_delta: float = 0.0,
                 patience: Optional[int] = None, step_key: str = "batch",
                 announce: Optional[Callable[[int, Dict[str, Any], Any], Optional[str]]] = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.measure_fn = measure
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.every, self.at_epoch_end = every, at_epoch_end
        self.patience = patience
        self.step_key = step_key
        self.announce = announce
        self.best: Optional[float] = None
        self.bad = 0
        self.stopped_early = False

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.bad = state.get("best"), int(state.get("bad", 0))

    def _judge(self, loop: Loop, values: Dict[str, Any]) -> bool:
        improved = better(values.get(self.monitor), self.best, self.mode, self.min_delta)
        if improved:
            self.best, self.bad = values[self.monitor], 0
        else:
            self.bad += 1
        loop.state.improved = improved
        if self.patience is not None and self.bad >= self.patience:
            self.stopped_early = True
            loop.state.finished = True
        return improved

    def _say(self, loop: Loop, values: Dict[str, Any], path) -> None:
        line = self.announce(loop.task.steps_done, values, path) if self.announce is not None else None
        if line:
            from .progress import Progress
            bar = loop.callback(Progress)
            bar.write(loop, line) if bar is not None else loop.say(line)

    # --- every N updates ----------------------------------------------------------------------------
    def after_step(self, loop: Loop, out: StepOutput) -> None:
        if not self.every or self.at_epoch_end or self.measure_fn is None:
            return
        task = loop.task
        n = task.steps_done
        if n % self.every and not (task.total_steps is not None and n >= task.total_steps):
            return
        values = dict(self.measure_fn())
        loop.record({self.step_key: n, **values})
        path = loop.save("best") if self._judge(loop, values) else None
        self._say(loop, values, path)

    # --- at each epoch end --------------------------------------------------------------------------
    def measure(self, loop: Loop, record: Record) -> None:
        if not self.at_epoch_end:
            return
        if self.measure_fn is not None:
            record.update(self.measure_fn())
        self._judge(loop, record)

    def on_epoch_end(self, loop: Loop, record: Record) -> None:
        if self.at_epoch_end and loop.state.improved:
            path = loop.save("best")
            self._say(loop, record, path)

    def on_end(self, loop: Loop) -> None:
        if self.stopped_early:
            loop.say(f"early stop: {self.monitor} did not improve for {self.patience} epoch(s); best {self.best:.4f}")


__all__ = ["Evaluation", "better"]
