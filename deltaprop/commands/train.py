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
from ..errors import ConfigError
from ._options import (int_range, keep_count, momentum_range, nonneg_float, positive_float,
                       positive_int, unit_fraction)

# Defaults chosen so that `deltaprop train --model mlp` passes 98% on MNIST in 10 epochs (see docs/training.md).
DEFAULTS: Dict[str, Any] = {
    "model": None,  # lenet if registered, else mlp
    "epochs": 10, "batch_size": 64, "optimizer": "sgd", "lr": None, "momentum": 0.9, "weight_decay": 0.0,
    "schedule": "cosine", "seed": 0, "val_split": 0.1, "patience": None, "limit": None, "data": None,
}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}
# With --resume, these options continue the run (--epochs: the new total, --patience, --data: where the same
# MNIST files are); every other setting is the checkpoint's, and giving another value is refused.
RESUME_APPLIES = ("epochs", "patience", "data")
# Options of MNIST models that a Darknet cfg run does not use (its [net] section sets them), and the reverse.
NOT_WITH_CFG = {"model": "--model", "optimizer": "--optimizer", "schedule": "--schedule", "patience": "--patience",
                "resume": "--resume"}
CFG_ONLY = {"weights": "--weights", "clear": "--clear", "subdivisions": "--subdivisions", "numerics": "--numerics",
            "save_every": "--save-every", "keep": "--keep"}
SEED_MAX = 2 ** 32 - 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..models import available, default_model
    p = subparsers.add_parser(
        "train", help="train a model on MNIST and print its test accuracy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a model on MNIST (found in --data, $DELTAPROP_DATA, ../shared/data or ~/.cache/deltaprop, "
                    "else downloaded once), print progress every epoch and the final test accuracy.\n"
                    "Writes OUT/last.npz (every epoch), OUT/best.npz (best validation loss), OUT/model.npz (final), "
                    "OUT/history.jsonl and OUT/chart.png.\n\n"
                    "With --cfg FILE.cfg, trains a Darknet cfg model instead (deltaprop.darknet.trainer).",
        epilog="examples:\n  deltaprop train                        # the default model, 10 epochs\n"
               "  deltaprop train --model mlp --epochs 5\n"
               "  deltaprop train --optimizer adam --lr 1e-3 --out runs/adam\n"
               "  deltaprop train --resume runs/mlp/last.npz --epochs 15\n"
               "  deltaprop train --limit 2000 --epochs 1   # a smoke test\n\n"
               "An --out that holds an earlier run is never overwritten: the run goes to OUT-2, OUT-3, ... "
               "(--exist-ok writes into OUT);\na lock file (OUT/.lock) refuses a second live run in one "
               "directory. Ctrl-C saves OUT/last.npz at the next batch and prints the --resume command.\n"
               "With --resume, --epochs (the new total), --patience and --data apply; the other settings are "
               "the checkpoint's\n(giving another value is an error) and result.json records what ran.")
    models = ", ".join(available())
    p.add_argument("--model", choices=available(), metavar="NAME",
                   help=f"model name: {models} (default: lenet if registered, else mlp; here: {default_model()})")
    p.add_argument("--epochs", type=positive_int, help="total number of epochs, ≥ 1 (default 10; with --resume: "
                                                       "the total, counting the epochs already done)")
    p.add_argument("--batch-size", type=positive_int, help="mini-batch size, ≥ 1 (default 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimizer (default sgd)")
    p.add_argument("--lr", type=positive_float, help="initial learning rate, > 0 (default: sgd 0.05, adam/adamw "
                                                     "0.001)")
    p.add_argument("--momentum", type=momentum_range, help="SGD momentum in [0, 1) (default 0.9)")
    p.add_argument("--weight-decay", type=nonneg_float, help="L2 weight decay λ ≥ 0 (AdamW: decoupled) "
                                                             "(default 0)")
    p.add_argument("--schedule", choices=["cosine", "step", "none"],
                   help="learning-rate schedule: cosine decay to 0 over the run (per batch), step (×0.1 at 50%% "
                        "and 75%% of the epochs), or none (default cosine)")
    p.add_argument("--seed", type=int_range(0, SEED_MAX),
                   help="seed of initialisation, shuffling and the validation split, 0..2^32-1 (default 0)")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<model>; with --resume: the "
                                                "checkpoint's directory); one holding an earlier run gives "
                                                "DIR-2, DIR-3, ...")
    p.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier run "
                                                           "(its files are overwritten)")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (e.g. runs/mlp/last.npz) with "
                                                    "its model, optimizer, schedule, RNG and settings")
    p.add_argument("--data", metavar="DIR", help="directory with the MNIST files (default: see above)")
    p.add_argument("--val-split", type=unit_fraction, help="fraction of the training set held out for "
                                                           "validation each epoch, in [0, 1) (default 0.1; 0 "
                                                           "disables validation)")
    p.add_argument("--patience", type=positive_int, help="stop early after this many epochs (≥ 1) without a "
                                                         "better validation loss (default: never)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N (≥ 1) training (and N "
                                                                   "test) samples: for smoke tests")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
    bar.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only; the "
                                                                "default when stderr is not a terminal)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="BLAS threads for the matrix products (default: $DELTAPROP_BLAS_THREADS, else the BLAS "
                        "library's own choice; with --cfg, 1, measured faster for those small products); "
                        "needs threadpoolctl")
    g = p.add_argument_group("Darknet models")
    g.add_argument("--cfg", metavar="FILE.cfg", help="train a Darknet .cfg model (dispatches to "
                                                     "deltaprop.darknet.trainer)")
    g.add_argument("--weights", metavar="W", help="with --cfg: initial Darknet .weights")
    g.add_argument("--clear", action="store_true", help="with --cfg: reset the seen-images counter of --weights")
    g.add_argument("--subdivisions", type=positive_int, help="with --cfg: split each batch into this many "
                                                             "mini-batches, 1..batch (default: the cfg's)")
    g.add_argument("--numerics", choices=["darknet", "standard"],
                   help="with --cfg: Darknet's exact formulas or the standard ones (default darknet)")
    g.add_argument("--save-every", type=positive_int, metavar="N", help="with --cfg: write a numbered checkpoint "
                                                                        "(.weights + .state.npz) every N batches "
                                                                        "(default 1000)")
    g.add_argument("--keep", type=keep_count, metavar="N", help="with --cfg: keep the newest N numbered checkpoints, "
                                                               "or 'all' (default 3; _last, _best, _final always)")
    return p


