"""Progress and the time left: a tqdm bar on a terminal, else log lines every ``every`` updates that end with the
ETA (so a log file of a long run says how far it is).

The ETA is (updates left) × (seconds per update since this process started training); the rate is the task's
samples per second over the same span.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

from .loop import Callback, Loop, Record, StepOutput


def duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 5 s`` or ``2 h 3 min``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {(s % 3600) // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{seconds:.1f} s"


def eta(loop: Loop) -> Optional[float]:
    """Seconds left at the pace of this process so far (None before the first update or without a total)."""
    task, st = loop.task, loop.state
    done = task.steps_done - st.start_step
    if task.total_steps is None or done <= 0:
        return None
    per = (time.perf_counter() - st.started) / done
    return max(0, task.total_steps - task.steps_done) * per


def on_terminal() -> bool:
    """Whether stderr is a terminal (where a progress bar can redraw itself)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress(Callback):
    """``bar``: a tqdm bar (per epoch over its samples with ``per_epoch``, else one over all updates); without a
    bar, ``task.log_lines`` every ``every`` updates, the first ending in the ETA, but no more often than every
    ``min_interval`` seconds (0: every ``every`` updates, and after the last one). Epoch lines
    (``task.epoch_line``) are printed at each epoch end either way."""

    def __init__(self, *, bar: bool, every: Optional[int] = 10, min_interval: float = 0.0, per_epoch: bool = False,
                 epoch_total: Optional[int] = None, epochs: Optional[int] = None) -> None:
        self.bar_wanted = bar
        self.every = every
        self.min_interval = float(min_interval)
        self.per_epoch = per_epoch
        self.epoch_total = epoch_total
        self.epochs = epochs
        self.bar = None
        self._last_line = 0.0
        self._last_post = 0.0

    def _open(self, loop: Loop) -> None:
        if not self.bar_wanted or not loop.is_main:
            return
        from tqdm.auto import tqdm
        task = loop.task
        if self.per_epoch:
            epoch, _ = task.position()
            self.bar = tqdm(total=self.epoch_total, desc=f"epoch {epoch + 1}/{self.epochs}", unit="samples",
                            unit_scale=True, leave=True, dynamic_ncols=True)
            done = getattr(task, "samples_done_in_epoch", 0)
            if done:
                self.bar.update(done)
        else:
            left = None if task.total_steps is None else max(0, task.total_steps - task.steps_done)
            if left == 0:
                return
            start = loop.state.start_step
            self.bar = tqdm(total=left, unit="batch", desc=f"train from {start}" if start else "train",
                            dynamic_ncols=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_start(self, loop: Loop) -> None:
        self._last_line = time.perf_counter()
        self._open(loop)

    def before_step(self, loop: Loop) -> None:
        if self.bar is None and self.per_epoch and self.bar_wanted:
            self._open(loop)

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        if not loop.is_main:
            return
        task = loop.task
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(out.samples if self.per_epoch else 1)
            if now - self._last_post > 0.5 and not out.skipped:
                self._last_post = now
                self.bar.set_postfix(task.postfix(out), refresh=False)
            return
        n = task.steps_done
        last = task.total_steps is not None and n >= task.total_steps and not self.min_interval
        if out.skipped or not self.every or (n % self.every and not last):
            return
        if now - self._last_line < self.min_interval and not last:
            return
        self._last_line = now
        lines = task.log_lines(out, loop.state.history[-1] if loop.state.history else {})
        left = eta(loop)
        if lines and left is not None and not last:
            lines[0] += f", ETA {duration(left)}"
        for line in lines:
            loop.say(line)

    def on_epoch_end(self, loop: Loop, record: Record) -> None:
        if self.per_epoch:
            self._close()
        line = loop.task.epoch_line(record)
        if line:
            left = eta(loop)
            loop.say(line + (f" | ETA {duration(left)}" if left and not loop.task.done() else ""))

    def write(self, loop: Loop, line: str) -> None:
        """A line that must not break the bar."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            loop.say(line)

    def on_interrupt(self, loop: Loop) -> None:
        self._close()

    def on_close(self, loop: Loop) -> None:
        self._close()


__all__ = ["Progress", "duration", "eta", "on_terminal"]
