"""Darknet's training of cfg networks (pjreddie f6afaabc ``train_network``, ``update_network``,
``train_classifier``, ``train_detector``; docs/equations.md §10), run by ``deltaprop.training``'s loop.

One update per ``batch`` images: the batch is run as ``subdivisions`` forward/backward passes of
``batch/subdivisions`` images each, their gradients ADDED into ``.grad``; ``seen`` grows by each
sub-batch; then the learning rate of batch ``n = seen/batch`` (``DarknetLR``: burn_in and the policy) and
one ``DarknetSGD`` step (decay·B on weights, momentum, lr/B, per-layer ``learning_rate``). The reported
loss of a batch is ``Σ_sub (Σ layer costs / #cost layers) / batch``; the running average ``0.9·avg + 0.1·loss``.
Training stops when ``seen/batch`` reaches ``max_batches``.

``fit`` (classifiers, arrays) and ``fit_detection`` (detectors: batches of images and one (k, 5) array of
``[class, x, y, w, h]`` per image) run the loop with every callback (``darknet.task``): progress with the ETA,
``history.jsonl``, checkpoints (``<base>_<n>`` every ``save_every`` batches, the newest ``keep`` kept,
``<base>_last`` with them and at the end, ``<base>_final.weights`` at the end, ``<base>_best`` at each better
evaluation; each one ``.state.npz`` with its ``.weights`` copy: ``darknet.checkpoint``), exact resume
(``resume``), Ctrl-C, the divergence guard, the rank guard and, with ``random=1`` on the last layer, Darknet's
multi-scale rule (``deltaprop.training.multiscale``: a new square size before every 10th batch, 320..608 for a
416 cfg, the largest once fewer than 200 batches remain; the network is resized and the loader asked for that
size with ``set_size``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import backend
from ..errors import ConfigError, DivergenceError, ShapeError
from ..optim.darknet import DarknetSGD
from ..optim.darknet_policy import DarknetLR
from ..training import Evaluation, StepOutput, first_nonfinite_layer
from ..training.multiscale import MultiScale
from .train_loss import loss_layer_indices
from .yolo_stats import merge_yolo_stats, region_line


@dataclass
class StepResult:
    """One update: the reported loss, the learning rate used, the batch number after it, ``seen``, each
    forward pass's costs per loss layer, and each [yolo] head's statistics over the whole batch."""
    loss: float
    lr: float
    batch_num: int
    seen: int
    costs: List[Dict[int, float]]
    yolo_stats: List[Dict[str, float]] = field(default_factory=list)


def one_hot(labels: np.ndarray, classes: int, dtype=np.float32) -> np.ndarray:
    """Darknet's classifier truth: 1 at the label, 0 elsewhere, (N, classes)."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShapeError(f"labels must lie in 0..{classes - 1}, got {labels.min()}..{labels.max()}")
    t = np.zeros((labels.shape[0], classes), dtype=dtype)
    t[np.arange(labels.shape[0]), labels] = 1
    return t


# --- data parallelism (deltaprop.distributed; docs/distributed.md) ------------------------------

def _data_parallel(net, comm, sync_bn: bool, mini_batch: int):
    """The trainer's DataParallel: every rank starts from rank 0's weights; each needs a row of every mini-batch."""
    from ..distributed import DataParallel, world
    dp = DataParallel(net, comm or world(), sync_bn=sync_bn)
    if dp.active and mini_batch < dp.comm.size:
        raise ConfigError(f"a mini-batch of {mini_batch} images (batch/subdivisions) cannot be shared by "
                          f"{dp.comm.size} ranks: use fewer subdivisions or processes")
    dp.broadcast_state()
    return dp


def _shard(dp, x: np.ndarray, truth):
    """This rank's rows of a mini-batch."""
    if not dp.active:
        return x, truth
    from ..distributed import shard_bounds
    lo, hi = shard_bounds(len(x), dp.comm.rank, dp.comm.size)
    return x[lo:hi], truth[lo:hi]


def _send_gradients_after(dp, last: bool) -> None:
    """Gradients travel during the last sub-batch's backward; the earlier ones only accumulate."""
    if dp.active:
        dp.reducer.sync = last


