"""The run's history as JSON lines: one record per line (an epoch's numbers, or every ``every`` updates, and
each evaluation), appended as they come; at the start the file is rewritten (atomically) with the records the
run already has, so a resumed run continues the file of the run it resumes, without the records written after
its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from ..atomic import atomic_write_text
from .loop import Callback, Loop, Record, StepOutput

HISTORY = "history.jsonl"


def write_history(path: Path, records) -> None:
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in records))


def read_history(path: Path) -> list:
    """The records of a history file (lines that are not JSON objects are skipped)."""
    out = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class History(Callback):
    """Writes ``path`` (rank 0; None: records are kept in memory only). ``every``: an update's record
    (``task.record``) every that many updates and after the last (None: only the records others add, such
    as epoch records and evaluations)."""

    def __init__(self, path: Optional[Union[str, Path]], every: Optional[int] = None) -> None:
        self.path = Path(path) if path is not None else None
        self.every = every

    def on_start(self, loop: Loop) -> None:
        if self.path is not None and loop.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_history(self.path, loop.state.history)

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        if not self.every or out.skipped:
            return
        task = loop.task
        n = task.steps_done
        if n % self.every == 0 or (task.total_steps is not None and n >= task.total_steps):
            loop.record(task.record(out))

    def on_record(self, loop: Loop, record: Record) -> None:
        if self.path is not None and loop.is_main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


__all__ = ["History", "HISTORY", "write_history", "read_history"]
