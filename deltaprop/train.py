"""The fit loop: mini-batches, progress bar, validation, history, checkpoints, early stopping, resume,
and a divergence guard.

One training step is the textbook one: ``out = model(x)``, ``C = loss(out, y)``, ``model.backward(loss.backward())``
(every layer adds its parameter gradients, docs/equations.md §1-§5), ``optimizer.step()`` (§7).

Resume is exact: a checkpoint written after epoch ``e`` holds the weights, the optimizer and scheduler
states, the global RNG state and the counters; the batch order of every epoch comes from ``(seed, epoch)``
(``DataLoader.set_epoch``), so ``fit(..., resume=path)`` continues with bit-identical weights.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from . import backend
from .atomic import atomic_write_text
from .data.loader import DataLoader
from .errors import DivergenceError, NonFiniteError
from .io import load_checkpoint, save_checkpoint

History = List[Dict[str, Any]]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: the run stopped at a batch boundary; ``checkpoint`` is the resumable file written
    then (None without an ``out_dir``)."""

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
    def active(self):
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
Data = Union[DataLoader, Tuple[np.ndarray, np.ndarray]]


# --- metrics -----------------------------------------------------------------------------------

def _n_correct(out: np.ndarray, y) -> Optional[int]:
    """Correct arg-max predictions for class-index targets; None when that makes no sense."""
    if y is None or not isinstance(out, np.ndarray) or out.ndim != 2:
        return None
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        return None
    return int(np.count_nonzero(out.argmax(axis=1) == y))


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy from logits (log-sum-exp, float64): the default evaluation loss."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def _as_loader(data: Data, batch_size: int, shuffle: bool = False, seed: Optional[int] = 0) -> DataLoader:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return DataLoader(data[0], data[1], batch_size=batch_size, shuffle=shuffle, seed=seed)
    raise TypeError(f"data must be a DataLoader or an (X, y) pair, got {type(data).__name__}")


def evaluate(model, data: Data, loss=None, batch_size: int = 1000) -> Tuple[float, Optional[float]]:
    """(mean loss, accuracy) of ``model`` on ``data`` in eval mode without caches (``no_grad``).

    ``loss=None`` uses the softmax cross-entropy of the logits; accuracy is None for non-class targets."""
    loader = _as_loader(data, batch_size)
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
                if loss is not None:
                    loss_sum += float(loss(out, yb)) * n
                elif _n_correct(out, yb) is not None:
                    loss_sum += _cross_entropy(out, np.asarray(yb)) * n
                else:
                    loss_sum = math.nan
                c = _n_correct(out, yb)
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


# --- divergence diagnosis ------------------------------------------------------------------

def _finite(a) -> bool:
    return a is None or not isinstance(a, np.ndarray) or a.dtype.kind != "f" or bool(np.isfinite(a).all())


def diagnose_nonfinite(model, loss, x: np.ndarray, y, rng_state: Optional[dict] = None) -> Dict[str, Any]:
    """Re-run one batch's forward and backward layer by layer and report where values stop being finite.

    Returns ``{"bad_params": [names], "forward": (name, class) | None, "backward": (name, class, what) | None,
    "loss": value}``: the first leaf layer (in execution order) whose output is non-finite, and the first one
    (in backward order) whose input gradient or parameter gradient is. Weights are not changed."""
    leaves = [(n, m) for n, m in model.named_modules() if not m._modules]
    report: Dict[str, Any] = {"bad_params": [n for n, p in model.named_parameters() if not _finite(p.data)],
                              "forward": None, "backward": None, "loss": None}
    saved_grads = {id(p): (None if p.grad is None else p.grad.copy()) for p in model.parameters()}
    patched = []
    for name, mod in leaves:
        fwd, bwd = mod.forward, mod.backward

        def f(inp, *a, _f=fwd, _n=name, _m=mod, **k):
            out = _f(inp, *a, **k)
            if report["forward"] is None and not _finite(out):
                report["forward"] = (_n or "<model>", type(_m).__name__)
            return out

        def b(dout, _b=bwd, _n=name, _m=mod):
            dx = _b(dout)
            if report["backward"] is None:
                bad = [pn for pn, p in _m._parameters.items() if p is not None and not _finite(p.grad)]
                if not _finite(dx) or bad:
                    what = "input gradient" if not _finite(dx) else f"gradient of {bad[0]}"
                    report["backward"] = (_n or "<model>", type(_m).__name__, what)
            return dx
        object.__setattr__(mod, "forward", f)
        object.__setattr__(mod, "backward", b)
        patched.append(mod)
    was_training = model.training
    try:
        model.train()
        if rng_state is not None:
            backend.set_rng_state(rng_state)
        for p in model.parameters():
            p.grad = None
        with backend.enable_grad(), np.errstate(all="ignore"):
            out = model(x)
            try:
                report["loss"] = float(loss(out, y))
            except NonFiniteError:
                report["loss"] = math.nan
                return report
            dout = loss.backward()
            if not _finite(dout) and report["backward"] is None:
                report["backward"] = ("<loss>", type(loss).__name__, "gradient of the loss")
            try:
                model.backward(dout)
            except Exception:  # a layer may refuse NaN input; what was found so far stands
                pass
    finally:
        for mod in patched:
            mod.__dict__.pop("forward", None)
            mod.__dict__.pop("backward", None)
        for p in model.parameters():
            p.grad = saved_grads.get(id(p))
        model.train(was_training)
    return report