def _sum_gradients(dp, total: float) -> float:
    """Wait for the summed gradients (Darknet's deltas are sums over the images: no scaling); the summed cost."""
    if not dp.active:
        return total
    dp.reducer.finish()
    return dp.totals(total)[0]


class DarknetTrainer:
    """Trains a ``DarknetNet`` the way Darknet does (see the module docstring).

    ``numerics`` switches the network ("darknet": Darknet's BN and loss deltas; "standard": textbook BN and
    true loss gradients); the update rule and schedule are Darknet's in both. Overrides (None: the cfg's):
    ``batch``, ``subdivisions``, ``learning_rate``, ``momentum``, ``decay``, ``max_batches``.
    ``multiscale``: (smallest, largest) square size of Darknet's ``random=1`` rule, multiples of 32 (default:
    Darknet's 320..608 scaled to the cfg's width, ``training.multiscale.darknet_range``); ``False`` turns the
    rule off even where the cfg has ``random=1``.
    ``keep_layer_grads``: keep ``net.layer_grads`` of each step's last pass (a copy of every layer's output
    gradient; off by default: it costs as much memory again as the activations).
    Like Darknet, it turns off the gradient of the network input (``net.needs_input_grad = False``).
    Under ``mpirun -n N`` (or with ``comm``) each rank runs its shard of every mini-batch and the summed
    gradients make the one-process update (docs/distributed.md); ``sync_bn`` synchronises batch norm.
    """

    def __init__(self, net, numerics: Optional[str] = None, batch: Optional[int] = None,
                 subdivisions: Optional[int] = None, learning_rate: Optional[float] = None,
                 momentum: Optional[float] = None, decay: Optional[float] = None,
                 max_batches: Optional[int] = None, rng: Optional[np.random.Generator] = None,
                 multiscale=None, comm=None, sync_bn: bool = False, keep_layer_grads: bool = False) -> None:
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
        last = net.layers[-1]
        self.scales: Optional[MultiScale] = None
        if multiscale is not False and last.detection_head and last.random:
            _, h, w = net.input_shape
            self.scales = MultiScale((w, h), None if multiscale in (None, True) else tuple(multiscale), self.rng)
        self.keep_layer_grads = bool(keep_layer_grads)
        object.__setattr__(net, "needs_input_grad", False)   # Darknet never computes the input's delta
        self.dp = _data_parallel(net, comm, sync_bn, self.mini_batch)

    @property
    def current_batch(self) -> int:
        """Darknet's ``get_current_batch``: seen / batch."""
        return int(self.net.seen) // self.batch

    @property
    def multiscale(self) -> Optional[Tuple[int, int]]:
        """(smallest, largest) size of the multi-scale rule, None when it is off."""
        return None if self.scales is None else self.scales.sizes

    @property
    def _scale_count(self) -> int:
        return 0 if self.scales is None else self.scales.count

    @_scale_count.setter
    def _scale_count(self, value: int) -> None:
        if self.scales is not None:
            self.scales.count = int(value)

    # --- one update ---------------------------------------------------------------------------------
    def forward_backward(self, X: np.ndarray, truth) -> StepOutput:
        """The ``subdivisions`` forward/backward passes of one update on ``batch`` images X (N, C, H, W) with
        truths (an array (N, ...) for classifier loss layers, or a list of N (k, 5) arrays ``[class, x, y, w,
        h]`` for [yolo]), gradients added into ``.grad`` and summed over the ranks; the weights do not change.
        ``StepOutput.info`` holds the costs of each pass and the merged [yolo] statistics."""
        if len(X) != self.batch or len(truth) != self.batch:
            raise ShapeError(f"train_step: expected {self.batch} images and truths (batch {self.batch} = "
                             f"{self.subdivisions} × {self.mini_batch}), got {len(X)} and {len(truth)}")
        net = self.net
        net.train()
        total, per_sub, stats = 0.0, [], []
        m = self.mini_batch
        keep = net.keep_layer_grads
        object.__setattr__(net, "keep_layer_grads", self.keep_layer_grads)
        try:
            for s in range(self.subdivisions):
                x, t = _shard(self.dp, X[s * m:(s + 1) * m], truth[s * m:(s + 1) * m])
                object.__setattr__(net, "seen", int(net.seen) + m)   # train_network_datum: seen += batch
                _send_gradients_after(self.dp, s == self.subdivisions - 1)
                net(x)
                net.loss(t)
                net.backward(None)                                     # None: the loss's backward
                costs = net.loss_costs
                per_sub.append(costs)
                stats.append(net.yolo_stats)
                total += sum(costs.values()) / len(costs)              # calc_network_cost
        finally:
            object.__setattr__(net, "keep_layer_grads", keep)
        total = _sum_gradients(self.dp, total)                         # over the ranks (Σ, Darknet's deltas)
        loss = total / self.batch                                      # train_network: sum/(n·batch)
        return StepOutput(loss, self.batch, {"costs": per_sub, "yolo_stats": merge_yolo_stats(stats),
                                             "size": (int(X.shape[-1]), int(X.shape[-2]))})

    def update(self, out: StepOutput) -> StepResult:
        """The update after ``forward_backward``: the learning rate of this batch, Darknet's SGD step, the
        running loss average."""
        n = self.current_batch
        lr = self.policy(n, self.rng)
        self.optimizer.set_lr(lr)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.avg_loss = out.loss if self.avg_loss is None else 0.9 * self.avg_loss + 0.1 * out.loss
        out.info.update(lr=lr, batch=n, seen=int(self.net.seen))
        return StepResult(out.loss, lr, n, int(self.net.seen), out.info["costs"], out.info["yolo_stats"])

    def diverged(self, out: StepOutput) -> DivergenceError:
        """The error of a non-finite loss: the batch and the first layer whose output or weights are not finite."""
        where = first_nonfinite_layer(self.net) or "no layer output or parameter (the loss itself)"
        return DivergenceError(f"batch {self.current_batch}: the loss is {out.loss}; the first NaN/inf is in "
                               f"{where}. Lower learning_rate (or raise burn_in) in the cfg, or check the data")

    def train_step(self, X: np.ndarray, truth) -> StepResult:
        """One Darknet update (``forward_backward``, then ``update``); a non-finite loss raises DivergenceError
        before the weights change."""
        out = self.forward_backward(X, truth)
        if not math.isfinite(out.loss):
            raise self.diverged(out)
        return self.update(out)

    def next_size(self) -> Optional[Tuple[int, int]]:
        """Darknet's multi-scale rule, asked before each batch: a new size before every 10th (the first
        included), else None (always None when the rule is off)."""
        if self.scales is None:
            return None
        size = self.scales.next_size(self.current_batch, self.max_batches)
        return None if size is None else size[0]

    # --- the data -----------------------------------------------------------------------------------
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

    def detection_batches(self, loader: Iterable) -> Iterator[Tuple[np.ndarray, List[np.ndarray]]]:
        """Updates of ``batch`` images from ``loader``'s batches (regrouped; an iterable is cycled). Images
        not at the network's current size (built ahead before a multi-scale resize) are dropped, as Darknet
        drops the batch it had loaded."""
        def cycle():
            while True:
                got = False
                for item in loader:
                    got = True
                    yield item
                if not got:
                    raise ShapeError("fit_detection: the loader gave no (more) batches (a generator is read "
                                     "once: give a list or a DetectionLoader)")
        src = cycle()
        images: List[np.ndarray] = []          # images (and their targets) read but not yet trained on
        rows: List[np.ndarray] = []
        stale = 0
        while True:
            want = tuple(self.net.input_shape)
            keep = [k for k, im in enumerate(images) if im.shape == want]
            images, rows = [images[k] for k in keep], [rows[k] for k in keep]
            while len(images) < self.batch:
                x, t = next(src)
                if len(t) != len(x):
                    raise ShapeError(f"fit_detection: {len(x)} images but {len(t)} target arrays in a batch")
                if tuple(x.shape[1:]) != want:     # built ahead at the old size: dropped, as Darknet does
                    stale += 1
                    if stale > 16:
                        raise ShapeError(f"fit_detection: the loader keeps giving images of {tuple(x.shape[1:])}, "
                                         f"the network takes {want}")
                    continue
                stale = 0
                images.extend(np.asarray(x, dtype=self.net.dtype))
                rows.extend(t)
            X = np.stack(images[:self.batch])
            T = rows[:self.batch]
            images, rows = images[self.batch:], rows[self.batch:]
            yield X, T

    # --- the runs -----------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, labels: np.ndarray, classes: int, *, out_dir=None, base: str = "model",
            save_every: int = 1000, keep: Optional[int] = 3, log_every: int = 10,
            eval_data: Optional[Tuple[np.ndarray, np.ndarray]] = None, eval_every: Optional[int] = None,
            seed: int = 0, progress: bool = True, log: Callable[[str], None] = print, stop=None,
            callbacks: Sequence = (), resume=None, **run_options) -> List[Dict[str, Any]]:
        """Train a classifier on (X, labels) until ``max_batches`` (see the module docstring for what is
        written into ``out_dir``); returns the history records. ``eval_data`` (X, labels): accuracy every
        ``eval_every`` batches (and ``<base>_best`` when it improves). Ctrl-C (SIGINT in the main thread;
        ``stop``: a ``deltaprop.training.StopRequest`` the caller activated earlier) stops at the next batch
        boundary, writes ``<base>_last`` and raises ``TrainingInterrupted`` naming it. ``resume``: a checkpoint
        (``.state.npz``, or a ``.weights`` with its state beside it) of this run to continue exactly.
        ``run_options``: ``darknet.task.run``'s (``files``, ``settings``, ``resume_command``)."""
        from .task import run
        it = self.batches(len(X), seed)

        def data():
            for idx in it:
                yield X[idx], one_hot(labels[idx], classes, X.dtype)

        evaluation = None
        if eval_data is not None and eval_every:
            def measure() -> Dict[str, Any]:
                loss, acc = evaluate(self.net, *eval_data)
                return {"eval_loss": loss, "eval_acc": acc}
            evaluation = Evaluation(measure, monitor="eval_acc", mode="max", every=eval_every,
                                    announce=lambda n, v, best: f"batch {n}: eval loss {v['eval_loss']:.4f}, acc "
                                                                f"{v['eval_acc']:.4f}" + (" (best so far)" if best else ""))
        return run(self, data(), out_dir=out_dir, base=base, save_every=save_every, keep=keep,
                   log_every=log_every, progress=progress, log=log, stop=stop, callbacks=callbacks, resume=resume,
                   evaluation=evaluation, **run_options)

    def fit_detection(self, loader: Iterable, *, out_dir=None, base: str = "model", save_every: int = 1000,
                      keep: Optional[int] = 3, log_every: int = 10, progress: bool = True,
                      log: Callable[[str], None] = print, stop=None, callbacks: Sequence = (), resume=None,
                      **run_options) -> List[Dict[str, Any]]:
        """Train a detector until ``max_batches`` on ``loader``: an iterable of ``(x (n, C, H, W), targets)``
        with one (k, 5) array of ``[class, x, y, w, h]`` per image (``DetectionLoader``, or a list of such
        batches, cycled; see ``detection_batches``). With multi-scale (``random=1``) the loader must have
        ``set_size(width, height)``. History records carry each head's statistics; Darknet's "Region" lines
        are logged every ``log_every`` batches. Checkpoints, Ctrl-C, ``resume``: as ``fit``."""
        from .task import run
        if self.scales is not None and not hasattr(loader, "set_size"):
            raise ConfigError(f"layer {len(self.net.layers) - 1} [yolo] has random=1 (multi-scale training): the "
                              f"data must offer set_size(width, height), as DetectionLoader does; or train "
                              f"with multiscale=False")
        return run(self, self.detection_batches(loader), out_dir=out_dir, base=base, save_every=save_every,
                   keep=keep, log_every=log_every, progress=progress, log=log, stop=stop, callbacks=callbacks,
                   resume=resume, loader=loader, **run_options)

    # --- checkpoints --------------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """What a checkpoint keeps of the trainer beyond the net and the optimizer."""
        return {"seen": int(self.net.seen), "batch": self.current_batch, "max_batches": int(self.max_batches),
                "avg_loss": self.avg_loss, "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state(self, state: Dict[str, Any]) -> None:
        """Restore ``state()`` (``seen``, the running loss, the generator)."""
        object.__setattr__(self.net, "seen", int(state["seen"]))
        self.avg_loss = state.get("avg_loss")
        if state.get("rng"):
            self.rng.bit_generator.state = json.loads(state["rng"])


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


__all__ = ["DarknetTrainer", "StepResult", "one_hot", "evaluate", "merge_yolo_stats", "region_line"]