def _given(args, key: str) -> bool:
    v = getattr(args, key, None)
    return v is not None and v is not False


def check_combinations(args, resuming_cfg: bool = False) -> None:
    """Refuse options that the chosen kind of run would ignore (ConfigError naming the option);
    ``resuming_cfg``: ``--resume`` of a Darknet cfg run's checkpoint (its settings are stored in it)."""
    if args.cfg and args.resume:
        raise ConfigError("--resume is not used with --cfg: a cfg run's checkpoint holds its cfg; continue it "
                          "with: deltaprop train --resume OUT/last.npz")
    if args.cfg or resuming_cfg:
        for key, flag in NOT_WITH_CFG.items():
            if key != "resume" and _given(args, key):
                raise ConfigError(f"{flag} is not used with --cfg: a Darknet cfg run takes its model, optimizer "
                                  f"and learning-rate policy from the cfg's [net] section")
        for key in ("weights", "clear"):
            if resuming_cfg and _given(args, key):
                raise ConfigError(f"--{key} is not used with --resume: the checkpoint holds the weights and the "
                                  f"image count")
    else:
        for key, flag in CFG_ONLY.items():
            if _given(args, key):
                raise ConfigError(f"{flag} applies only with --cfg FILE.cfg (a Darknet cfg run)")


def _settings(args, stored: Dict[str, Any]) -> Dict[str, Any]:
    """Explicit options, else the resumed run's settings, else the defaults. With a resumed run (``stored``
    non-empty) an option other than RESUME_APPLIES that differs from the stored value is refused."""
    from ..models import default_model
    if stored:
        for k in DEFAULTS:
            given = getattr(args, k, None)
            if k in RESUME_APPLIES or given is None or k not in stored:
                continue
            if given != stored[k] and not (k == "model" and stored[k] is None):
                flag = "--" + k.replace("_", "-")
                raise ConfigError(f"{flag} {given}: the resumed run used {flag} {stored[k]}; with --resume only "
                                  f"--epochs, --patience and --data can change (start a new run for other "
                                  f"settings)")
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


