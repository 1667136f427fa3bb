"""The Darknet trainer as a task of ``deltaprop.training``'s loop, and ``run``, which gives it every callback:
progress with the ETA (Darknet's log lines and "Region" lines without a terminal), ``history.jsonl``, numbered
checkpoints (the newest ``keep``) with ``_last`` beside them, ``_final`` at the end, ``_best`` at each better
evaluation, exact resume, Ctrl-C (save, the resume command, exit 130), the divergence guard (the loss before the
update, the weights after it), multi-scale, the chart, the run folder's lock and, around it all, the rank guard.

A checkpoint is one ``.state.npz`` (``darknet.checkpoint``); ``files`` says, per role, which files it writes:
``(state file, .weights copy)`` name templates with ``{base}`` and ``{n}`` (None: that file is not written).
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import CheckpointError, ConfigError, DivergenceError
from ..training import (Checkpoints, DivergenceGuard, Evaluation, FolderLock, History, Loop, MultiScaleCallback,
                        Progress, ResumeCommand, StepOutput, Task, first_nonfinite_layer)
from ..training.history import HISTORY
from . import checkpoint as ckpt
from .yolo_stats import combined_stats, region_line

FILES: Dict[str, Tuple[Optional[str], Optional[str]]] = {
    "numbered": ("{base}_{n}.state.npz", "{base}_{n}.weights"),
    "last": ("{base}_last.state.npz", "{base}_last.weights"),
    "best": ("{base}_best.state.npz", "{base}_best.weights"),
    "final": (None, "{base}_final.weights"),
}


def _num(v) -> Optional[float]:
    return round(float(v), 6) if isinstance(v, (int, float)) and math.isfinite(v) else None


class DarknetTask(Task):
    """``trainer``'s updates on ``data`` (an iterator of ``(X, truths)`` updates). ``out``: the run folder (None:
    no files); ``loader``: the data loader whose position and size checkpoints keep (``state_dict``);
    ``settings``: what the caller stores in each checkpoint (its command-line options)."""

    def __init__(self, trainer, data: Iterator, *, out: Optional[Path], base: str,
                 files: Optional[Dict[str, Tuple[Optional[str], Optional[str]]]] = None, loader=None,
                 settings: Optional[Dict[str, Any]] = None) -> None:
        self.trainer, self.net = trainer, trainer.net
        self.data, self.out, self.base, self.loader = data, out, base, loader
        self.files = {**FILES, **(files or {})}
        self.settings = settings
        self.total_steps = trainer.max_batches
        self._t0 = self._t_last = time.perf_counter()
        self._n_last = trainer.current_batch

    @property
    def steps_done(self) -> int:
        return self.trainer.current_batch

    def done(self) -> bool:
        return self.trainer.current_batch >= self.trainer.max_batches

    def next_batch(self):
        return next(self.data)

    def forward_backward(self, batch) -> StepOutput:
        x, truth = batch
        return self.trainer.forward_backward(x.astype(self.net.dtype, copy=False), truth)

    def update(self, out: StepOutput) -> None:
        self.trainer.update(out)

    def diverged(self, out: StepOutput) -> Exception:
        return self.trainer.diverged(out)

    def nonfinite_after_update(self) -> Optional[Exception]:
        where = first_nonfinite_layer(self.net, outputs=False)
        if where is None:
            return None
        return DivergenceError(f"batch {self.steps_done}: NaN/inf after the update in {where}; lower "
                               f"learning_rate (or raise burn_in) in the cfg")

    # --- what the run shows -------------------------------------------------------------------------
    def record(self, out: StepOutput) -> Dict[str, Any]:
        now, n = time.perf_counter(), self.steps_done
        tr = self.trainer
        rec: Dict[str, Any] = {"batch": n, "seen": out.info["seen"], "loss": out.loss, "avg_loss": tr.avg_loss,
                               "lr": out.info["lr"],
                               "images_per_s": round((n - self._n_last) * tr.batch / max(now - self._t_last, 1e-9), 2),
                               "elapsed_s": round(now - self._t0, 2)}
        stats = out.info["yolo_stats"]
        if stats:
            w, h = out.info["size"]
            rec["size"] = w
            if h != w:
                rec["height"] = h
            both = combined_stats(stats)
            rec["avg_iou"], rec["recall50"] = _num(both["avg_iou"]), _num(both["recall50"])
            rec["yolo"] = [{k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
                            for k, v in st.items()} for st in stats]
        self._t_last, self._n_last = now, n
        return rec

    def postfix(self, out: StepOutput) -> Dict[str, str]:
        post = {"loss": f"{out.loss:.4f}", "avg": f"{self.trainer.avg_loss:.4f}", "lr": f"{out.info['lr']:.3g}"}
        both = combined_stats(out.info["yolo_stats"])
        if both["count"]:   # the heads together: IoU and recall of the truths trained this batch
            post["iou"], post["R50"] = f"{both['avg_iou']:.3f}", f"{both['recall50']:.2f}"
        return post

    def log_lines(self, out: StepOutput, record: Dict[str, Any]) -> List[str]:
        line = (f"{self.steps_done}: loss {out.loss:.4f}, avg {self.trainer.avg_loss:.4f}, rate "
                f"{out.info['lr']:.6g}, {record.get('images_per_s', 0.0):.1f} images/s, {out.info['seen']} images")
        return [line] + [region_line(st) for st in out.info["yolo_stats"]]

    def close(self) -> None:
        if self.loader is not None and hasattr(self.loader, "close"):
            self.loader.close()

    # --- checkpoints --------------------------------------------------------------------------------
    def _paths(self, role: str, number: Optional[int]) -> Tuple[Optional[Path], Optional[Path]]:
        names = self.files.get(role, (None, None))
        return tuple(None if t is None else self.out / t.format(base=self.base, n=number) for t in names)

    def save(self, role: str, number: Optional[int], loop: Loop):
        """The state first (the checkpoint itself, atomic), then its ``.weights`` copy (atomic); the path of
        the checkpoint (its state file; the ``.weights`` for a role that writes no state)."""
        if self.out is None:
            return None
        from .weights import save_weights
        sp, wp = self._paths(role, number)
        extra: Dict[str, Any] = {"settings": self.settings} if self.settings is not None else {}
        if self.loader is not None and hasattr(self.loader, "state_dict"):
            extra["loader"] = self.loader.state_dict()
        if sp is not None:
            ckpt.save_state(sp, self.trainer, loop, extra)
        if wp is not None:
            save_weights(self.net, wp)
        return sp if sp is not None else wp

    def numbered_checkpoints(self) -> Dict[int, List[Path]]:
        if self.out is None or not self.out.is_dir():
            return {}
        pattern = re.compile(re.escape(self.base) + r"_(\d+)(\.state\.npz|\.weights)$")
        found: Dict[int, List[Path]] = {}
        for p in self.out.iterdir():
            m = pattern.match(p.name)
            if m:
                found.setdefault(int(m.group(1)), []).append(p)
        return found

    # --- resume -------------------------------------------------------------------------------------
    def resume(self, path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        """Load checkpoint ``path`` (a state file, or a ``.weights`` with its state beside it) into the
        trainer, its net, the loader; (the history so far, the loop's state)."""
        from ..io import load_checkpoint
        sp = open_checkpoint(path, self.base)[0] if str(path).endswith(".weights") else Path(path)
        ck = load_checkpoint(sp, model=self.net, optimizer=self.trainer.optimizer, restore_rng=True)
        state = ckpt.run_state(ck)
        self.trainer.load_state(state)
        if self.loader is not None and state.get("loader") and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["loader"])
            size = (getattr(self.loader, "width", None), getattr(self.loader, "height", None))
            if None not in size and size != tuple(self.net.input_shape[2:0:-1]):
                self.net.resize(*size)
        self._n_last = self.trainer.current_batch
        return list(ck.history), state


