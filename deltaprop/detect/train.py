"""Training a cfg detector on a Darknet ``.data`` set (Darknet's ``train_detector``, with AlexeyAB's ``-map``
and ``_best.weights``): :class:`deltaprop.darknet.trainer.DarknetTrainer` does each update (subdivisions,
burn_in and the learning-rate policy, Darknet's SGD), :class:`deltaprop.data.detection.DetectionLoader` builds
the augmented batches (the cfg's ``jitter``, ``hue``, ``saturation``, ``exposure``, ``flip``), this module
runs the loop around them.

Into the ``backup`` folder go ``<cfg>_<n>.weights`` every ``save_every`` batches, ``<cfg>_last.weights`` with
each of those and at the end, ``<cfg>_final.weights`` at the end, ``<cfg>_best.weights`` whenever the mAP@0.5
on ``valid`` (measured every ``map_every`` batches) beats the best so far; all atomic. Beside each ``_last``
and numbered file a ``.state.npz`` (a deltaprop checkpoint) keeps what a ``.weights`` file cannot: the SGD
momentum, the loader's epoch and position, the running loss, the best mAP, the multi-scale size; training
from such a ``.weights`` file resumes exactly where it stopped. ``history.jsonl`` has one record every
``log_every`` batches and one per mAP measurement; ``chart.png`` draws it (when matplotlib is there).

A non-finite loss stops the run with a DivergenceError naming the batch and the first layer whose output
(or parameters) holds a NaN or infinity.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_write_text
from ..distributed import guarded, main_rank_only
from ..errors import CheckpointError, ConfigError, DataError, DivergenceError
from .detector import yolo_layers

HISTORY = "history.jsonl"
CHART = "chart.png"


@dataclass
class TrainOptions:
    """Settings of a detector run (None: the cfg's)."""
    max_batches: Optional[int] = None
    batch: Optional[int] = None
    subdivisions: Optional[int] = None
    learning_rate: Optional[float] = None
    save_every: int = 100
    log_every: int = 10
    map_every: int = 0                   # 0: no mAP during training
    map_images: Optional[int] = None     # the first N images of valid (None: all)
    workers: int = 2
    seed: int = 0
    progress: bool = True
    chart: bool = True
    skip_bad_labels: bool = False


def state_path(weights: "Path | str") -> Path:
    """The ``.state.npz`` beside a ``.weights`` checkpoint."""
    p = Path(weights)
    return p.with_name(p.stem + ".state.npz")


def first_nonfinite_layer(net) -> Optional[str]:
    """The first layer whose last output, or whose parameters, hold a NaN or an infinity, as
    ``"layer i [kind]"`` (None when all are finite)."""
    outs = getattr(net, "layer_outputs", None) or []
    for i, out in enumerate(outs):
        if isinstance(out, np.ndarray) and out.size and not np.isfinite(out).all():
            return f"layer {i} [{net.layers[i].kind}] (its output)"
    for i, layer in enumerate(net.layers):
        for name, p in layer.named_parameters():
            if not np.isfinite(p.data).all():
                return f"layer {i} [{layer.kind}] (its {name})"
    return None


def head_stats(stats: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The [yolo] heads' statistics of one step combined, weighted by their object counts (Darknet prints
    them per head): avg_iou, recall50, recall75, class, obj; no_obj averaged over the heads."""
    out: Dict[str, float] = {}
    count = sum(int(s.get("count", 0) or 0) for s in stats)
    for key in ("avg_iou", "recall50", "recall75", "class", "obj"):
        if count:
            out[key] = sum(float(s[key]) * int(s["count"]) for s in stats
                           if int(s.get("count", 0) or 0) and math.isfinite(float(s.get(key, math.nan))))
            out[key] /= count
        else:
            out[key] = math.nan
    noobj = [float(s["no_obj"]) for s in stats if "no_obj" in s]
    out["no_obj"] = sum(noobj) / len(noobj) if noobj else math.nan
    out["count"] = count
    return out


class DetectorTraining:
    """One training run of ``net`` (a DarknetNet ending in [yolo] layers) on ``data`` (a DataConfig)."""

    def __init__(self, net, data, out_dir: "Path | str", base: str, opts: Optional[TrainOptions] = None,
                 names: Optional[Sequence[str]] = None, log: Callable[[str], None] = print) -> None:
        from ..darknet.trainer import DarknetTrainer
        from ..data.augment import Augment
        from ..data.detection import DetectionDataset, DetectionLoader
        self.opts = opts or TrainOptions()
        self.net = net
        self.data = data
        self.names = list(names or [])
        self.log = log
        yolos = yolo_layers(net, data.classes, data.path)
        if data.train is None:
            raise DataError(f"{data.path}: no 'train' list to train on")
        self.trainer = DarknetTrainer(net, batch=self.opts.batch, subdivisions=self.opts.subdivisions,
                                      learning_rate=self.opts.learning_rate, max_batches=self.opts.max_batches)
        if self.trainer.max_batches <= 0:
            raise ConfigError(f"{net.source}: max_batches is 0: set it in [net] or give --max-batches")
        opts_net = dict(net.net_options)
        for key, opt in net.plan.net_section.options.items():       # keys parse_net_options leaves out (flip)
            opts_net.setdefault(key, opt.value)
        self.augment = Augment.from_cfg(opts_net, {"jitter": yolos[-1].jitter})   # Darknet: the last layer's
        _, h, w = net.input_shape
        self.base_size = (w, h)
        self.random = any(bool(layer.random) for layer in yolos)
        self.dataset = DetectionDataset(data.train, data.classes, w, h, augment=self.augment,
                                        seed=self.opts.seed, skip_bad=self.opts.skip_bad_labels)
        if len(self.dataset) < self.trainer.batch:
            raise DataError(f"{data.train}: {len(self.dataset)} images, fewer than one batch of "
                            f"{self.trainer.batch} (lower batch in the cfg or --batch)")
        self.loader = DetectionLoader(self.dataset, self.trainer.batch, shuffle=True, seed=self.opts.seed,
                                      workers=self.opts.workers, drop_last=True)
        self.out = Path(out_dir)
        self.base = base
        self.best_map: Optional[float] = None
        self.history: List[Dict[str, Any]] = []
        self.valid_images: Optional[List[Path]] = None

    # --- checkpoints --------------------------------------------------------------------------------
    def _extra(self) -> Dict[str, Any]:
        return {"loader": self.loader.state_dict(), "avg_loss": self.trainer.avg_loss, "best_map": self.best_map,
                "seen": int(self.net.seen), "batch": self.trainer.current_batch,
                "rng": json.dumps(self.trainer.rng.bit_generator.state)}

    @main_rank_only                                  # under mpirun rank 0 writes (docs/distributed.md)
    def save(self, name: str) -> Path:
        """``<backup>/<base>_<name>.weights`` and its ``.state.npz``, each written atomically."""
        from ..darknet.weights import save_weights
        from ..io import save_checkpoint
        path = self.out / f"{self.base}_{name}.weights"
        save_weights(self.net, path)
        save_checkpoint(state_path(path), self.net, self.trainer.optimizer, step=self.trainer.current_batch,
                        rng_state=False, extra=self._extra())
        return path

    def resume(self, weights: "Path | str") -> bool:
        """Restore the state saved beside ``weights`` (already loaded into the net). False when there is
        none (a plain Darknet .weights: training goes on from its ``seen`` with fresh momentum)."""
        from ..io import read_checkpoint
        sp = state_path(weights)
        if not sp.is_file():
            return False
        ck = read_checkpoint(sp)
        extra = ck.extra
        if int(extra.get("seen", -1)) != int(self.net.seen):
            raise CheckpointError(f"{sp}: saved at seen={extra.get('seen')} but {weights} has seen="
                                  f"{self.net.seen}: the two files are not from the same moment")
        if ck.optimizer_state is not None:
            self.trainer.optimizer.load_state_dict(ck.optimizer_state)
        self.loader.load_state_dict(extra["loader"])
        if (self.loader.width, self.loader.height) != tuple(self.net.input_shape[2:0:-1]):
            self.net.resize(self.loader.width, self.loader.height)
        self.trainer.avg_loss = extra.get("avg_loss")
        self.best_map = extra.get("best_map")
        if extra.get("rng"):
            self.trainer.rng.bit_generator.state = json.loads(extra["rng"])
        return True

    # --- the loop -----------------------------------------------------------------------------------
    @main_rank_only
    def _record(self, rec: Dict[str, Any]) -> None:
        self.history.append(rec)
        with open(self.out / HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    @main_rank_only
    def _trim_history(self, upto: int) -> None:
        """Keep the records of batches ≤ ``upto`` (a resumed run rewrites what came after its checkpoint)."""
        p = self.out / HISTORY
        if not p.is_file():
            return
        keep = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and int(rec.get("batch", 0)) <= upto:
                keep.append(rec)
        atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in keep))
        self.history = keep

    def measure_map(self):
        """mAP of the current weights on ``valid`` (the first ``map_images``), at the cfg's input size."""
        from ..data.detection import image_list
        from .evaluate import evaluate_detector
        if self.valid_images is None:
            if self.data.valid is None:
                raise DataError(f"{self.data.path}: no 'valid' list to measure mAP on")
            imgs = image_list(self.data.valid)
            self.valid_images = imgs[:self.opts.map_images] if self.opts.map_images else imgs
        size = tuple(self.net.input_shape[2:0:-1])
        if size != self.base_size:
            self.net.resize(*self.base_size)
        try:
            return evaluate_detector(self.net, self.valid_images, self.data.classes, self.names,
                                     workers=self.opts.workers)
        finally:
            if size != self.base_size:
                self.net.resize(*size)

    def _multiscale(self, n: int) -> None:
        """Darknet's ``random=1``: every 10 batches a new input size, a multiple of 32 from about 0.7 to 1.3
        times the cfg's (drawn from (seed, batch), so a resumed run draws the same)."""
        if not self.random or n % 10:
            return
        rng = np.random.default_rng([self.opts.seed, n, 0x5CA1E])
        w0, h0 = self.base_size
        k = rng.uniform(0.7, 1.3)
        w, h = max(32, int(round(w0 * k / 32)) * 32), max(32, int(round(h0 * k / 32)) * 32)
        if (w, h) != tuple(self.net.input_shape[2:0:-1]):
            self.net.resize(w, h)
            self.loader.set_size(w, h)

    def step(self, x: np.ndarray, targets) -> Any:
        """One update; a non-finite loss or parameter raises DivergenceError naming batch and layer."""
        n = self.trainer.current_batch + 1
        try:
            res = self.trainer.train_step(x.astype(self.net.dtype, copy=False), targets)
        except DivergenceError as e:
            where = first_nonfinite_layer(self.net) or "no layer output or parameter (the loss itself)"
            raise DivergenceError(f"batch {n}: the loss is not finite; the first NaN/inf is in {where}. "
                                  f"Lower learning_rate (or raise burn_in) in the cfg. ({e})") from None
        where = first_nonfinite_layer(self.net)
        if where is not None:
            raise DivergenceError(f"batch {n}: NaN/inf after the update in {where}; lower learning_rate")
        return res

    @guarded                                         # a failing rank ends every rank
    def fit(self) -> List[Dict[str, Any]]:
        """Train until ``max_batches``; returns the history records."""
        o = self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        start = self.trainer.current_batch
        self._trim_history(start)
        todo = self.trainer.max_batches - start
        if todo <= 0:
            self.log(f"already at batch {start} ≥ max_batches {self.trainer.max_batches}: nothing to train")
        bar = _progress(todo, o.progress, start)
        t0 = time.perf_counter()
        last_t, last_n = t0, start
        batches: Iterator = self.loader.batches()
        try:
            while self.trainer.current_batch < self.trainer.max_batches:
                x, targets = next(batches)
                res = self.step(x, targets)
                n = res.batch_num
                st = head_stats(self.net.yolo_stats)
                now = time.perf_counter()
                ips = (n - last_n) * self.trainer.batch / max(now - last_t, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"loss {res.loss:.3f} avg {self.trainer.avg_loss:.3f} iou "
                                        f"{st['avg_iou']:.2f} recall {st['recall50']:.2f} {ips:.1f} img/s",
                                        refresh=False)
                if n % o.log_every == 0 or n == self.trainer.max_batches:
                    rec = {"batch": n, "seen": res.seen, "loss": res.loss, "avg_loss": self.trainer.avg_loss,
                           "lr": res.lr, "avg_iou": _num(st["avg_iou"]), "recall50": _num(st["recall50"]),
                           "images_per_s": round(ips, 2), "elapsed_s": round(now - t0, 2),
                           "size": list(self.net.input_shape[2:0:-1])}
                    if bar is None:
                        self.log(f"{n}: loss {res.loss:.4f}, avg {self.trainer.avg_loss:.4f}, iou "
                                 f"{st['avg_iou']:.3f}, recall {st['recall50']:.3f}, rate {res.lr:.6g}, "
                                 f"{ips:.1f} images/s")
                    self._record(rec)
                    last_t, last_n = time.perf_counter(), n
                if o.map_every and (n % o.map_every == 0 or n == self.trainer.max_batches):
                    m = self.measure_map()
                    rec = {"batch": n, "map50": m.map50, "map": m.map, "precision": m.precision,
                           "recall": m.recall_at_thresh}
                    better = self.best_map is None or m.map50 > self.best_map
                    msg = f"batch {n}: mAP@0.5 {m.map50 * 100:.2f}%, mAP@[.5:.95] {m.map * 100:.2f}%"
                    if better:
                        self.best_map = m.map50
                        self.save("best")
                        msg += f" (best so far: {self.base}_best.weights)"
                    (bar.write if bar is not None else self.log)(msg)
                    self._record(rec)
                if o.save_every and n % o.save_every == 0 and n < self.trainer.max_batches:
                    self.save(str(n))
                    self.save("last")
                self._multiscale(n)
        finally:
            if bar is not None:
                bar.close()
            self.loader.close()
        if todo > 0:
            self.save("last")
            final = self.save("final")
            self.log(self.summary(self.trainer.current_batch - start, time.perf_counter() - t0) + f"; wrote {final}")
        if o.chart and self.history:
            self.chart()
        return self.history

    def summary(self, batches: int, seconds: float) -> str:
        """The run in one line: batches, images, time, images/s, the last avg loss and the best mAP@0.5."""
        images = batches * self.trainer.batch
        line = (f"trained {batches} batches ({images} images) in {_duration(seconds)}, "
                f"{images / max(seconds, 1e-9):.1f} images/s, avg loss {self.trainer.avg_loss:.4f}")
        if self.best_map is not None:
            line += f", best mAP@0.5 {self.best_map * 100:.2f}% ({self.base}_best.weights)"
        return line

    @main_rank_only
    def chart(self) -> Optional[Path]:
        """``chart.png`` from the history (skipped, with a note, without matplotlib)."""
        from .draw import plot_training_curve
        try:
            return plot_training_curve(self.history, self.out / CHART, title=f"{self.base}: training")
        except ImportError:
            self.log("no chart.png: matplotlib is not installed (pip install 'deltaprop[plot]')")
            return None


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def _num(v: float) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _progress(total: int, enabled: bool, start: int):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="batch", desc=f"train from {start}" if start else "train", dynamic_ncols=True)
