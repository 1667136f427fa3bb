"""The training chart (``chart.png``): the history drawn again at every evaluation (a record holding one of
``evaluation_keys``), live while the run goes (at most every ``interval`` seconds, when a record comes), on
Ctrl-C and at the end, once the history has two records (a curve). ``draw(history, path, title)`` is the
trainer's picture (default ``explain.plot_history``: loss, accuracy and learning-rate panels; detectors pass
Darknet's loss + mAP chart). Without matplotlib the chart is skipped with one note."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import DataError
from .loop import Callback, Loop, Record

CHART = "chart.png"


def _plot_history(history, path, title):
    from ..explain import plot_history
    return plot_history(history, path, title=title)


class Chart(Callback):
    def __init__(self, path: Union[str, Path], *, title: str = "", draw: Optional[Callable] = None,
                 interval: float = 60.0, evaluation_keys=("map50", "val_loss", "eval_acc", "val_acc")) -> None:
        self.path = Path(path)
        self.title = title
        self.draw_fn = draw or _plot_history
        self.interval = float(interval)
        self.evaluation_keys = tuple(evaluation_keys)
        self._last = 0.0
        self._dead = False
        self._drawn = 0            # records in the history when the chart was last drawn

    def draw(self, loop: Loop) -> Optional[Path]:
        """Draw the history now (rank 0); None when there is no curve to draw yet, no matplotlib, or nothing new
        since the last drawing (the end of a run right after its last evaluation: one drawing, not two)."""
        n = len(loop.state.history)
        if self._dead or not loop.is_main or n < 2 or (n == self._drawn and self.path.is_file()):
            return None
        self._last = time.perf_counter()
        self._drawn = n
        try:
            return self.draw_fn(loop.state.history, self.path, self.title)
        except ImportError:
            self._dead = True
            loop.say(f"no {self.path.name}: matplotlib is not installed (pip install 'deltaprop[plot]')")
        except DataError:      # nothing drawable yet (no loss or mAP records)
            pass
        return None

    def on_start(self, loop: Loop) -> None:
        self._last = time.perf_counter()

    def on_record(self, loop: Loop, record: Record) -> None:
        if any(k in record for k in self.evaluation_keys) or time.perf_counter() - self._last >= self.interval:
            self.draw(loop)

    def on_interrupt(self, loop: Loop) -> None:
        self.draw(loop)

    def on_end(self, loop: Loop) -> None:
        self.draw(loop)


__all__ = ["Chart", "CHART"]
