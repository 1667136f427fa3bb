"""Ctrl-C's last word: after the interrupted run's checkpoint is written (Checkpoints.on_interrupt), say where the
run stopped, where its state is, and the command that continues it (on stderr, rank 0)."""
from __future__ import annotations

import sys
from typing import Any, Callable

from .loop import Callback, Loop


class ResumeCommand(Callback):
    """``command(checkpoint)``: the command line that resumes from the checkpoint written on Ctrl-C."""

    def __init__(self, command: Callable[[Any], str]) -> None:
        self.command = command

    def on_interrupt(self, loop: Loop) -> None:
        path = loop.state.checkpoint
        if path is None or not loop.is_main:
            return
        epoch, batch = loop.task.position()
        total = loop.task.total_steps
        where = (f"in epoch {epoch + 1} after batch {batch}" if epoch is not None else
                 f"at batch {batch}" + (f" of {total}" if total is not None else ""))
        print(f"interrupted {where}: the state is saved in {path}; continue with:\n  {self.command(path)}",
              file=sys.stderr, flush=True)


__all__ = ["ResumeCommand"]
