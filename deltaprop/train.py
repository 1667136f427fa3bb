"""``fit``: train a model on mini-batches with validation, history, checkpoints, early stopping, exact resume,
Ctrl-C and a divergence guard; the Python entry point of ``deltaprop.training``'s loop (docs/training.md).

One training step is the textbook one: ``out = model(x)``, ``C = loss(out, y)``, ``model.backward(loss.backward())``
(every layer adds its parameter gradients, docs/equations.md §1-§5), ``optimizer.step()`` (§7).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .distributed import DataParallel, failure_guard, world
from .io import load_checkpoint
from .training import (Callback, Checkpoints, DivergenceGuard, Evaluation, FolderLock, History, Loop, Progress,
                       StopRequest, TrainingInterrupted, diagnose_nonfinite)
from .training.supervised import Data, SupervisedTask, as_loader, evaluate

History_ = List[Dict[str, Any]]


def fit(model, loss, optimizer, train: Data, val: Optional[Data] = None, epochs: int = 10, scheduler=None, *,
        batch_size: int = 64, seed: int = 0, scheduler_interval: str = "epoch",
        out_dir: Optional[Union[str, os.PathLike]] = None, history_path: Optional[Union[str, os.PathLike]] = None,
        resume: Optional[Union[str, os.PathLike]] = None, patience: Optional[int] = None,
        monitor: Optional[str] = None, mode: Optional[str] = None, min_delta: float = 0.0,
        restore_best: bool = False, progress: bool = True, extra: Optional[Dict[str, Any]] = None,
        log: Optional[Callable[[str], None]] = print, eval_batch_size: int = 1000, comm=None,
        sync_bn: bool = False, stop: Optional[StopRequest] = None, callbacks: Sequence[Callback] = ()) -> History_:
    """Train ``model`` for ``epochs`` epochs and return the history (one dict per epoch).

    - ``train``/``val``: ``DataLoader``s or ``(X, y)`` pairs (then batched by ``batch_size``, training data
      shuffled from ``seed``).
    - ``scheduler`` steps once per epoch, or per batch with ``scheduler_interval="step"``.
    - ``out_dir``: writes ``last.npz`` every epoch, ``best.npz`` when ``monitor`` improves, and
      ``history.jsonl`` (or ``history_path``); checkpoints are atomic and hold ``extra`` (e.g. normalisation).
      The folder is locked while the run writes there (a second live run into it is refused).
    - ``patience``: stop after that many epochs without improvement of ``monitor`` ("val_loss" or "val_acc";
      default val_loss, or train_loss without validation data); ``restore_best`` reloads the best weights.
    - ``resume``: a checkpoint path to continue from (weights, optimizer, scheduler, RNG, counters, history).
    - Ctrl-C (SIGINT, in the main thread) stops at the next batch boundary: with ``out_dir`` the state is
      written to ``last.npz`` (mid-epoch: with the batch position and the epoch's running sums, so resuming
      continues bit-identically) and ``TrainingInterrupted`` (a KeyboardInterrupt) names that file. ``stop``:
      a ``StopRequest`` the caller activated earlier (so no SIGINT between its activation and the loop is lost).
    - A NaN in an input batch raises NonFiniteError naming the batch; a non-finite loss raises
      DivergenceError naming the step and the first layer whose output or gradient went non-finite.
    - Without a bar (``progress=False`` or no terminal) a line with the ETA every tenth of an epoch, at most
      every 30 s; an epoch line after each epoch.
    - Under ``mpirun -n N`` (or with ``comm``, a ``deltaprop.distributed`` communicator) each rank trains on
      its shard of every global batch and the gradients are summed over the ranks: the same updates as one
      process (docs/distributed.md); only rank 0 prints and writes. ``sync_bn`` synchronises batch norm.
    - ``callbacks``: more parts of the loop (``deltaprop.training``), e.g. ``Chart(out / "chart.png")``.
    """
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    with failure_guard(comm or world()):     # a rank failing while it sets up ends every rank too
        train_loader = as_loader(train, batch_size, shuffle=True, seed=seed)
        val_loader = None if val is None else as_loader(val, eval_batch_size)
        monitor = monitor or ("val_loss" if val_loader is not None else "train_loss")
        mode = mode or ("max" if monitor.endswith("acc") else "min")
        dp = DataParallel(model, comm or world(), sync_bn=sync_bn)
        if not dp.is_main:   # only rank 0 prints and writes
            out_dir, history_path, log, progress = None, None, None, False
        out = Path(out_dir) if out_dir is not None else None
        hist_file = Path(history_path) if history_path is not None else (out / "history.jsonl" if out else None)
        say = log or (lambda s: None)

        history: History_ = []
        start_epoch, step, skip, partial, loop_state = 0, 0, 0, None, None
        if resume is not None:
            ck = load_checkpoint(resume, model=model, optimizer=optimizer, scheduler=scheduler, restore_rng=True)
            start_epoch, step, history = ck.epoch, ck.step, list(ck.history)
            state = ck.extra.get("fit", {})
            skip, partial, loop_state = int(state.get("batch", 0)), state.get("partial"), state
            if state.get("train_seed") is not None and state["train_seed"] != train_loader.seed:
                say(f"resume: using the checkpoint's shuffling seed {state['train_seed']} (not {train_loader.seed})")
                train_loader.seed = int(state["train_seed"])
            say(f"resumed from {resume} at epoch {start_epoch}" + (f" + {skip} batch(es)" if skip else "")
                + f" (step {step})")
        dp.broadcast_state(optimizer)   # every rank starts from rank 0's weights and optimizer state

        task = SupervisedTask(model, loss, optimizer, train_loader, epochs=epochs, scheduler=scheduler,
                              scheduler_interval=scheduler_interval, dp=dp, out=out, extra=extra,
                              start_epoch=start_epoch, step=step, skip=skip, partial=partial)

        def validate() -> Dict[str, Any]:
            vl, va = evaluate(model, val_loader, loss=loss, batch_size=eval_batch_size)
            return {"val_loss": vl, "val_acc": va}

        parts: List[Callback] = [FolderLock(out)] if out is not None else []
        parts += [DivergenceGuard(), History(hist_file),
                  Evaluation(validate if val_loader is not None else None, monitor=monitor, mode=mode,
                             at_epoch_end=True, min_delta=min_delta, patience=patience),
                  Checkpoints(at_epoch_end=True, final_roles=()),
                  Progress(bar=progress, every=max(1, task.batches_per_epoch // 10), min_interval=30.0,
                           per_epoch=True, epoch_total=train_loader.num_samples, epochs=epochs),
                  *callbacks]
        history = Loop(task, parts, comm=dp.comm, stop=stop, log=log, history=history, state=loop_state).run()
        if restore_best and out is not None and (out / "best.npz").is_file():
            load_checkpoint(out / "best.npz", model=model)
        if restore_best:
            dp.broadcast_state()   # rank 0 restored the best weights
        return history


__all__ = ["fit", "evaluate", "diagnose_nonfinite", "TrainingInterrupted", "StopRequest"]
