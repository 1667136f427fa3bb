"""Darknet's training loop for cfg classifiers (pjreddie f6afaabc ``train_network``, ``update_network``,
``train_classifier``; docs/equations.md §10).

One update per ``batch`` images: the batch is run as ``subdivisions`` forward/backward passes of
``batch/subdivisions`` images each, their gradients ADDED into ``.grad``; ``seen`` grows by each
sub-batch; then the learning rate of batch ``n = seen/batch`` (``DarknetLR``: burn_in and the policy) and
one ``DarknetSGD`` step (decay·B on weights, momentum, lr/B, per-layer ``learning_rate``). The reported
loss of a batch is ``Σ_sub (Σ layer costs / #cost layers) / batch``; the running average ``0.9·avg + 0.1·loss``.
Training stops when ``seen/batch`` reaches ``max_batches``. Checkpoints are Darknet ``.weights`` files
(``seen`` in the header, so ``--weights`` resumes at the right batch; ``--clear`` starts it at 0), written
atomically: ``<base>_<n>.weights`` every ``save_every`` batches and ``<base>_final.weights`` at the end.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import backend
from ..errors import ConfigError, DivergenceError, ShapeError
from ..optim.darknet import DarknetSGD
from ..optim.darknet_policy import DarknetLR
from .train_loss import loss_layer_indices, network_loss


@dataclass
class StepResult:
    """One update: the reported loss, the learning rate used, the batch number after it, ``seen``."""
    loss: float
    lr: float
    batch_num: int
    seen: int
    costs: List[Dict[int, float]]


def one_hot(labels: np.ndarray, classes: int, dtype=np.float32) -> np.ndarray:
    """Darknet's classifier truth: 1 at the label, 0 elsewhere, (N, classes)."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShapeError(f"labels must lie in 0..{classes - 1}, got {labels.min()}..{labels.max()}")
    t = np.zeros((labels.shape[0], classes), dtype=dtype)
    t[np.arange(labels.shape[0]), labels] = 1
    return t


