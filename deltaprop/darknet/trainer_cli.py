"""``deltaprop train --cfg FILE.cfg ...``: the command-line side of ``deltaprop.darknet.trainer``.

Reads from the ``deltaprop train`` arguments: ``cfg``, ``weights``, ``clear``, ``data`` (``mnist`` or unset:
MNIST, found as ``deltaprop.data.load_mnist`` finds it; a directory with the MNIST files; or an image folder
with one sub-folder per class, optionally split into ``train/`` and ``test/``), ``lr`` (the cfg's
learning_rate), ``batch_size`` (the cfg's batch), ``momentum``, ``weight_decay`` (Darknet's decay), ``epochs``
(max_batches = the current batch + ⌈epochs·N/batch⌉; else the cfg's max_batches), ``seed``, ``out``,
``val_split``, ``limit``, ``no_progress``; and, when the parser has them, ``numerics`` (darknet|standard),
``save_every`` (batches between ``.weights`` checkpoints, default 1000), ``subdivisions``, ``threads``.

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
from typing import List, Optional, Tuple

import numpy as np

from .._env import env_int
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


def run(args) -> int:
    threads = getattr(args, "threads", None) or env_int("DELTAPROP_BLAS_THREADS", 1, minimum=1)
    from ..backend import blas_threads
    with blas_threads(int(threads)):
        return _run(args)


def _run(args) -> int:
    import deltaprop as dp
    from . import load
    from .trainer import DarknetTrainer, evaluate

    if getattr(args, "resume", None):
        print("deltaprop train: --resume reads .npz checkpoints; a Darknet run resumes from its .weights: "
              "--cfg FILE.cfg --weights runs/NAME/NAME_<batch>.weights", file=sys.stderr)
        return 2
    numerics = getattr(args, "numerics", None) or "darknet"
    seed = 0 if getattr(args, "seed", None) is None else int(args.seed)
    t_start = time.perf_counter()
    dp.manual_seed(seed)
    net = load(args.cfg, args.weights, numerics=numerics)
    if getattr(args, "clear", False):
        object.__setattr__(net, "seen", 0)
    yolo = [i for i, layer in enumerate(net.layers) if layer.kind == "yolo"]
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
    if epochs is not None:
        full = (int(batch or o["batch"]) // sub) * sub          # the trainer's batch: mini-batch × subdivisions
        max_batches = int(net.seen) // full + math.ceil(float(epochs) * len(X) / full)
    trainer = DarknetTrainer(net, batch=batch, subdivisions=subdiv, learning_rate=getattr(args, "lr", None),
                             momentum=getattr(args, "momentum", None), decay=getattr(args, "weight_decay", None),
                             max_batches=max_batches)
    base = Path(args.cfg).stem
    out = Path(args.out) if getattr(args, "out", None) else Path("runs") / base
    save_every = int(getattr(args, "save_every", None) or 1000)
    eval_every = max(1, trainer.max_batches // 10) if val is not None else None
    lr = trainer.policy
    print(f"{base}: {len(net.layers)} layers, {net.num_parameters():,} parameters, "
          f"{net.plan.bflops * 1e3:.2f} MFLOPs/image, numerics {numerics}; {desc}: {len(X):,} training, "
          f"{len(Xt):,} test images; batch {trainer.batch} ({trainer.subdivisions} × {trainer.mini_batch}), "
          f"lr {lr.learning_rate:g} policy {lr.policy}"
          + (f" burn_in {lr.burn_in}" if lr.burn_in else "")
          + f", momentum {trainer.optimizer.param_groups[0]['momentum']:g}, "
          f"decay {trainer.optimizer.defaults['decay']:g}; batches {trainer.current_batch} -> "
          f"{trainer.max_batches} (seen {net.seen}) -> {out}", flush=True)
    history = trainer.fit(X, y, classes, out_dir=out, base=base, save_every=save_every, eval_data=val,
                          eval_every=eval_every, seed=seed, progress=not getattr(args, "no_progress", False))
    test_loss, test_acc = evaluate(net, Xt, yt)
    wall = time.perf_counter() - t_start
    summary = {"cfg": str(args.cfg), "numerics": numerics, "batches": trainer.current_batch, "seen": int(net.seen),
               "final_loss": history[-1]["loss"] if history else None,
               "avg_loss": trainer.avg_loss, "test_loss": test_loss, "test_acc": test_acc,
               "wall_time_s": round(wall, 1), "weights": str(out / f"{base}_final.weights")}
    from ..distributed import is_main_process
    if is_main_process():   # under mpirun only rank 0 writes
        atomic_write_text(out / "result.json", json.dumps(summary, indent=1) + "\n")
    print(f"test accuracy: {100 * test_acc:.2f}% ({int(round(test_acc * len(yt)))}/{len(yt)}), loss {test_loss:.4f}; "
          f"wall time {wall:.1f} s; weights saved to {out / (base + '_final.weights')}")
    return 0