def _divergence_message(report: Dict[str, Any], loss_value: float, step: int, epoch: int, batch: int,
                        optimizer) -> str:
    parts = [f"training diverged: the loss is {loss_value} at step {step} (epoch {epoch}, batch {batch})"]
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
    lr = _current_lr(optimizer)
    parts.append(f"lower the learning rate{f' (now {lr:g})' if lr is not None else ''} or check the data")
    return "; ".join(parts)


def _current_lr(optimizer) -> Optional[float]:
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


# --- history ----------------------------------------------------------------------------------

def _write_history(path: Path, history: History) -> None:
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in history))


def _append_history(path: Path, rec: Dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _better(value: float, best: Optional[float], mode: str, min_delta: float) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


# --- data parallelism (deltaprop.distributed; docs/distributed.md) ------------------------------

def _distributed_guard(fn):
    """Run ``fn`` so that, when several MPI ranks train, a failure on one rank ends every rank with its error."""
    import functools

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        from .distributed import failure_guard, world
        with failure_guard(kwargs.get("comm") or world()):
            return fn(*args, **kwargs)
    return guarded


def _data_parallel(model, comm, sync_bn: bool):
    from .distributed import DataParallel, world
    return DataParallel(model, comm or world(), sync_bn=sync_bn)


def _mean_reduced(loss) -> bool:
    """Whether the loss is a mean over the batch (its gradient is then scaled by the shard's share)."""
    return getattr(loss, "reduction", "mean") == "mean"


def _empty_shard_step(dp, model, optimizer, step_scheduler) -> None:
    """A rank whose shard of a short last batch is empty still takes part in the sum and the update."""
    optimizer.zero_grad()
    dp.backward(model, None, 0, 0)
    optimizer.step()
    if step_scheduler is not None:
        step_scheduler.step()


def _epoch_totals(dp, n_seen: int, loss_sum: float, correct: int, acc_ok: bool):
    """The epoch's counters summed over the ranks (the one-process values)."""
    if not dp.active:
        return n_seen, loss_sum, correct, acc_ok
    n, ls, c, ok = dp.totals(n_seen, loss_sum, correct, float(acc_ok))
    return int(n), ls, int(c), ok == dp.comm.size


# --- the loop ------------------------------------------------------------------------------------

@_distributed_guard
def fit(model, loss, optimizer, train: Data, val: Optional[Data] = None, epochs: int = 10, scheduler=None, *,
        batch_size: int = 64, seed: int = 0, scheduler_interval: str = "epoch",
        out_dir: Optional[Union[str, os.PathLike]] = None, history_path: Optional[Union[str, os.PathLike]] = None,
        resume: Optional[Union[str, os.PathLike]] = None, patience: Optional[int] = None,
        monitor: Optional[str] = None, mode: Optional[str] = None, min_delta: float = 0.0,
        restore_best: bool = False, progress: bool = True, extra: Optional[Dict[str, Any]] = None,
        log: Optional[Callable[[str], None]] = print, eval_batch_size: int = 1000, comm=None,
        sync_bn: bool = False, stop: Optional[StopRequest] = None) -> History:
    """Train ``model`` for ``epochs`` epochs and return the history (one dict per epoch).

    - ``train``/``val``: ``DataLoader``s or ``(X, y)`` pairs (then batched by ``batch_size``, training data
      shuffled from ``seed``).
    - ``scheduler`` steps once per epoch, or per batch with ``scheduler_interval="step"``.
    - ``out_dir``: writes ``last.npz`` every epoch, ``best.npz`` when ``monitor`` improves, and
      ``history.jsonl`` (or ``history_path``); checkpoints are atomic and hold ``extra`` (e.g. normalisation).
    - ``patience``: stop after that many epochs without improvement of ``monitor`` ("val_loss" or "val_acc";
      default val_loss, or train_loss without validation data); ``restore_best`` reloads the best weights.
    - ``resume``: a checkpoint path to continue from (weights, optimizer, scheduler, RNG, counters, history).
    - Ctrl-C (SIGINT, in the main thread) stops at the next batch boundary: with ``out_dir`` the state is
      written to ``last.npz`` (mid-epoch: with the batch position and the epoch's running sums, so resuming
      continues bit-identically) and ``TrainingInterrupted`` (a KeyboardInterrupt) names that file. ``stop``:
      a ``StopRequest`` the caller activated earlier (so no SIGINT between its activation and the loop is lost).
    - A NaN in an input batch raises NonFiniteError naming the batch; a non-finite loss raises
      DivergenceError naming the step and the first layer whose output or gradient went non-finite.
    - Under ``mpirun -n N`` (or with ``comm``, a ``deltaprop.distributed`` communicator) each rank trains on
      its shard of every global batch and the gradients are summed over the ranks: the same updates as one
      process (docs/distributed.md); only rank 0 prints and writes. ``sync_bn`` synchronises batch norm.
    """
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    train_loader = _as_loader(train, batch_size, shuffle=True, seed=seed)
    val_loader = None if val is None else _as_loader(val, eval_batch_size)
    monitor = monitor or ("val_loss" if val_loader is not None else "train_loss")
    mode = mode or ("max" if monitor.endswith("acc") else "min")
    dp = _data_parallel(model, comm, sync_bn)
    if not dp.is_main:   # only rank 0 prints and writes
        out_dir, history_path, log, progress = None, None, None, False
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.npz.*.tmp"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
    hist_file = Path(history_path) if history_path is not None else (out / "history.jsonl" if out else None)
    say = log or (lambda s: None)

    history: History = []
    start_epoch, step, best, bad_epochs = 0, 0, None, 0
    skip, partial = 0, None   # batches of start_epoch already done, and their running sums (mid-epoch resume)
    if resume is not None:
        ck = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler, restore_rng=True)
        start_epoch, step, history = ck.epoch, ck.step, list(ck.history)
        state = ck.extra.get("fit", {})
        best, bad_epochs = state.get("best"), int(state.get("bad_epochs", 0))
        skip, partial = int(state.get("batch", 0)), state.get("partial")
        if state.get("train_seed") is not None and state["train_seed"] != train_loader.seed:
            say(f"resume: using the checkpoint's shuffling seed {state['train_seed']} (not {train_loader.seed})")
            train_loader.seed = int(state["train_seed"])
        say(f"resumed from {resume} at epoch {start_epoch}" + (f" + {skip} batch(es)" if skip else "")
            + f" (step {step})")
    dp.broadcast_state(optimizer)   # every rank starts from rank 0's weights and optimizer state
    if hist_file is not None:
        hist_file.parent.mkdir(parents=True, exist_ok=True)
        _write_history(hist_file, history)

    def checkpoint(path: Path, epoch: int, position: Optional[Dict[str, Any]] = None) -> None:
        info = {"best": best, "bad_epochs": bad_epochs, "monitor": monitor, "mode": mode,
                "train_seed": train_loader.seed, "scheduler_interval": scheduler_interval, **(position or {})}
        save_checkpoint(path, model, optimizer, scheduler, epoch=epoch, step=step, history=history,
                        extra={**(extra or {}), "fit": info})

    def interrupted(epoch: int, b: int, sums: Dict[str, Any]) -> TrainingInterrupted:
        """Write the mid-epoch state (``b`` batches of epoch ``epoch`` done) and name it."""
        path = None
        if out is not None:
            path = out / "last.npz"
            checkpoint(path, epoch, {"batch": b, "partial": sums})
        return TrainingInterrupted(path, epoch + 1, b)

    tqdm = _tqdm() if progress else None
    model.train()
    stop = stop if stop is not None else StopRequest()
    with stop.active():
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            n_seen, loss_sum, correct, acc_ok, done_time, first = 0, 0.0, 0, True, 0.0, 0
            if epoch == start_epoch and skip:
                first = skip
                if partial and dp.is_main:   # rank 0 wrote its running sums; the others start at 0
                    n_seen, loss_sum = int(partial["n_seen"]), float(partial["loss_sum"])
                    correct, acc_ok = int(partial["correct"]), bool(partial["acc_ok"])
                    done_time = float(partial.get("train_time_s", 0.0))
            t0 = time.perf_counter()
            bar = tqdm(total=train_loader.num_samples, desc=f"epoch {epoch + 1}/{epochs}", unit="samples",
                       unit_scale=True, leave=True, dynamic_ncols=True) if tqdm else None
            try:
                last_post = t0
                if bar is not None and n_seen:
                    bar.update(n_seen)
                for b, (xb, yb, n_global) in enumerate(dp.batches(train_loader)):
                    if b < first:
                        continue
                    if stop.requested:
                        raise interrupted(epoch, b, {"n_seen": n_seen, "loss_sum": loss_sum, "correct": correct,
                                                     "acc_ok": acc_ok,
                                                     "train_time_s": done_time + time.perf_counter() - t0})
                    if len(xb) == 0:   # fewer rows than ranks in the last batch: this rank adds nothing
                        _empty_shard_step(dp, model, optimizer, scheduler if scheduler_interval == "step" else None)
                        step += 1
                        continue
                    rng_state = backend.get_rng_state()
                    try:
                        outp = model(xb)
                    except NonFiniteError as e:
                        raise NonFiniteError(f"training batch {b} of epoch {epoch + 1} (step {step + 1}) holds "
                                             f"non-finite inputs: {e}") from None
                    try:
                        lval = float(loss(outp, yb))
                    except NonFiniteError as e:
                        if _finite(outp):  # the targets are bad, not the model
                            raise NonFiniteError(f"training batch {b} of epoch {epoch + 1} (step {step + 1}): "
                                                 f"{e}") from None
                        lval = math.nan  # the loss refused a non-finite prediction: diverged
                    if not math.isfinite(lval):
                        report = diagnose_nonfinite(model, loss, xb, yb, rng_state)
                        err = DivergenceError(_divergence_message(report, lval, step + 1, epoch + 1, b, optimizer))
                        err.step, err.epoch, err.batch = step + 1, epoch + 1, b
                        err.layer = report["forward"][0] if report["forward"] else \
                            (report["backward"][0] if report["backward"] else None)
                        err.report = report
                        raise err
                    optimizer.zero_grad()
                    dp.backward(model, loss.backward(), len(xb), n_global, scale=_mean_reduced(loss))
                    optimizer.step()
                    if scheduler is not None and scheduler_interval == "step":
                        scheduler.step()
                    step += 1
                    n = len(xb)
                    n_seen += n
                    loss_sum += lval * n
                    c = _n_correct(outp, yb)
                    if c is None:
                        acc_ok = False
                    else:
                        correct += c
                    if bar is not None:
                        bar.update(n_global)
                        now = time.perf_counter()
                        if now - last_post > 0.5:
                            last_post = now
                            post = {"loss": f"{loss_sum / n_seen:.4f}"}
                            if acc_ok:
                                post["acc"] = f"{correct / n_seen:.4f}"
                            bar.set_postfix(post, refresh=False)
            finally:
                if bar is not None:
                    bar.close()
            train_time = done_time + time.perf_counter() - t0
            n_seen, loss_sum, correct, acc_ok = _epoch_totals(dp, n_seen, loss_sum, correct, acc_ok)
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            rec: Dict[str, Any] = {"epoch": epoch + 1, "step": step,
                                   "train_loss": loss_sum / max(n_seen, 1),
                                   "train_acc": (correct / n_seen) if acc_ok and n_seen else None,
                                   "lr": _current_lr(optimizer), "train_time_s": round(train_time, 4),
                                   "samples_per_s": round(n_seen / train_time, 1) if train_time > 0 else None}
            if val_loader is not None:
                rec["val_loss"], rec["val_acc"] = evaluate(model, val_loader, loss=loss, batch_size=eval_batch_size)
            history.append(rec)
            if hist_file is not None:
                _append_history(hist_file, rec)
            value = rec.get(monitor)
            improved = _better(value, best, mode, min_delta)
            if improved:
                best, bad_epochs = value, 0
            else:
                bad_epochs += 1
            if out is not None:
                if improved:
                    checkpoint(out / "best.npz", epoch + 1)
                checkpoint(out / "last.npz", epoch + 1)
            say(_epoch_line(rec, epochs))
            if patience is not None and bad_epochs >= patience:
                say(f"early stop: {monitor} did not improve for {patience} epoch(s); best {best:.4f}")
                break
            if stop.requested and epoch + 1 < epochs:   # Ctrl-C during validation or the checkpoint
                raise TrainingInterrupted(out / "last.npz" if out is not None else None, epoch + 2, 0)
    if restore_best and out is not None and (out / "best.npz").is_file():
        load_checkpoint(out / "best.npz", model=model)
    if restore_best:
        dp.broadcast_state()   # rank 0 restored the best weights
    return history


def _epoch_line(rec: Dict[str, Any], epochs: int) -> str:
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


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return None
    return tqdm


__all__ = ["fit", "evaluate", "diagnose_nonfinite", "TrainingInterrupted", "StopRequest"]