def _check_subdivisions(args) -> None:
    """--subdivisions must leave at least one image per mini-batch: 1 ≤ subdivisions ≤ batch."""
    if args.subdivisions is None:
        return
    if args.batch_size is not None:
        batch, where = args.batch_size, f"--batch-size {args.batch_size}"
    else:
        from ..darknet import plan_cfg
        batch = int(plan_cfg(args.cfg).net_options["batch"])
        where = f"the cfg's batch={batch}"
    if args.subdivisions > batch:
        raise ConfigError(f"--subdivisions {args.subdivisions}: must be from 1 to the batch size ({where}): each "
                          f"of the mini-batches (batch/subdivisions images) needs at least one image")


def _darknet(args) -> int:
    from ..darknet import trainer_cli
    _check_subdivisions(args)
    base = Path(args.out) if args.out else Path("runs") / Path(args.cfg).stem
    args.out = str(_run_directory(base, args.exist_ok))
    with _locked(Path(args.out)):
        return int(trainer_cli.run(args) or 0)


def _darknet_resume(args, ck) -> int:
    """Continue a cfg run from the ``last.npz`` its Ctrl-C wrote, in that checkpoint's directory."""
    from ..darknet import trainer_cli
    out = Path(args.resume).parent
    if args.out and Path(args.out).resolve() != out.resolve():
        raise ConfigError(f"--out {args.out}: a resumed cfg run continues in its checkpoint's directory {out} "
                          f"(its history.jsonl and .weights are there)")
    args.out = str(out)
    with _locked(out):
        return int(trainer_cli.run(args, resume=ck) or 0)


def _read_resume(path: str):
    """The checkpoint ``--resume`` names, checked to be a training checkpoint (not a model file)."""
    from .. import io
    from ._files import require_npz
    require_npz(path)
    ck = io.read_checkpoint(path)
    if "fit" not in ck.extra and "darknet_fit" not in ck.extra:
        raise ConfigError(f"--resume {path}: a model file, not a training checkpoint (resume from the run's "
                          f"last.npz)")
    return ck


def _run_directory(base: Path, exist_ok: bool) -> Path:
    from ..distributed import is_main_process
    from ..training.lock import run_directory
    if not is_main_process():   # under mpirun only rank 0 writes (docs/distributed.md)
        return base
    out = run_directory(base, exist_ok)
    if out != base:
        print(f"note: {base} holds an earlier run; this one writes to {out} (--exist-ok writes into {base})",
              file=sys.stderr)
    return out


def _locked(out: Path):
    """The run lock of ``out`` for the whole command (rank 0 takes it; see ``training.lock.RunFolder``)."""
    from ..distributed import is_main_process
    from ..training.lock import RunFolder
    return RunFolder(out, "--out", main=is_main_process())


def run(args) -> int:
    from ..distributed import quiet_unless_main
    quiet_unless_main()   # under mpirun -n N: rank 0 prints
    ck = _read_resume(args.resume) if args.resume and not args.cfg else None
    resuming_cfg = ck is not None and "darknet_fit" in ck.extra
    check_combinations(args, resuming_cfg)
    if resuming_cfg:
        return _darknet_resume(args, ck)
    if args.cfg:
        return _darknet(args)
    from ..runtime import threads
    with threads.limit_blas_threads(threads.product_threads(getattr(args, "threads", None), 0)):
        return _run(args, ck)


def _check_split(n: int, val_split: float, limit) -> None:
    if not val_split:
        return
    n_val = int(round(val_split * n))
    why = f" of the {n} training samples" + (f" (--limit {limit})" if limit else "")
    if n_val < 1:
        raise ConfigError(f"--val-split {val_split:g}: holds out no sample{why}; use a larger --val-split or 0")
    if n_val >= n:
        raise ConfigError(f"--val-split {val_split:g}: leaves no training sample{why}")


def _preflight(model, X, name: str) -> None:
    """One forward pass on two samples before anything is written: a model built for other inputs is named."""
    from ..backend import no_grad
    from ..errors import DeltapropError
    was = model.training
    model.eval()
    try:
        with no_grad():
            model(X[:2])
    except (DeltapropError, ValueError) as e:
        c, h, w = X.shape[1:]
        raise ConfigError(f"--model {name}: does not take this data's {c}×{h}×{w} inputs: {e}") from None
    finally:
        model.train(was)


