"""The task of ``deltaprop.train.fit``: a model, a loss, an optimizer (and a scheduler) on mini-batches of a
``DataLoader``, counted in epochs.

One update is the textbook one: ``out = model(x)``, ``C = loss(out, y)``, ``model.backward(loss.backward())``
(every layer adds its parameter gradients, docs/equations.md §1-§5), ``optimizer.step()`` (§7). Under ``mpirun``
each rank runs its shard of every global batch and ``DataParallel`` sums the gradients (docs/distributed.md).

A checkpoint (``last.npz``, ``best.npz``) holds the weights, the optimizer, the scheduler, the global random
state, the counters and the history, and, mid-epoch, the batch position and the epoch's running sums: the batch
order of every epoch comes from ``(seed, epoch)`` (``DataLoader.set_epoch``), so resuming continues
bit-identically.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .. import backend
from ..data.loader import DataLoader
from ..errors import DivergenceError, NonFiniteError
from ..io import save_checkpoint
from .divergence import diagnose_nonfinite, finite
from .loop import Loop, Record, StepOutput, Task

Data = Union[DataLoader, Tuple[np.ndarray, np.ndarray]]


def n_correct(out: np.ndarray, y) -> Optional[int]:
    """Correct arg-max predictions for class-index targets; None when that makes no sense."""
    if y is None or not isinstance(out, np.ndarray) or out.ndim != 2:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        return None
    return int(np.count_nonzero(out.argmax(axis=1) == y))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy from logits (log-sum-exp, float64): the default evaluation loss."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def as_loader(data: Data, batch_size: int, shuffle: bool = False, seed: Optional[int] = 0) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return DataLoader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    raise TypeError(f"data must be a DataLoader or an (X, y) pair, got {type(data).__name__}")


def evaluate(model, data: Data, loss=None, batch_size: int = 1000) -> Tuple[float, Optional[float]]:
    """(mean loss, accuracy) of ``model`` on ``data`` in eval mode without caches (``no_grad``).

    ``loss=None`` uses the softmax cross-entropy of the logits; accuracy is None for non-class targets."""
    loader = as_loader(data, batch_size)
    was_training = model.training
    model.eval()
    total, loss_sum, correct, acc_ok = 0, 0.0, 0, True
    try:
        with backend.no_grad():
            for b in range(len(loader)):
                sl = slice(b * loader.batch_size, (b + 1) * loader.batch_size)
                xb, yb = loader.X[sl], (None if loader.y is None else loader.y[sl])
                out = model(xb)
                n = len(xb)
                c = n_correct(out, yb)
                if loss is not None:
                    loss_sum += float(loss(out, yb)) * n
                elif c is not None:
                    loss_sum += cross_entropy(out, np.asarray(yb)) * n
                else:
                    loss_sum = math.nan
                if c is None:
                    acc_ok = False
                else:
                    correct += c
                total += n
    finally:
        model.train(was_training)
    if total == 0:
        return math.nan, None
    return loss_sum / total, (correct / total if acc_ok else None)


def current_lr(optimizer) -> Optional[float]:
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def epoch_line(rec: Record, epochs: int) -> str:
    """``epoch 3/10: train loss 0.1234 acc 0.9612 | val loss ... acc ... | lr 0.05 | 12,345 samples/s``."""
    s = f"epoch {rec['epoch']}/{epochs}: train loss {rec['train_loss']:.4f}"
    if rec.get("train_acc") is not None:
        s += f" acc {rec['train_acc']:.4f}"
    if "val_loss" in rec:
        s += f" | val loss {rec['val_loss']:.4f}"
        if rec.get("val_acc") is not None:
            s += f" acc {rec['val_acc']:.4f}"
    if rec.get("lr") is not None:
        s += f" | lr {rec['lr']:.3g}"
    if rec.get("samples_per_s"):
        s += f" | {rec['samples_per_s']:,.0f} samples/s"
    return s


class EpochSums:
    """An epoch's running sums on this rank: samples, loss·samples, correct predictions, whether accuracy
    applies, and the training seconds so far (a resumed epoch starts from the checkpoint's)."""

    def __init__(self, state: Optional[Dict[str, Any]] = None) -> None:
        s = state or {}
        self.n_seen, self.loss_sum = int(s.get("n_seen", 0)), float(s.get("loss_sum", 0.0))
        self.correct, self.acc_ok = int(s.get("correct", 0)), bool(s.get("acc_ok", True))
        self.time_before = float(s.get("train_time_s", 0.0))
        self.t0 = time.perf_counter()

    def add(self, out: np.ndarray, y, loss: float) -> None:
        n = len(out)
        self.n_seen += n
        self.loss_sum += loss * n
        c = n_correct(out, y)
        if c is None:
            self.acc_ok = False
        else:
            self.correct += c

    def seconds(self) -> float:
        return self.time_before + time.perf_counter() - self.t0

    def state_dict(self) -> Dict[str, Any]:
        return {"n_seen": self.n_seen, "loss_sum": self.loss_sum, "correct": self.correct, "acc_ok": self.acc_ok,
                "train_time_s": self.seconds()}


class SupervisedTask(Task):
    """``fit``'s task (see the module docstring). ``out``: the folder of ``last.npz``/``best.npz`` (None: no
    files); ``extra``: stored in every checkpoint beside the loop's own ``extra["fit"]``."""

    def __init__(self, model, loss, optimizer, loader: DataLoader, *, epochs: int, scheduler=None,
                 scheduler_interval: str = "epoch", dp, out: Optional[Path] = None,
                 extra: Optional[Dict[str, Any]] = None, start_epoch: int = 0, step: int = 0,
                 skip: int = 0, partial: Optional[Dict[str, Any]] = None) -> None:
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.loader, self.epochs, self.interval, self.dp = loader, int(epochs), scheduler_interval, dp
        self.out, self.extra = out, dict(extra or {})
        self.epoch, self.steps_done = int(start_epoch), int(step)
        self.batches_per_epoch = len(loader)
        self.total_steps = self.steps_done + (self.epochs - self.epoch) * self.batches_per_epoch - int(skip)
        self.batch = 0                      # batches of the current epoch done
        self._skip = int(skip)
        self._partial = partial if dp.is_main else None   # rank 0 wrote its running sums; the others start at 0
        self._it = None
        self.sums: Optional[EpochSums] = None
        self._rng_state = None

    # --- the data -----------------------------------------------------------------------------------
    def done(self) -> bool:
        return self.epoch >= self.epochs

    def _start_epoch(self) -> None:
        self.loader.set_epoch(self.epoch)
        self._it = iter(self.dp.batches(self.loader))
        self.batch = 0
        self.sums = EpochSums(self._partial if self._skip else None)
        for _ in range(self._skip):            # a resumed epoch: the batches done before the checkpoint
            next(self._it)
            self.batch += 1
        self._skip, self._partial = 0, None

    def next_batch(self):
        if self._it is None:
            self._start_epoch()
        return next(self._it)

    @property
    def samples_done_in_epoch(self) -> int:
        return self.sums.n_seen if self.sums is not None else int((self._partial or {}).get("n_seen", 0))

    # --- one update ---------------------------------------------------------------------------------
    def forward_backward(self, batch) -> StepOutput:
        xb, yb, n_global = batch
        if len(xb) == 0:      # fewer rows than ranks in the last batch: this rank adds nothing
            self.optimizer.zero_grad()
            self.dp.backward(self.model, None, 0, 0)
            return StepOutput(math.nan, n_global, {}, skipped=True)
        self._rng_state = backend.get_rng_state()
        where = f"training batch {self.batch} of epoch {self.epoch + 1} (step {self.steps_done + 1})"
        try:
            outp = self.model(xb)
        except NonFiniteError as e:
            raise NonFiniteError(f"{where} holds non-finite inputs: {e}") from None
        try:
            lval = float(self.loss(outp, yb))
        except NonFiniteError as e:
            if finite(outp):  # the targets are bad, not the model
                raise NonFiniteError(f"{where}: {e}") from None
            lval = math.nan  # the loss refused a non-finite prediction: diverged
        info = {"x": xb, "y": yb, "out": outp}
        if math.isfinite(lval):
            self.optimizer.zero_grad()
            self.dp.backward(self.model, self.loss.backward(), len(xb), n_global,
                             scale=getattr(self.loss, "reduction", "mean") == "mean")
        return StepOutput(lval, n_global, info)

    def diverged(self, out: StepOutput) -> Exception:
        report = diagnose_nonfinite(self.model, self.loss, out.info["x"], out.info["y"], self._rng_state)
        step = self.steps_done + 1
        parts = [f"training diverged: the loss is {out.loss} at step {step} (epoch {self.epoch + 1}, "
                 f"batch {self.batch})"]
        if report["bad_params"]:
            shown = ", ".join(report["bad_params"][:5]) + (" ..." if len(report["bad_params"]) > 5 else "")
            parts.append(f"parameters already non-finite (the previous update overflowed): {shown}")
        if report["forward"]:
            parts.append(f"first non-finite output: layer '{report['forward'][0]}' ({report['forward'][1]})")
        if report["backward"]:
            n, c, what = report["backward"]
            parts.append(f"first non-finite gradient: layer '{n}' ({c}), {what}")
        if not report["forward"] and not report["backward"] and not report["bad_params"]:
            parts.append("every layer output is finite: the loss itself overflowed")
        lr = current_lr(self.optimizer)
        parts.append(f"lower the learning rate{f' (now {lr:g})' if lr is not None else ''} or check the data")
        err = DivergenceError("; ".join(parts))
        err.step, err.epoch, err.batch = step, self.epoch + 1, self.batch
        err.layer = report["forward"][0] if report["forward"] else \
            (report["backward"][0] if report["backward"] else None)
        err.report = report
        return err

    def update(self, out: StepOutput) -> None:
        self.optimizer.step()
        if self.scheduler is not None and self.interval == "step":
            self.scheduler.step()
        self.steps_done += 1
        self.batch += 1
        if not out.skipped:
            self.sums.add(out.info["out"], out.info["y"], out.loss)
            out.info.clear()          # the batch is not needed any more

    # --- epochs -------------------------------------------------------------------------------------
    def epoch_done(self) -> bool:
        return self.batch >= self.batches_per_epoch

    def end_epoch(self) -> Record:
        s = self.sums
        train_time = s.seconds()
        n_seen, loss_sum, correct, acc_ok = s.n_seen, s.loss_sum, s.correct, s.acc_ok
        if self.dp.active:        # the epoch's counters summed over the ranks (the one-process values)
            n, ls, c, ok = self.dp.totals(n_seen, loss_sum, correct, float(acc_ok))
            n_seen, loss_sum, correct, acc_ok = int(n), ls, int(c), ok == self.dp.comm.size
        if self.scheduler is not None and self.interval == "epoch":
            self.scheduler.step()
        self.epoch += 1
        self._it, self.sums, self.batch = None, None, 0
        return {"epoch": self.epoch, "step": self.steps_done, "train_loss": loss_sum / max(n_seen, 1),
                "train_acc": (correct / n_seen) if acc_ok and n_seen else None,
                "lr": current_lr(self.optimizer), "train_time_s": round(train_time, 4),
                "samples_per_s": round(n_seen / train_time, 1) if train_time > 0 else None}

    def position(self) -> Tuple[Optional[int], int]:
        return self.epoch, (self.batch if self._it is not None else self._skip)

    # --- checkpoints --------------------------------------------------------------------------------
    def save(self, role: str, number: Optional[int], loop: Loop):
        if self.out is None or role not in ("last", "best"):
            return None
        info = {"train_seed": self.loader.seed, "scheduler_interval": self.interval, **loop.state_dict()}
        if self._it is None and self._skip:              # stopped before the resumed epoch went on
            info.update(batch=self._skip, partial=self._partial)
        elif self.sums is not None and self.batch:      # mid-epoch (Ctrl-C): the position and the running sums
            info.update(batch=self.batch, partial=self.sums.state_dict())
        path = self.out / f"{role}.npz"
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, epoch=self.epoch, step=self.steps_done,
                        history=loop.state.history, extra={**self.extra, "fit": info})
        return path

    # --- what the progress shows --------------------------------------------------------------------
    def epoch_line(self, record: Record) -> Optional[str]:
        return epoch_line(record, self.epochs)

    def postfix(self, out: StepOutput) -> Dict[str, str]:
        s = self.sums
        post = {"loss": f"{s.loss_sum / max(s.n_seen, 1):.4f}"}
        if s.acc_ok and s.n_seen:
            post["acc"] = f"{s.correct / s.n_seen:.4f}"
        return post

    def log_lines(self, out: StepOutput, record: Record):
        s = self.sums
        line = (f"epoch {self.epoch + 1}/{self.epochs} batch {self.batch}/{self.batches_per_epoch}: "
                f"train loss {s.loss_sum / max(s.n_seen, 1):.4f}")
        if s.acc_ok and s.n_seen:
            line += f" acc {s.correct / s.n_seen:.4f}"
        return [line]


__all__ = ["SupervisedTask", "epoch_line", "evaluate", "as_loader", "n_correct", "cross_entropy", "current_lr", "EpochSums"]
