"""``deltaprop train``: train a model on MNIST (or, with ``--cfg``, a Darknet cfg) and report its test accuracy."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ..atomic import atomic_write_text

# Defaults chosen so that `deltaprop train --model mlp` passes 98% on MNIST in 10 epochs (see docs/training.md).
DEFAULTS: Dict[str, Any] = {
    "model": None,  # lenet if registered, else mlp
    "epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": None, "momentum": 0.9, "weight_decay": 0.0,
    "schedule": "cosine", "seed": 0, "val_split": 0.1, "patience": None, "limit": None, "data": None,
}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..models import available, default_model
    p = subparsers.add_parser(
        "train", help="train a model on MNIST and print its test accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model on MNIST (found in --data, $DELTAPROP_DATA, ../shared/data or ~/.cache/deltaprop, "
                    "else downloaded once), print progress every epoch and the final test accuracy.\n"
                    "Writes OUT/last.npz (every epoch), OUT/best.npz (best validation loss), OUT/model.npz (final) "
                    "and OUT/history.jsonl.\n\n"
                    "With --cfg FILE.cfg, trains a Darknet cfg model instead (deltaprop.darknet.trainer).",
        epilog="examples:\n  deltaprop train                        # the default model, 10 epochs\n"
               "  deltaprop train --model mlp --epochs 5\n"
               "  deltaprop train --optimizer adam --lr 1e-3 --out runs/adam\n"
               "  deltaprop train --resume runs/mlp/last.npz --epochs 15\n"
               "  deltaprop train --limit 2000 --epochs 1   # a smoke test")
    models = ", ".join(available())
    p.add_argument("--model", help=f"model name: {models} (default: lenet if registered, else mlp; "
                                   f"here: {default_model()})")
    p.add_argument("--epochs", type=int, help="total number of epochs (default 10; with --resume: the total, "
                                              "counting the epochs already done)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (default 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimizer (default sgd)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: sgd 0.05, adam/adamw 0.001)")
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, help="L2 weight decay λ (AdamW: decoupled) (default 0)")
    p.add_argument("--schedule", choices=["cosine", "step", "none"],
                   help="learning-rate schedule: cosine decay to 0 over the run (per batch), step (×0.1 at 50%% "
                        "and 75%% of the epochs), or none (default cosine)")
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling and the validation split (default 0)")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<model>; with --resume: the "
                                                "checkpoint's directory)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (e.g. runs/mlp/last.npz) with "
                                                    "its model, optimizer, schedule, RNG and settings")
    p.add_argument("--data", metavar="DIR", help="directory with the MNIST files (default: see above)")
    p.add_argument("--val-split", type=float, help="fraction of the training set held out for validation "
                                                   "each epoch (default 0.1; 0 disables validation)")
    p.add_argument("--patience", type=int, help="stop early after this many epochs without a better "
                                                "validation loss (default: never)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N training (and N test) samples: "
                                                          "for smoke tests")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="BLAS threads for the matrix products (default: $DELTAPROP_BLAS_THREADS, else the BLAS "
                        "library's own choice; with --cfg, 1, measured faster for those small products); "
                        "needs threadpoolctl")
    g = p.add_argument_group("Darknet models")
    g.add_argument("--cfg", metavar="FILE.cfg", help="train a Darknet .cfg model (dispatches to "
                                                     "deltaprop.darknet.trainer)")
    g.add_argument("--weights", metavar="W", help="with --cfg: initial Darknet .weights")
    g.add_argument("--clear", action="store_true", help="with --cfg: reset the seen-images counter of --weights")
    g.add_argument("--subdivisions", type=int, help="with --cfg: split each batch into this many mini-batches "
                                                    "(default: the cfg's)")
    g.add_argument("--numerics", choices=["darknet", "standard"],
                   help="with --cfg: Darknet's exact formulas or the standard ones (default darknet)")
    g.add_argument("--save-every", type=int, metavar="N", help="with --cfg: write .weights every N batches "
                                                                "(default 1000)")
    return p


def _settings(args, stored: Dict[str, Any]) -> Dict[str, Any]:
    """Explicit options, else the resumed run's settings, else the defaults."""
    from ..models import default_model
    s = {}
    for k, v in DEFAULTS.items():
        given = getattr(args, k, None)
        s[k] = given if given is not None else stored.get(k, v)
    s["model"] = s["model"] or default_model()
    s["lr"] = s["lr"] if s["lr"] is not None else DEFAULT_LR[s["optimizer"]]
    return s


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    from .. import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(name: str, optimizer, epochs: int, steps_per_epoch: int):
    """(scheduler, interval) for the --schedule choice."""
    if name == "none":
        return None, "epoch"
    from ..optim import lr_scheduler
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch)), "step"
    if name == "step":
        return lr_scheduler.MultiStepLR(optimizer, milestones=[max(1, epochs // 2), max(2, (3 * epochs) // 4)],
                                        gamma=0.1), "epoch"
    raise ValueError(f"unknown schedule {name!r}")


def _darknet(args) -> int:
    try:
        from ..darknet import trainer
    except ImportError as e:
        print(f"deltaprop train: --cfg needs deltaprop.darknet.trainer, which this installation does not have "
              f"yet ({e})", file=sys.stderr)
        return 2
    if not hasattr(trainer, "run_cli"):
        print("deltaprop train: deltaprop.darknet.trainer has no run_cli(args) yet", file=sys.stderr)
        return 2
    return int(trainer.run_cli(args) or 0)


def run(args) -> int:
    if args.cfg:
        return _darknet(args)
    from .._env import env_int
    from ..backend import blas_threads
    with blas_threads(getattr(args, "threads", None) or env_int("DELTAPROP_BLAS_THREADS", 0)):
        return _run(args)


def _run(args) -> int:
    import deltaprop as dp
    from .. import io, models, nn
    from ..data import DataLoader, default_preprocess, load_mnist, preprocess, train_val_split
    from ..train import evaluate, fit

    stored: Dict[str, Any] = {}
    if args.resume:
        ck = io.read_checkpoint(args.resume)
        stored = dict(ck.extra.get("cli", {}))
    s = _settings(args, stored)
    if not args.resume and not models.is_registered(s["model"]):
        print(f"deltaprop train: unknown model {s['model']!r}; available: {', '.join(models.available())}",
              file=sys.stderr)
        return 2
    if args.resume and args.epochs is not None and stored.get("epochs") not in (None, args.epochs) \
            and s["schedule"] == "cosine":
        print(f"note: the cosine schedule of the resumed run spans its original {stored['epochs']} epochs; "
              f"training on to epoch {args.epochs} continues that curve", file=sys.stderr)
    out = Path(args.out) if args.out else (Path(args.resume).parent if args.resume else Path("runs") / s["model"])

    t_start = time.perf_counter()
    images, labels = load_mnist(s["data"], "train")
    test_images, test_labels = load_mnist(s["data"], "test")
    if s["limit"]:
        images, labels = images[:s["limit"]], labels[:s["limit"]]
        test_images, test_labels = test_images[:s["limit"]], test_labels[:s["limit"]]
    spec = default_preprocess()
    X, y = preprocess(images, spec), labels.astype(np.int64)
    Xt, yt = preprocess(test_images, spec), test_labels.astype(np.int64)
    val = None
    if s["val_split"] and s["val_split"] > 0:
        (X, y), val = train_val_split(X, y, s["val_split"], seed=s["seed"])

    dp.manual_seed(s["seed"])
    if args.resume:
        model = io.build_from_architecture(ck.architecture)
    else:
        model = models.build(s["model"])
    train_loader = DataLoader(X, y, batch_size=s["batch_size"], shuffle=True, seed=s["seed"])
    optimizer = make_optimizer(s["optimizer"], model.parameters(), s["lr"], s["momentum"], s["weight_decay"])
    scheduler, interval = make_scheduler(s["schedule"], optimizer, s["epochs"], len(train_loader))
    print(f"model {s['model']}: {model.num_parameters():,} parameters; {len(X):,} training samples"
          + (f", {len(val[0]):,} validation" if val else "") + f", {len(Xt):,} test; "
          f"{s['optimizer']} lr {s['lr']:g}, {s['schedule']} schedule, batch {s['batch_size']}, "
          f"{s['epochs']} epochs -> {out}", flush=True)
    history = fit(model, nn.CrossEntropyLoss(), optimizer, train_loader, val, epochs=s["epochs"],
                  scheduler=scheduler, scheduler_interval=interval, out_dir=out, resume=args.resume,
                  patience=s["patience"], progress=not args.no_progress,
                  extra={"preprocess": spec, "cli": s})
    io.save_model(out / "model.npz", model, extra={"preprocess": spec, "cli": s})
    test_loss, test_acc = evaluate(model, (Xt, yt))
    wall = time.perf_counter() - t_start
    summary = {"model": s["model"], "epochs_run": len(history), "test_loss": test_loss, "test_acc": test_acc,
               "wall_time_s": round(wall, 1), "out": str(out)}
    atomic_write_text(out / "result.json", json.dumps(summary, indent=1) + "\n")
    print(f"test accuracy: {100 * test_acc:.2f}% ({int(round(test_acc * len(yt)))}/{len(yt)}), "
          f"loss {test_loss:.4f}; wall time {wall:.1f} s; model saved to {out / 'model.npz'}")
    return 0