def _run(args, ck=None) -> int:
    from .. import backend, io, models, nn
    from ..data import DataLoader, default_preprocess, load_mnist, preprocess, train_val_split
    from ..distributed import is_main_process
    from ..train import StopRequest, TrainingInterrupted, evaluate, fit
    from ..training import Chart
    from ._files import check_folder

    stored: Dict[str, Any] = dict(ck.extra.get("cli", {})) if ck is not None else {}
    s = _settings(args, stored)
    if args.resume and args.epochs is not None and args.epochs <= ck.epoch:
        raise ConfigError(f"--epochs {args.epochs}: the resumed run has done {ck.epoch} epoch(s) already; "
                          f"--epochs is the total, give more than {ck.epoch}")
    if args.resume and args.epochs is not None and stored.get("epochs") not in (None, args.epochs) \
            and s["schedule"] == "cosine":
        print(f"note: the cosine schedule of the resumed run spans its original {stored['epochs']} epochs; "
              f"training on to epoch {args.epochs} continues that curve", file=sys.stderr)
    t_start = time.perf_counter()
    check_folder(s["data"], "--data")
    images, labels = load_mnist(s["data"], "train")
    test_images, test_labels = load_mnist(s["data"], "test")
    if s["limit"]:
        images, labels = images[:s["limit"]], labels[:s["limit"]]
        test_images, test_labels = test_images[:s["limit"]], test_labels[:s["limit"]]
    _check_split(len(images), s["val_split"], s["limit"])
    spec = default_preprocess()
    X, y = preprocess(images, spec), labels.astype(np.int64)
    Xt, yt = preprocess(test_images, spec), test_labels.astype(np.int64)
    val = None
    if s["val_split"]:
        (X, y), val = train_val_split(X, y, s["val_split"], seed=s["seed"])
    backend.manual_seed(s["seed"])
    if args.resume:
        model = io.build_from_architecture(ck.architecture, budget=ck.build_budget, where=str(args.resume))
    else:
        model = models.build_for_input(s["model"], X.shape[1:], num_classes=10)
    _preflight(model, X, s["model"])

    if args.resume and (not args.out or Path(args.out).resolve() == Path(args.resume).resolve().parent):
        out = Path(args.resume).parent                 # the run continues in place
    else:
        out = _run_directory(Path(args.out) if args.out else Path("runs") / s["model"], args.exist_ok)
    train_loader = DataLoader(X, y, batch_size=s["batch_size"], shuffle=True, seed=s["seed"])
    optimizer = make_optimizer(s["optimizer"], model.parameters(), s["lr"], s["momentum"], s["weight_decay"])
    scheduler, interval = make_scheduler(s["schedule"], optimizer, s["epochs"], len(train_loader))
    progress = args.progress or (not args.no_progress and sys.stderr.isatty())
    stop = StopRequest()
    with _locked(out), stop.active():     # from the header on, a Ctrl-C stops at a batch boundary
        print(f"model {s['model']}: {model.num_parameters():,} parameters; {len(X):,} training samples"
              + (f", {len(val[0]):,} validation" if val else "") + f", {len(Xt):,} test; "
              f"{s['optimizer']} lr {s['lr']:g}, {s['schedule']} schedule, batch {s['batch_size']}, "
              f"{s['epochs']} epochs -> {out}", flush=True)
        try:
            history = fit(model, nn.CrossEntropyLoss(), optimizer, train_loader, val, epochs=s["epochs"],
                          scheduler=scheduler, scheduler_interval=interval, out_dir=out, resume=args.resume,
                          patience=s["patience"], progress=progress, extra={"preprocess": spec, "cli": s},
                          stop=stop, callbacks=[Chart(out / "chart.png", title=f"{s['model']}: training",
                                           evaluation_keys=())])
        except TrainingInterrupted as e:
            if e.checkpoint is not None:
                print(f"interrupted in epoch {e.epoch}: the state is saved in {e.checkpoint}; continue with:\n"
                      f"  deltaprop train --resume {e.checkpoint}", file=sys.stderr, flush=True)
            raise
        if is_main_process():
            io.save_model(out / "model.npz", model, extra={"preprocess": spec, "cli": s})
        test_loss, test_acc = evaluate(model, (Xt, yt))
        wall = time.perf_counter() - t_start
        summary = {"model": s["model"], "epochs_run": len(history), "test_loss": test_loss, "test_acc": test_acc,
                   "wall_time_s": round(wall, 1), "out": str(out), "settings": s,
                   "resumed_from": str(args.resume) if args.resume else None}
        if is_main_process():
            atomic_write_text(out / "result.json", json.dumps(summary, indent=1) + "\n")
    print(f"test accuracy: {100 * test_acc:.2f}% ({int(round(test_acc * len(yt)))}/{len(yt)}), "
          f"loss {test_loss:.4f}; wall time {wall:.1f} s; model saved to {out / 'model.npz'}")
    return 0
