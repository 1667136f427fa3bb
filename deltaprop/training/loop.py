"""The one training loop. A *task* knows its model and data (what one update is); *callbacks* do everything
around the updates (progress, history, checkpoints, Ctrl-C, the divergence guard, multi-scale, evaluation, the
chart, the run folder's lock). ``deltaprop.train.fit``, ``DarknetTrainer`` and ``DetectorTraining`` are tasks
with their callbacks.

One pass of the loop, while the task has updates to do::

    Ctrl-C asked?            -> on_interrupt (checkpoint, chart, resume command), TrainingInterrupted
    before_step              (multi-scale: a new input size before the batch is read)
    batch = task.next_batch()
    out = task.forward_backward(batch)      the loss and the gradients of one update (docs/equations.md §1-§5)
    after_backward(out)      (the divergence guard: a non-finite loss stops here, before the weights change)
    task.update(out)                         the optimizer's step (§7, Darknet's §10)
    after_step(out)          (progress, history, evaluation, checkpoints)
    end of an epoch?         -> measure(record) (evaluation), record (history, chart), on_epoch_end (checkpoints)

then on_end (final checkpoints, the chart) and, always, on_close (progress bar, lock). The whole run is inside
``distributed.failure_guard``: under ``mpirun`` a rank that fails ends every rank with its message (a silent
rank is named by the communicator's timeout); only rank 0 writes files and prints (``Loop.is_main``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..distributed import failure_guard, world
from .interrupt import StopRequest, TrainingInterrupted

Record = Dict[str, Any]


@dataclass
class StepOutput:
    """What one update reports: its loss (non-finite: diverged), the samples it used (all ranks together),
    whatever the task wants its callbacks to see (``info``: learning rate, per-head statistics, the batch for a
    divergence diagnosis...), and ``skipped`` for a rank that had no rows of a short last batch."""
    loss: float
    samples: int
    info: Dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


class Task:
    """What a trainer gives the loop. Subclasses define the first five methods; the rest have defaults.

    ``steps_done``: updates done so far (fit: optimizer steps; Darknet: the batch number ``seen/batch``), and
    ``total_steps`` the number the run ends at (None when unknown)."""

    steps_done: int = 0
    total_steps: Optional[int] = None

    def done(self) -> bool:
        raise NotImplementedError

    def next_batch(self) -> Any:
        raise NotImplementedError

    def forward_backward(self, batch: Any) -> StepOutput:
        raise NotImplementedError

    def update(self, out: StepOutput) -> None:
        raise NotImplementedError

    def diverged(self, out: StepOutput) -> Exception:
        """The DivergenceError of a non-finite loss, naming the step and the first non-finite layer."""
        raise NotImplementedError

    def nonfinite_after_update(self) -> Optional[Exception]:
        """A DivergenceError when the update left a weight non-finite (None: all finite, or not checked)."""
        return None

    # --- optional -----------------------------------------------------------------------------------
    def epoch_done(self) -> bool:
        """Whether the update just made ended an epoch (then ``end_epoch`` gives its record)."""
        return False

    def end_epoch(self) -> Record:
        raise NotImplementedError

    def position(self) -> Tuple[Optional[int], int]:
        """(epoch, batches done in it) for an epoch-counted task, else (None, updates done)."""
        return None, self.steps_done

    def save(self, role: str, number: Optional[int], loop: "Loop") -> Optional[Any]:
        """Write checkpoint ``role`` ("last", "best", "final", "numbered" with ``number``) holding
        ``loop.state_dict()``; return its path (None: this task writes no such checkpoint)."""
        return None

    def numbered_checkpoints(self) -> Dict[int, List[Any]]:
        """{number: [its files]} of the numbered checkpoints in the run folder (for ``keep``)."""
        return {}

    def record(self, out: StepOutput) -> Record:
        """The history record of the update just made."""
        return {"step": self.steps_done, "loss": out.loss}

    def postfix(self, out: StepOutput) -> Dict[str, str]:
        """What the progress bar shows after the update."""
        return {"loss": f"{out.loss:.4f}"}

    def log_lines(self, out: StepOutput, record: Record) -> List[str]:
        """The log lines of an update when there is no progress bar (the first one gets the ETA)."""
        return [f"{self.steps_done}: loss {out.loss:.4f}"]

    def epoch_line(self, record: Record) -> Optional[str]:
        return None

    def close(self) -> None:
        """Release what the task holds (loader threads)."""


class Callback:
    """A part of the loop (see the module docstring for when each method is called). ``key`` names the
    callback's state in a checkpoint (None: it keeps none)."""

    key: Optional[str] = None

    def on_start(self, loop: "Loop") -> None: ...

    def before_step(self, loop: "Loop") -> None: ...

    def after_backward(self, loop: "Loop", out: StepOutput) -> None: ...

    def after_step(self, loop: "Loop", out: StepOutput) -> None: ...

    def measure(self, loop: "Loop", record: Record) -> None: ...

    def on_record(self, loop: "Loop", record: Record) -> None: ...

    def on_epoch_end(self, loop: "Loop", record: Record) -> None: ...

    def on_interrupt(self, loop: "Loop") -> None: ...

    def on_end(self, loop: "Loop") -> None: ...

    def on_close(self, loop: "Loop") -> None: ...

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


