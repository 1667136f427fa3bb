"""``deltaprop train --cfg FILE.cfg ...``: the command-line side of ``deltaprop.darknet.trainer``.

Reads from the ``deltaprop train`` arguments: ``cfg``, ``weights``, ``clear``, ``data`` (``mnist`` or unset:
MNIST, found as ``deltaprop.data.load_mnist`` finds it; a directory with the MNIST files; or an image folder
with one sub-folder per class, optionally split into ``train/`` and ``test/``), ``lr`` (the cfg's
learning_rate), ``batch_size`` (the cfg's batch), ``momentum``, ``weight_decay`` (Darknet's decay), ``epochs``
(max_batches = the current batch + ⌈epochs·N/batch⌉; else the cfg's max_batches), ``seed``, ``out``,
``val_split``, ``limit``, ``progress``/``no_progress`` (a bar only on a terminal unless ``progress``); and, when
the parser has them, ``numerics`` (darknet|standard), ``save_every`` (batches between numbered checkpoints,
default 1000), ``keep`` (the numbered checkpoints kept: N or "all", default 3), ``subdivisions``, ``threads``.

The run writes into ``out`` (darknet.task): ``<cfg>_<n>.weights`` + ``.state.npz`` every ``save_every`` batches,
``last.npz`` (the state) + ``<cfg>_last.weights`` with them and at the end, ``<cfg>_final.weights``,
``<cfg>_best.*`` at each better validation accuracy, ``history.jsonl``, ``chart.png`` and ``result.json``.
Ctrl-C stops at the next batch boundary and writes ``OUT/last.npz``: the net, ``seen``, the optimizer's momentum,
the running loss average, the random states, the loop's state and these settings; ``deltaprop train --resume
OUT/last.npz`` (or any ``.state.npz`` of the run) then ends exactly where the uninterrupted run would have (the
same final ``.weights``, byte for byte). On resume only ``data`` (where the same images are) and ``keep`` may be
given anew; other settings that differ are refused.

BLAS threads: training runs with ONE BLAS thread unless ``threads`` or ``$DELTAPROP_BLAS_THREADS`` says
otherwise (needs threadpoolctl; without it nothing is changed). Measured on the 2-core machine shared with
other jobs: the small matrix products of these nets ran 3× faster on one thread (mnist-sized cfg, batch 128:
990 vs 344 images/s), because OpenBLAS's second thread spins waiting for a busy core.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..runtime import threads
from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


def _is_mnist_dir(path: Path) -> bool:
    return any(path.glob("train-images*idx3-ubyte*")) or any(path.glob("mnist/train-images*idx3-ubyte*"))


def load_image_folder(root, shape: Tuple[int, int, int]) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Images under ``root/<class>/`` as float32 (N, C, H, W) in [0, 1] (Darknet's scaling), resized to the
    cfg's width×height (Pillow, bilinear), grey for C = 1, RGB for C = 3; labels by sorted class name."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("training on an image folder needs Pillow: pip install 'deltaprop[images]'") from None
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    c, h, w = shape
    if c not in (1, 3):
        raise DataError(f"image folders feed 1- or 3-channel networks, this cfg has channels={c}")
    xs, ys = [], []
    for k, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_EXT)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32) / np.float32(255)
            except OSError as e:
                raise DataError(f"{f}: cannot read the image ({e})") from None
            xs.append(a[None] if c == 1 else a.transpose(2, 0, 1))
            ys.append(k)
    if not xs:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXT)}) in the class folders")
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64), classes


def load_data(spec: Optional[str], shape: Tuple[int, int, int], limit: Optional[int] = None, seed: int = 0):
    """((X, y), (X_test, y_test), description) for ``--data``."""
    from ..data import load_mnist, scale01
    path = None if spec in (None, "", "mnist") else Path(spec).expanduser()
    if path is None or _is_mnist_dir(path):
        if tuple(shape) != (1, 28, 28):
            c, h, w = shape
            raise ConfigError(f"MNIST images are 28x28x1 but the cfg's input is {w}x{h}x{c}: set width=28, "
                              f"height=28, channels=1 in [net] (or train on an image folder)")
        root = None if path is None else str(path)
        (xi, yi), (xt, yt) = load_mnist(root, "train"), load_mnist(root, "test")
        tr = (scale01(xi)[:, None], yi.astype(np.int64))
        te = (scale01(xt)[:, None], yt.astype(np.int64))
        desc = "MNIST"
        classes = 10
    else:
        if not path.is_dir():
            raise DataError(f"--data {spec}: not 'mnist' and not a directory")
        split = [path / s for s in ("train", "test") if (path / s).is_dir()]
        if len(split) == 2:
            xi, yi, names = load_image_folder(path / "train", shape)
            xt, yt, names_t = load_image_folder(path / "test", shape)
            if names_t != names:
                raise DataError(f"{path}: train/ and test/ have different classes ({names} vs {names_t})")
        else:
            from ..data import train_val_split
            x, y, names = load_image_folder(path, shape)
            (xi, yi), (xt, yt) = train_val_split(x, y, 0.1, seed=seed)
        tr, te = (xi, yi), (xt, yt)
        desc = f"image folder {path} ({len(names)} classes)"
        classes = len(names)
    if limit:
        tr, te = (tr[0][:limit], tr[1][:limit]), (te[0][:limit], te[1][:limit])
    return tr, te, desc, classes


def _classes_of(net) -> int:
    for s in reversed(net.plan.specs):
        if s.type != "cost":
            return s.out_size
    raise ConfigError("the cfg has no output layer")


# the options a cfg run stores in its Ctrl-C checkpoint (extra["darknet_fit"]["settings"]) and resumes with
SETTINGS = ("cfg", "data", "lr", "batch_size", "subdivisions", "momentum", "weight_decay", "epochs", "seed",
            "val_split", "limit", "numerics", "save_every", "keep")
RESUME_APPLIES = ("data", "keep")


def apply_resume_settings(args, stored: Dict[str, Any]) -> None:
    """Set ``args`` to a resumed cfg run's settings; an option given with another value is refused
    (ConfigError naming it), except ``RESUME_APPLIES``."""
    for k in SETTINGS:
        given = getattr(args, k, None)
        if given is None:
            setattr(args, k, stored.get(k))
        elif k not in RESUME_APPLIES and given != stored.get(k):
            flag = "--" + k.replace("_", "-")
            raise ConfigError(f"{flag} {given}: the resumed cfg run used {flag} {stored.get(k)}; with --resume "
                              f"only --data can change (start a new run for other settings)")


def run(args, resume=None) -> int:
    """Train (or, with ``resume``, a ``deltaprop.io.Checkpoint`` holding ``darknet_fit``, continue) a cfg run."""
    if resume is not None:
        apply_resume_settings(args, resume.extra["darknet_fit"]["settings"])
    with threads.limit_blas_threads(threads.product_threads(getattr(args, "threads", None), 1)):
        return _run(args, resume)


def _resumed_net(args, resume):
    """The net of a cfg run's checkpoint (built from the cfg it stores, at its ``seen``; the trainer loads the
    rest)."""
    from .. import io
    net = io.load_checkpoint(args.resume).model
    object.__setattr__(net, "seen", int(resume.extra["darknet_fit"]["seen"]))
    return net


def _run(args, resume=None) -> int:
    from . import load
    from .. import backend
    from ..training import Chart, StopRequest
    from ..training.checkpoints import resolve_keep
    from .trainer import DarknetTrainer, evaluate

    numerics = getattr(args, "numerics", None) or "darknet"
    seed = 0 if getattr(args, "seed", None) is None else int(args.seed)
    t_start = time.perf_counter()
    backend.manual_seed(seed)
    if resume is not None:
        net = _resumed_net(args, resume)
    else:
        net = load(args.cfg, args.weights, numerics=numerics)
        if getattr(args, "clear", False):
            object.__setattr__(net, "seen", 0)
    yolo = [layer.index for layer in net.detection_heads]
    if yolo:
        raise ConfigError(f"{args.cfg}: layer {yolo[0]} is [yolo]: a detector trains on detection data (a .data "
                          f"file): deltaprop detector train DATA {args.cfg} (or DarknetTrainer.fit_detection)")
    o = net.net_options
    batch = getattr(args, "batch_size", None)
    subdiv = getattr(args, "subdivisions", None)
    if batch is not None and subdiv is None and batch < o["subdivisions"]:
        subdiv = 1
    sub = int(subdiv or o["subdivisions"])
    if sub < 1 or int(batch or o["batch"]) < sub:
        raise ConfigError(f"--subdivisions {sub} with a batch of {int(batch or o['batch'])}: subdivisions must be "
                          f"between 1 and the batch (each of the {sub} passes needs at least one image)")
    (X, y), (Xt, yt), desc, classes = load_data(getattr(args, "data", None), net.input_shape,
                                                getattr(args, "limit", None), seed)
    n_out = _classes_of(net)
    if n_out != classes:
        raise ConfigError(f"{args.cfg}: the network outputs {n_out} values but the data has {classes} classes")
    val = None
    vs = getattr(args, "val_split", None)
    if vs:
        from ..data import train_val_split
        (X, y), val = train_val_split(X, y, float(vs), seed=seed)
    epochs = getattr(args, "epochs", None)
    max_batches = None
    if resume is not None:
        max_batches = int(resume.extra["darknet_fit"]["max_batches"])   # the interrupted run's end
    elif epochs is not None:
        full = (int(batch or o["batch"]) // sub) * sub          # the trainer's batch: mini-batch × subdivisions
        max_batches = int(net.seen) // full + math.ceil(float(epochs) * len(X) / full)
    trainer = DarknetTrainer(net, batch=batch, subdivisions=subdiv, learning_rate=getattr(args, "lr", None),
                             momentum=getattr(args, "momentum", None), decay=getattr(args, "weight_decay", None),
                             max_batches=max_batches)
    base = Path(args.cfg).stem
    out = Path(args.out) if getattr(args, "out", None) else Path("runs") / base
    save_every = int(getattr(args, "save_every", None) or 1000)
    eval_every = max(1, trainer.max_batches // 10) if val is not None else None
    settings = {k: getattr(args, k, None) for k in SETTINGS}
    settings["cfg"] = str(settings["cfg"])
    progress = bool(getattr(args, "progress", False)) or (not getattr(args, "no_progress", False)
                                                          and sys.stderr.isatty())
    stop = StopRequest()
    with stop.active():     # from the header on, a Ctrl-C is never lost: it stops at a batch boundary
        _header(args, net, numerics, desc, X, Xt, trainer, base, out, resume)
        history = trainer.fit(X, y, classes, out_dir=out, base=base, save_every=save_every,
                              keep=resolve_keep(getattr(args, "keep", None)), eval_data=val, eval_every=eval_every, seed=seed,
                              progress=progress, stop=stop, resume=args.resume if resume is not None else None,
                              files={"last": ("last.npz", "{base}_last.weights")}, settings=settings,
                              resume_command=lambda path: f"deltaprop train --resume {path}",
                              callbacks=[Chart(out / "chart.png", title=f"{base}: training")])
    test_loss, test_acc = evaluate(net, Xt, yt)
    wall = time.perf_counter() - t_start
    losses = [r["loss"] for r in history if "loss" in r]
    summary = {"cfg": str(args.cfg), "numerics": numerics, "batches": trainer.current_batch, "seen": int(net.seen),
               "final_loss": losses[-1] if losses else None,
               "avg_loss": trainer.avg_loss, "test_loss": test_loss, "test_acc": test_acc,
               "wall_time_s": round(wall, 1), "weights": str(out / f"{base}_final.weights"),
               "settings": settings, "ran": _what_ran(trainer, numerics, seed, save_every, desc, len(X), vs),
               "resumed_from": str(args.resume) if resume is not None else None}
    from ..distributed import is_main_process
    if is_main_process():   # under mpirun only rank 0 writes
        atomic_write_text(out / "result.json", json.dumps(summary, indent=1) + "\n")
    print(f"test accuracy: {100 * test_acc:.2f}% ({int(round(test_acc * len(yt)))}/{len(yt)}), loss {test_loss:.4f}; "
          f"wall time {wall:.1f} s; weights saved to {out / (base + '_final.weights')}")
    return 0


def _what_ran(trainer, numerics: str, seed: int, save_every: int, desc: str, n_train: int, val_split
              ) -> Dict[str, Any]:
    """The values the run used (``settings`` holds the options as given, None where the cfg's value ran)."""
    lr = trainer.policy
    return {"batch": trainer.batch, "subdivisions": trainer.subdivisions, "mini_batch": trainer.mini_batch,
            "learning_rate": lr.learning_rate, "policy": lr.policy, "burn_in": lr.burn_in,
            "momentum": trainer.optimizer.param_groups[0]["momentum"], "decay": trainer.optimizer.defaults["decay"],
            "max_batches": trainer.max_batches, "numerics": numerics, "seed": seed, "save_every": save_every,
            "data": desc, "training_images": n_train, "val_split": float(val_split or 0)}


def _header(args, net, numerics: str, desc: str, X, Xt, trainer, base: str, out: Path, resume) -> None:
    lr = trainer.policy
    if resume is not None:
        print(f"resumed from {args.resume} at batch {trainer.current_batch} (seen {net.seen})", flush=True)
    print(f"{base}: {len(net.layers)} layers, {net.num_parameters():,} parameters, "
          f"{net.plan.bflops * 1e3:.2f} MFLOPs/image, numerics {numerics}; {desc}: {len(X):,} training, "
          f"{len(Xt):,} test images; batch {trainer.batch} ({trainer.subdivisions} × {trainer.mini_batch}), "
          f"lr {lr.learning_rate:g} policy {lr.policy}"
          + (f" burn_in {lr.burn_in}" if lr.burn_in else "")
          + f", momentum {trainer.optimizer.param_groups[0]['momentum']:g}, "
          f"decay {trainer.optimizer.defaults['decay']:g}; batches {trainer.current_batch} -> "
          f"{trainer.max_batches} (seen {net.seen}) -> {out}", flush=True)