class DarknetTrainer:
    """Trains a ``DarknetNet`` the way Darknet does (see the module docstring).

    ``numerics`` switches the network ("darknet": Darknet's BN and loss deltas; "standard": textbook BN and
    true loss gradients); the update rule and schedule are Darknet's in both. Overrides (None: the cfg's):
    ``batch``, ``subdivisions``, ``learning_rate``, ``momentum``, ``decay``, ``max_batches``.
    Like Darknet, it turns off the gradient of the network input (``net.needs_input_grad = False``).
    """

    def __init__(self, net, numerics: Optional[str] = None, batch: Optional[int] = None,
                 subdivisions: Optional[int] = None, learning_rate: Optional[float] = None,
                 momentum: Optional[float] = None, decay: Optional[float] = None,
                 max_batches: Optional[int] = None, rng: Optional[np.random.Generator] = None) -> None:
        if numerics is not None:
            net.set_numerics(numerics)
        self.net = net
        o = net.net_options
        if o.get("adam"):
            raise ConfigError("[net] adam=1: Darknet's Adam update is not supported by this trainer (only its SGD)")
        self.loss_layers = loss_layer_indices(net)
        subdiv = int(subdivisions or o["subdivisions"])
        full = int(batch or o["batch"])
        if subdiv < 1 or full < subdiv:
            raise ConfigError(f"batch={full} must be ≥ subdivisions={subdiv} ≥ 1")
        self.subdivisions = subdiv
        self.mini_batch = full // subdiv                 # Darknet: net->batch /= subdivisions
        self.batch = self.mini_batch * subdiv            # update_network: a.batch = batch·subdivisions
        over: Dict[str, Any] = {}
        if learning_rate is not None:
            over["learning_rate"] = float(learning_rate)
        self.max_batches = int(o["max_batches"] if max_batches is None else max_batches)
        if max_batches is not None:
            over["max_batches"] = self.max_batches
        self.policy = DarknetLR.from_net_options(_policy_options(o), **over)
        self.optimizer = DarknetSGD(net, lr=self.policy.learning_rate,
                                    momentum=float(o["momentum"] if momentum is None else momentum),
                                    decay=float(o["decay"] if decay is None else decay), batch=self.batch)
        self.rng = rng if rng is not None else backend.rng()
        self.avg_loss: Optional[float] = None
        object.__setattr__(net, "needs_input_grad", False)   # Darknet never computes the input's delta

    @property
    def current_batch(self) -> int:
        """Darknet's ``get_current_batch``: seen / batch."""
        return int(self.net.seen) // self.batch

    def train_step(self, X: np.ndarray, truth: np.ndarray) -> StepResult:
        """One Darknet update on ``batch`` images X (N, C, H, W) with truths (N, ...)."""
        if len(X) != self.batch or len(truth) != self.batch:
            raise ShapeError(f"train_step: expected {self.batch} images and truths (batch {self.batch} = "
                             f"{self.subdivisions} × {self.mini_batch}), got {len(X)} and {len(truth)}")
        net = self.net
        net.train()
        total, per_sub = 0.0, []
        m = self.mini_batch
        for s in range(self.subdivisions):
            x, t = X[s * m:(s + 1) * m], truth[s * m:(s + 1) * m]
            object.__setattr__(net, "seen", int(net.seen) + m)       # train_network_datum: seen += batch
            net(x)
            costs, _ = network_loss(net, x, t)
            per_sub.append(costs)
            total += sum(costs.values()) / len(costs)                  # calc_network_cost
        loss = total / self.batch                                      # train_network: sum/(n·batch)
        if not math.isfinite(loss):
            raise DivergenceError(f"batch {self.current_batch}: the loss is {loss} (costs {per_sub}); lower the "
                                  f"learning rate or check the data")
        n = self.current_batch
        lr = self.policy(n, self.rng)
        self.optimizer.set_lr(lr)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.avg_loss = loss if self.avg_loss is None else 0.9 * self.avg_loss + 0.1 * loss
        return StepResult(loss, lr, n, int(net.seen), per_sub)

    # --- the loop -----------------------------------------------------------------------------------
    def batches(self, n_images: int, seed: int = 0) -> Iterator[np.ndarray]:
        """Image indices of the coming batches: epoch e is a permutation drawn from ``(seed, e)``, read
        from image ``seen`` on, so a run resumed from a checkpoint sees what an uninterrupted run would."""
        k = int(self.net.seen)
        while True:
            idx = []
            while len(idx) < self.batch:
                e, off = divmod(k, n_images)
                take = min(self.batch - len(idx), n_images - off)
                perm = np.random.default_rng([seed, e]).permutation(n_images)
                idx.extend(perm[off:off + take])
                k += take
            yield np.asarray(idx)

    def fit(self, X: np.ndarray, labels: np.ndarray, classes: int, *, out_dir=None, base: str = "model",
            save_every: int = 1000, log_every: int = 10, eval_data: Optional[Tuple[np.ndarray, np.ndarray]] = None,
            eval_every: Optional[int] = None, seed: int = 0, progress: bool = True,
            log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
        """Train on (X, labels) until ``max_batches``. Writes ``history.jsonl`` (every ``log_every`` batches)
        and ``.weights`` checkpoints into ``out_dir``; returns the history records."""
        if self.max_batches <= 0:
            raise ConfigError("max_batches is 0: give the cfg a max_batches (or --epochs), else Darknet "
                              "trains forever")
        out = Path(out_dir) if out_dir is not None else None
        hist_path = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            hist_path = out / "history.jsonl"
        from .weights import save_weights
        history: List[Dict[str, Any]] = []
        start_batch = self.current_batch
        todo = self.max_batches - start_batch
        if todo <= 0:
            log(f"already at batch {start_batch} ≥ max_batches {self.max_batches}: nothing to train "
                f"(--clear restarts the count)")
        bar = _progress(todo, progress)
        t0 = time.perf_counter()
        last_t, last_n = t0, start_batch
        it = self.batches(len(X), seed)
        try:
            while self.current_batch < self.max_batches:
                idx = next(it)
                res = self.train_step(X[idx], one_hot(labels[idx], classes, X.dtype))
                n = res.batch_num
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{res.loss:.4f}", avg=f"{self.avg_loss:.4f}", lr=f"{res.lr:.3g}")
                rec: Optional[Dict[str, Any]] = None
                if n % log_every == 0 or n == self.max_batches:
                    now = time.perf_counter()
                    rec = {"batch": n, "seen": res.seen, "loss": res.loss, "avg_loss": self.avg_loss, "lr": res.lr,
                           "images_per_s": round((n - last_n) * self.batch / max(now - last_t, 1e-9), 1),
                           "elapsed_s": round(now - t0, 2)}
                    last_t, last_n = now, n
                if eval_data is not None and eval_every and n % eval_every == 0:
                    rec = rec or {"batch": n, "seen": res.seen, "loss": res.loss, "avg_loss": self.avg_loss,
                                  "lr": res.lr, "elapsed_s": round(time.perf_counter() - t0, 2)}
                    rec["eval_loss"], rec["eval_acc"] = evaluate(self.net, *eval_data)
                    if bar is None:
                        log(f"batch {n}: loss {res.loss:.4f} avg {self.avg_loss:.4f} | eval acc "
                            f"{rec['eval_acc']:.4f}")
                if rec is not None:
                    history.append(rec)
                    if hist_path is not None:
                        with open(hist_path, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                    if bar is None and "eval_acc" not in rec:
                        log(f"{n}: {res.loss:.6f}, {self.avg_loss:.6f} avg, {res.lr:.6g} rate, "
                            f"{rec['elapsed_s']:.1f} s, {res.seen} images")
                if out is not None and save_every and n % save_every == 0 and n < self.max_batches:
                    save_weights(self.net, out / f"{base}_{n}.weights")
        finally:
            if bar is not None:
                bar.close()
        if out is not None:
            save_weights(self.net, out / f"{base}_final.weights")
        return history


def evaluate(net, X: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> Tuple[float, float]:
    """(mean −log p of the true class, top-1 accuracy) of the network's output (inference mode)."""
    correct, nll = 0, 0.0
    labels = np.asarray(labels).astype(np.int64)
    for s in range(0, len(X), batch_size):
        p = np.asarray(net.predict(X[s:s + batch_size]), dtype=np.float64).reshape(min(batch_size, len(X) - s), -1)
        y = labels[s:s + batch_size]
        correct += int(np.count_nonzero(p.argmax(axis=1) == y))
        nll += float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-30)).sum())
    return nll / max(len(X), 1), correct / max(len(X), 1)


def _policy_options(o: Dict[str, Any]) -> Dict[str, Any]:
    """The [net] options as DarknetLR.from_net_options reads them (lists joined, "sig" = sigmoid)."""
    out = dict(o)
    if out.get("policy") == "sig":
        out["policy"] = "sigmoid"
    for k in ("steps", "scales"):
        v = out.get(k)
        if isinstance(v, (list, tuple)):
            out[k] = ",".join(str(x) for x in v) if v else None
    return out


def _progress(total: int, enabled: bool):
    if not enabled or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return None
    return tqdm(total=total, unit="batch", desc="train", dynamic_ncols=True)


def run_cli(args) -> int:
    """``deltaprop train --cfg FILE.cfg [--weights W] [--clear] [--data mnist|DIR] ...`` (see docs/darknet-training.md)."""
    from .trainer_cli import run
    return run(args)
