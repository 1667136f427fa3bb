"""Training a cfg detector on a Darknet ``.data`` set (Darknet's ``train_detector``, with AlexeyAB's ``-map``
and ``_best.weights``): :class:`deltaprop.darknet.trainer.DarknetTrainer` does each update (subdivisions,
burn_in and the learning-rate policy, Darknet's SGD) on the batches of
:class:`deltaprop.data.detection.DetectionLoader` (the cfg's ``jitter``, ``hue``, ``saturation``, ``exposure``,
``flip``), in ``deltaprop.training``'s loop with every callback (``darknet.task``); this module adds what a
detector measures: mAP@0.5 on ``valid`` every ``map_every`` batches (``_best`` at each better one) and
Darknet's chart.

Into the ``backup`` folder (locked while the run writes there) go ``<cfg>_<n>.weights`` every ``save_every``
batches (the newest ``keep`` stay), ``<cfg>_last.weights`` with each of those, on Ctrl-C and at the end,
``<cfg>_final.weights`` at the end and ``<cfg>_best.weights``. Each checkpoint is one ``.state.npz`` (the
weights, the SGD momentum, the loader's epoch and position, the running loss, the best mAP, the multi-scale
state, the random states, the history) with its ``.weights`` written after it: training from such a
``.weights`` resumes exactly where it stopped, and a pair that disagrees (a save killed between the two files)
is refused with the name of the newest whole checkpoint. ``history.jsonl`` has one record every ``log_every``
batches and one per mAP measurement; ``chart.png`` draws it (at every mAP, live, on Ctrl-C and at the end).

With ``random=1`` on the last [yolo] layer, Darknet's multi-scale rule (``deltaprop.training.multiscale``).
A non-finite loss stops the run with a DivergenceError naming the batch and the first layer whose output
(or parameters) holds a NaN or infinity.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import ConfigError, DataError
from ..training import CHART, Callback, Chart, Evaluation, duration
from .detector import yolo_layers

HISTORY = "history.jsonl"


@dataclass
class TrainOptions:
    """Settings of a detector run (None: the cfg's)."""
    max_batches: Optional[int] = None
    batch: Optional[int] = None
    subdivisions: Optional[int] = None
    learning_rate: Optional[float] = None
    save_every: int = 100
    keep: Optional[int] = 3              # numbered checkpoints kept (None: all)
    log_every: int = 10
    map_every: int = 0                   # 0: no mAP during training
    map_images: Optional[int] = None     # the first N images of valid (None: all)
    workers: int = 2
    seed: int = 0
    progress: bool = True
    chart: bool = True
    skip_bad_labels: bool = False


class DetectorTraining:
    """One training run of ``net`` (a DarknetNet ending in [yolo] layers) on ``data`` (a DataConfig).
    ``resume_command(checkpoint)``: the command printed on Ctrl-C (None: none printed)."""

    def __init__(self, net, data, out_dir: "Path | str", base: str, opts: Optional[TrainOptions] = None,
                 names: Optional[Sequence[str]] = None, log: Callable[[str], None] = print,
                 resume_command: Optional[Callable[[Path], str]] = None) -> None:
        from ..darknet.trainer import DarknetTrainer
        from ..data.augment import Augment
        from ..data.detection import DetectionDataset, DetectionLoader
        self.opts = opts or TrainOptions()
        self.net = net
        self.data = data
        self.names = list(names or [])
        self.log = log
        self.resume_command = resume_command
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
        self.random = self.trainer.scales is not None
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
        self._resume: Optional[Path] = None

    def resume(self, weights: "Path | str") -> bool:
        """Continue from the checkpoint ``weights`` (a ``.weights`` this trainer wrote, with its ``.state.npz``
        beside it, or the state file itself): True. False for a plain Darknet ``.weights`` (training goes on
        from its ``seen`` with fresh momentum). A pair that disagrees raises CheckpointError naming the newest
        whole checkpoint."""
        from ..darknet.checkpoint import state_path
        from ..darknet.task import open_checkpoint
        p = Path(weights)
        if p.name.endswith(".weights") and not state_path(p).is_file():
            return False
        self._resume = open_checkpoint(p, self.base)[0] if p.name.endswith(".weights") else p
        return True

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

    def _map_values(self) -> Dict[str, Any]:
        m = self.measure_map()
        return {"map50": m.map50, "map": m.map, "precision": m.precision, "recall": m.recall_at_thresh}

    def _announce(self, n: int, values: Dict[str, Any], best) -> str:
        msg = f"batch {n}: mAP@0.5 {values['map50'] * 100:.2f}%, mAP@[.5:.95] {values['map'] * 100:.2f}%"
        return msg + (f" (best so far: {self.base}_best.weights)" if best is not None else "")

    def fit(self, stop=None) -> List[Dict[str, Any]]:
        """Train until ``max_batches``; returns the history records. Ctrl-C (``stop``: a
        ``deltaprop.training.StopRequest`` the caller activated earlier) saves ``_last`` and raises
        ``TrainingInterrupted``."""
        from .draw import plot_training_curve
        o = self.opts
        evaluation = Evaluation(self._map_values, monitor="map50", mode="max", every=o.map_every,
                                announce=self._announce) if o.map_every else None
        chart = Chart(self.out / CHART, title=f"{self.base}: training", draw=plot_training_curve) \
            if o.chart else None
        self.history = self.trainer.fit_detection(
            self.loader, out_dir=self.out, base=self.base, save_every=o.save_every, keep=o.keep,
            log_every=o.log_every, progress=o.progress, log=self.log, stop=stop, resume=self._resume,
            evaluation=evaluation, chart=chart, resume_command=self.resume_command,
            settings={"seed": o.seed}, callbacks=[_Summary(self, evaluation)])
        return self.history

    def summary(self, batches: int, seconds: float) -> str:
        """The run in one line: batches, images, time, images/s, the last avg loss and the best mAP@0.5."""
        images = batches * self.trainer.batch
        line = (f"trained {batches} batches ({images} images) in {duration(seconds)}, "
                f"{images / max(seconds, 1e-9):.1f} images/s, avg loss {self.trainer.avg_loss:.4f}")
        if self.best_map is not None:
            line += f", best mAP@0.5 {self.best_map * 100:.2f}% ({self.base}_best.weights)"
        return line


class _Summary(Callback):
    """At the end of a run that trained: the run in one line (``DetectorTraining.summary``) and the file written."""

    def __init__(self, run: DetectorTraining, evaluation: Optional[Evaluation]) -> None:
        self.run, self.evaluation = run, evaluation

    def on_end(self, loop) -> None:
        if self.evaluation is not None:
            self.run.best_map = self.evaluation.best
        trained = loop.task.steps_done - loop.state.start_step
        if trained > 0:
            seconds = time.perf_counter() - loop.state.started
            loop.say(self.run.summary(trained, seconds) + f"; wrote {self.run.out / (self.run.base + '_final.weights')}")