@dataclass
class LoopState:
    """What the callbacks share: the history so far, the step this process started at, the clock, the last
    checkpoint written, whether the last evaluation improved, and whether a callback ended the run."""
    history: List[Record] = field(default_factory=list)
    start_step: int = 0
    started: float = 0.0
    checkpoint: Optional[Any] = None
    improved: bool = False
    finished: bool = False
    interrupted: bool = False


class Loop:
    """``Loop(task, callbacks).run()`` trains until the task is done (see the module docstring).

    ``history``: the records of the run so far (a resumed run's); ``state``: the callbacks' states from a
    checkpoint (``state_dict()`` of the interrupted loop); ``comm``: the communicator (default ``world()``);
    ``stop``: a ``StopRequest`` the caller activated earlier; ``log``: where lines go (rank 0 only)."""

    def __init__(self, task: Task, callbacks: Sequence[Callback], *, comm=None, stop: Optional[StopRequest] = None,
                 log: Optional[Callable[[str], None]] = print, history: Optional[List[Record]] = None,
                 state: Optional[Dict[str, Any]] = None) -> None:
        self.task = task
        self.callbacks = list(callbacks)
        self.comm = comm or world()
        self.stop = stop if stop is not None else StopRequest()
        self._log = log
        self.state = LoopState(history=list(history or []))
        if state:
            self.load_state_dict(state)

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that prints and writes."""
        return self.comm.is_main

    def say(self, line: str) -> None:
        if self._log is not None and self.is_main:
            self._log(line)

    def callback(self, kind: type) -> Optional[Callback]:
        """The first callback of type ``kind`` (None when the loop has none)."""
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    def save(self, role: str) -> Optional[Any]:
        """Write checkpoint ``role`` through the loop's checkpoint callback (``Checkpoints``; None without one)."""
        saver = next((c for c in self.callbacks if getattr(c, "saves_checkpoints", False)), None)
        return saver.save(self, role) if saver is not None else None

    # --- state for checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """The callbacks' states (best value so far, multi-scale counter...) for a checkpoint."""
        return {"callbacks": {c.key: c.state_dict() for c in self.callbacks if c.key}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = (state or {}).get("callbacks", {})
        for c in self.callbacks:
            if c.key and c.key in saved:
                c.load_state_dict(saved[c.key])

    # --- events -------------------------------------------------------------------------------------
    def _fire(self, event: str, *args) -> None:
        for c in self.callbacks:
            getattr(c, event)(self, *args)

    def record(self, rec: Record) -> None:
        """Add a record to the history (written by History, drawn by Chart)."""
        self.state.history.append(rec)
        self._fire("on_record", rec)

    def _interrupt(self) -> None:
        self.state.interrupted = True
        self._fire("on_interrupt")
        epoch, batch = self.task.position()
        raise TrainingInterrupted(self.state.checkpoint, None if epoch is None else epoch + 1, batch)

    def run(self) -> List[Record]:
        """Train until the task is done, a callback ends the run (early stopping) or Ctrl-C; the history."""
        task = self.task
        with failure_guard(self.comm), self.stop.active():
            try:
                self.state.start_step = task.steps_done
                self.state.started = time.perf_counter()
                self._fire("on_start")
                while not task.done() and not self.state.finished:
                    if self.stop.requested:     # at a batch boundary: the state is consistent
                        self._interrupt()
                    self._fire("before_step")
                    out = task.forward_backward(task.next_batch())
                    self._fire("after_backward", out)
                    task.update(out)
                    self._fire("after_step", out)
                    if task.epoch_done():
                        rec = task.end_epoch()
                        self.state.improved = False
                        self._fire("measure", rec)
                        self.record(rec)
                        self._fire("on_epoch_end", rec)
                self._fire("on_end")
            finally:
                self._fire("on_close")
                task.close()
        return self.state.history


__all__ = ["Loop", "LoopState", "Task", "Callback", "StepOutput", "Record"]