def open_checkpoint(path, base: Optional[str] = None) -> Tuple[Path, Dict[str, Any]]:
    """(the state file, its run state) of checkpoint ``path``: ``path`` itself when it is a state file, else
    the ``.state.npz`` beside a ``.weights``, checked to be from the same moment (the same ``seen``): a pair
    that disagrees (a save killed between its two files) raises CheckpointError naming the newest whole
    checkpoint of the folder. CheckpointError also when there is no state, or it is not a Darknet run's."""
    from ..io import read_checkpoint
    p = Path(path)
    if not p.name.endswith(".weights"):
        return p, ckpt.run_state(read_checkpoint(p))
    sp = ckpt.state_path(p)
    if not sp.is_file():
        raise CheckpointError(f"{p}: no {sp.name} beside it (a plain Darknet .weights: nothing to resume)")
    state: Dict[str, Any] = {}
    try:
        state = ckpt.run_state(read_checkpoint(sp))
        seen = ckpt.weights_seen(p)
        whole = seen == int(state["seen"])
        why = f"{sp.name} was saved at seen={state['seen']} but {p.name} has seen={seen}"
    except CheckpointError as e:
        whole, why = False, str(e)
    if whole:
        return sp, state
    stem = base or p.stem.rsplit("_", 1)[0]
    best = ckpt.newest_checkpoint(p.parent, stem)
    hint = (f"; the newest whole checkpoint is {best.name} (batch {best.batch}): resume from it"
            if best is not None else "; no other whole checkpoint of this run is in the folder")
    raise CheckpointError(f"{p}: not a whole checkpoint ({why}: a save was interrupted between the two files)"
                          f"{hint}")


