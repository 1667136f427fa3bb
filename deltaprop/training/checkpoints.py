"""When checkpoints are written and how many stay. The task writes each one (``Task.save``) as ONE atomic unit:
a single ``.npz`` holding the weights and everything an exact resume needs (optimizer, scheduler, random state,
counters, the loader's position, the callbacks' states, the history), written to a temporary file and renamed;
a Darknet ``.weights`` beside it is a copy for Darknet's tools, written after it.

- ``every`` updates: a numbered checkpoint (``numbered``), and ``last`` with it;
- at each epoch end (``at_epoch_end``): ``last``;
- when an evaluation improves (``Loop.save("best")``, from Evaluation): ``best``;
- on Ctrl-C: ``last`` at the batch boundary where the run stopped (its path is then in ``loop.state.checkpoint``);
- at the end, when the run trained: ``last`` and ``final`` (``final_roles``).

``keep``: the newest ``keep`` numbered checkpoints stay, older ones (of this run, or of the run it resumes) are
removed after the new one is complete; ``best``, ``last`` and ``final`` are always kept. None keeps them all.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .loop import Callback, Loop, Record, StepOutput

KEEP = 3     # numbered checkpoints kept when nothing is said


def resolve_keep(keep) -> Optional[int]:
    """A ``--keep`` value as ``Checkpoints`` takes it: the count, None for ``"all"``, ``KEEP`` when not given."""
    return None if keep == "all" else (KEEP if keep is None else int(keep))


class Checkpoints(Callback):
    saves_checkpoints = True       # Loop.save goes through this callback

    def __init__(self, *, every: Optional[int] = None, keep: Optional[int] = None, at_epoch_end: bool = False,
                 last_with_every: bool = True, final_roles: Sequence[str] = ("last", "final")) -> None:
        if keep is not None and int(keep) < 1:
            raise ValueError(f"keep must be at least 1 (or None for all), got {keep}")
        self.every = every
        self.keep = None if keep is None else int(keep)
        self.at_epoch_end = at_epoch_end
        self.last_with_every = last_with_every
        self.final_roles = tuple(final_roles)

    def save(self, loop: Loop, role: str, number: Optional[int] = None):
        """Write checkpoint ``role`` (rank 0; the others return None) and remember its path."""
        if not loop.is_main:
            return None
        path = loop.task.save(role, number, loop)
        if path is not None:
            loop.state.checkpoint = path
        return path

    def _prune(self, loop: Loop) -> None:
        if self.keep is None or not loop.is_main:
            return
        numbered = loop.task.numbered_checkpoints()
        for n in sorted(numbered)[:-self.keep]:
            for f in numbered[n]:
                Path(f).unlink(missing_ok=True)

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        task = loop.task
        n = task.steps_done
        if not self.every or n % self.every or (task.total_steps is not None and n >= task.total_steps):
            return
        self.save(loop, "numbered", n)
        if self.last_with_every:
            self.save(loop, "last")
        self._prune(loop)

    def on_epoch_end(self, loop: Loop, record: Record) -> None:
        if self.at_epoch_end:
            self.save(loop, "last")

    def on_interrupt(self, loop: Loop) -> None:
        loop.state.checkpoint = None
        self.save(loop, "last")

    def on_end(self, loop: Loop) -> None:
        if loop.task.steps_done == loop.state.start_step:    # nothing trained: nothing new to write
            return
        for role in self.final_roles:
            self.save(loop, role)


__all__ = ["Checkpoints", "resolve_keep", "KEEP"]
