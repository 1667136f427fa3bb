"""Ctrl-C during training: the first SIGINT is a request to stop at the next batch boundary (the state is then
consistent and can be saved); a second one raises at once, as Python does by default.

``StopRequest.active()`` installs the handler (main thread only) for a block; ``TrainingInterrupted`` (a
KeyboardInterrupt, so the command line exits with 130) names the checkpoint written when the loop stopped.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run stopped at a batch boundary; ``checkpoint`` is the resumable file written
    then (None when the run writes no files), ``epoch`` the epoch it stopped in (None for runs counted in
    batches), ``batch`` the batches done (of that epoch, or in all)."""

    def __init__(self, checkpoint: Optional[Path], epoch: Optional[int], batch: int) -> None:
        super().__init__(f"interrupted in epoch {epoch} after batch {batch}" if epoch is not None else
                         f"interrupted after batch {batch}")
        self.checkpoint, self.epoch, self.batch = checkpoint, epoch, batch


class StopRequest:
    """While active (main thread only), the first SIGINT sets ``requested`` instead of raising, so the loop can
    stop at the next batch boundary with a consistent state; a second SIGINT raises at once as usual.
    ``active()`` nests: a caller may activate it before a loop that activates it again (no SIGINT is lost
    in between)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._depth = 0

    def _handler(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def active(self) -> Iterator["StopRequest"]:
        if threading.current_thread() is not threading.main_thread() or self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handler)
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)


__all__ = ["StopRequest", "TrainingInterrupted"]