def run(trainer, data: Iterator, *, out_dir=None, base: str = "model", save_every: int = 1000,
        keep: Optional[int] = 3, log_every: int = 10, progress: bool = True, log: Callable[[str], None] = print,
        stop=None, callbacks: Sequence = (), resume=None, evaluation: Optional[Evaluation] = None, loader=None,
        files=None, settings: Optional[Dict[str, Any]] = None, resume_command: Optional[Callable] = None,
        chart=None) -> List[Dict[str, Any]]:
    """Train ``trainer`` on ``data`` until ``max_batches`` with every callback (module docstring); the history.
    ``resume``: a checkpoint to continue from; ``evaluation``: an ``Evaluation`` (accuracy, mAP);
    ``resume_command(path)``: the command printed on Ctrl-C; ``chart``: a ``Chart``."""
    if trainer.max_batches <= 0:
        raise ConfigError("max_batches is 0: give the cfg a max_batches (or --epochs), else Darknet "
                          "trains forever")
    out = Path(out_dir) if out_dir is not None and trainer.dp.is_main else None
    task = DarknetTask(trainer, data, out=out, base=base, files=files, loader=loader, settings=settings)
    history, state = ([], None) if resume is None else task.resume(resume)
    start = trainer.current_batch
    if start >= trainer.max_batches and trainer.dp.is_main and log is not None:
        log(f"already at batch {start} ≥ max_batches {trainer.max_batches}: nothing to train (--clear restarts "
            f"the count)")
    net = trainer.net

    def resize(w: int, h: int) -> None:
        net.resize(w, h)
        if hasattr(loader, "set_size"):
            loader.set_size(w, h)

    parts: List = [FolderLock(out)] if out is not None else []
    parts.append(DivergenceGuard(check_weights=True))
    if trainer.scales is not None:
        parts.append(MultiScaleCallback(trainer.scales, resize, lambda: tuple(net.input_shape[2:0:-1])))
    parts += [History(out / HISTORY if out is not None else None, every=log_every),
              Progress(bar=progress, every=log_every)]
    if evaluation is not None:
        parts.append(evaluation)
    parts.append(Checkpoints(every=save_every or None, keep=keep))
    if chart is not None:
        parts.append(chart)
    if resume_command is not None:
        parts.append(ResumeCommand(resume_command))
    parts += list(callbacks)
    return Loop(task, parts, comm=trainer.dp.comm, stop=stop, log=log, history=history, state=state).run()


__all__ = ["DarknetTask", "run", "open_checkpoint", "FILES"]
