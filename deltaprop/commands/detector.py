"""``deltaprop detector train|test|map|valid``: Darknet's ``detector`` verbs on a ``.data`` file and a cfg.

- ``train DATA CFG [WEIGHTS]``: train (deltaprop.detect.train), checkpoints into the data's ``backup`` (a
  folder an earlier run used is not written into: the run goes to ``backup-2``..., unless ``--exist-ok``); the
  initial weights come from ``--seed``; WEIGHTS written by an earlier run (a ``.weights`` with its
  ``.state.npz``, or the state file) resumes it exactly, in its folder; Ctrl-C saves ``_last`` and prints the
  command that resumes.
- ``test DATA CFG WEIGHTS IMG...``: boxes of each image, printed and drawn (``<name>_pred.png``;
  ``--mosaic F``: all of them in one PNG).
- ``map DATA CFG WEIGHTS``: mAP@0.5, mAP@[.5:.95], per-class AP and P/R at a threshold on ``valid``.
- ``valid DATA CFG WEIGHTS``: every detection of ``valid`` as COCO-style JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ._options import float_range, int_range, keep_count

_UNIT = float_range(0.0, 1.0)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detector", help="train, test and score YOLO detectors on a Darknet .data set",
        description="Darknet's detector verbs: train a cfg detector on a .data set, draw its boxes on images, "
                    "measure mAP on the valid list, write COCO-style JSON detections.")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    def common(sp, weights: bool = True):
        sp.add_argument("data", metavar="DATA", help="Darknet .data file (classes, train, valid, names, backup)")
        sp.add_argument("cfg", metavar="CFG", help="Darknet .cfg (or a shipped cfg name, e.g. digits-tiny)")
        if weights:
            sp.add_argument("weights", metavar="WEIGHTS", help="Darknet .weights")
        sp.add_argument("--width", type=int_range(1), help="network input width (default: the cfg's)")
        sp.add_argument("--height", type=int_range(1), help="network input height (default: the cfg's)")

    def thresholds(sp, thresh: float, what: str):
        sp.add_argument("--thresh", type=_UNIT, default=thresh, help=f"{what} ({thresh:g})")
        sp.add_argument("--nms", type=_UNIT, default=0.45, help="NMS IoU threshold, 0 for none (0.45)")

    t = sub.add_parser("train", help="train a detector (checkpoints into the data's backup folder)",
                       description="Train CFG on the train list of DATA. Writes <cfg>_<n>.weights, _last, _final "
                                   "(and _best with --map), each with its .state.npz, into backup (one an earlier "
                                   "run used: backup-2, ...); WEIGHTS from such a run resumes it exactly, in its "
                                   "folder (any other .weights: fine-tune from its seen). Ctrl-C saves _last and "
                                   "prints the command that resumes.")
    common(t, weights=False)
    t.add_argument("weights", metavar="WEIGHTS", nargs="?",
                   help="initial .weights, or a checkpoint of an earlier run to resume (its .weights or .state.npz)")
    t.add_argument("--clear", action="store_true", help="start the batch count at 0 (Darknet's -clear)")
    t.add_argument("--max-batches", type=int_range(1), help="train until this batch (default: the cfg's)")
    t.add_argument("--batch", type=int_range(1), help="images per update (default: the cfg's batch)")
    t.add_argument("--subdivisions", type=int_range(1), help="passes per update (default: the cfg's)")
    t.add_argument("--lr", type=float_range(0, lo_open=True), help="learning_rate (default: the cfg's)")
    t.add_argument("--save-every", type=int_range(0), default=100, help="batches between checkpoints (100)")
    t.add_argument("--keep", type=keep_count, metavar="N",
                   help="keep the newest N numbered checkpoints, or 'all' (3; _last, _best, _final always)")
    t.add_argument("--log-every", type=int_range(1), default=10, help="batches between history records (10)")
    t.add_argument("--map", action="store_true", help="measure mAP on valid while training; keep _best.weights")
    t.add_argument("--map-every", type=int_range(1), help="batches between mAP measurements (default: an epoch)")
    t.add_argument("--map-images", type=int_range(1), help="measure on the first N valid images only")
    t.add_argument("--backup", metavar="DIR", help="checkpoint folder (default: the data's backup; when resuming, "
                                                   "the checkpoint's folder)")
    t.add_argument("--exist-ok", action="store_true", help="write into a backup folder that holds an earlier run "
                                                           "(its files may be replaced)")
    t.add_argument("--workers", type=int_range(0), default=2, help="data loader threads (2)")
    t.add_argument("--seed", type=int_range(0, 2 ** 32 - 1),
                   help="seed of the initial weights, shuffling and augmentation, 0..2^32-1 (0; when resuming, "
                        "the run's)")
    t.add_argument("--skip-bad-labels", action="store_true", help="skip bad label lines instead of stopping")
    bar = t.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
    bar.add_argument("--no-progress", action="store_true", help="print a line every --log-every batches instead "
                                                                "(the default when stderr is not a terminal)")
    t.set_defaults(_verb=run_train)

    s = sub.add_parser("test", help="detect objects in images and draw them",
                       description="Print each box (class, score, pixel corners) and save <image>_pred.png.")
    common(s)
    s.add_argument("images", nargs="+", metavar="IMG", help="image files")
    thresholds(s, 0.5, "score threshold")
    s.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: beside each image)")
    s.add_argument("--scale", type=int_range(1, 16), default=1, help="enlarge the drawing N times (1)")
    s.add_argument("--no-draw", action="store_true", help="only print the boxes")
    s.add_argument("--mosaic", metavar="FILE", help="also draw all the images into one PNG, 3 a row")
    s.set_defaults(_verb=run_test)

    m = sub.add_parser("map", help="mAP on the valid list",
                       description="mAP@0.5 and COCO mAP@[.5:.95] (101-point, pycocotools' rules) on DATA's valid "
                                   "list, per-class AP, precision/recall/F1 at --thresh.")
    common(m)
    thresholds(m, 0.25, "score threshold of precision/recall")
    m.add_argument("--batch", type=int_range(1), default=8, help="images per forward pass (8)")
    m.add_argument("--limit", type=int_range(1), help="the first N valid images only")
    m.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    m.set_defaults(_verb=run_map)

    v = sub.add_parser("valid", help="COCO-style JSON detections of the valid list",
                       description="Every box above --thresh on DATA's valid list as COCO results JSON "
                                   "(image_id, category_id, bbox [x, y, w, h] in pixels, score).")
    common(v)
    v.add_argument("--out", metavar="FILE", help="output (default: results/<cfg>_detections.json)")
    thresholds(v, 0.005, "score threshold")
    v.add_argument("--coco-ids", action="store_true",
                   help="category ids of COCO's annotations (80 classes; default when the data says eval=coco)")
    v.set_defaults(_verb=run_valid)
    return p


def run(args) -> int:
    return int(args._verb(args) or 0)


# --- shared --------------------------------------------------------------------------------------

def _setup(args, weights_required: bool = True):
    """(DataConfig, net, names) of the command line; one-line errors for missing or mismatched files."""
    from .. import darknet
    from ..data.detection import read_data_file, read_names
    from ..detect.detector import yolo_layers
    from ..errors import ConfigError
    from ._files import require_weights
    data = read_data_file(args.data)
    weights = getattr(args, "weights", None)
    if weights:
        require_weights(weights, "WEIGHTS")
    net = darknet.load(args.cfg, weights, width=args.width, height=args.height)
    yolo_layers(net, data.classes, args.data)
    names = read_names(data.names) if data.names else [str(k) for k in range(data.classes)]
    if len(names) < data.classes:
        raise ConfigError(f"{data.names}: {len(names)} names for classes = {data.classes}")
    return data, net, names


def _valid_images(data, limit=None):
    from ..data.detection import image_list
    from ..errors import DataError
    if data.valid is None:
        raise DataError(f"{data.path}: no 'valid' list")
    imgs = image_list(data.valid)
    if not imgs:
        raise DataError(f"{data.valid}: no images")
    return imgs[:limit] if limit else imgs


def _cfg_base(cfg: str) -> str:
    return Path(cfg).stem


# --- verbs ---------------------------------------------------------------------------------------

def run_test(args) -> int:
    from ..detect import detect_image, load_image
    from ..detect.draw import draw_boxes, mosaic, save_png
    from ._files import check_images
    data, net, names = _setup(args)
    check_images(args.images)       # every picture readable before the first PNG is written
    net.eval()
    drawn = []
    for path in args.images:
        img = load_image(path, channels=net.input_shape[0])
        boxes = detect_image(net, img, args.thresh, args.nms, names)
        print(f"{path}: {len(boxes)} box(es)")
        for b in boxes:
            print(f"  {b}")
        picture = draw_boxes(img, boxes, data.classes, scale=args.scale) if args.mosaic or not args.no_draw else None
        if args.mosaic:
            drawn.append(picture)
        if not args.no_draw:
            out_dir = Path(args.out) if args.out else Path(os.path.abspath(path)).parent
            out_dir.mkdir(parents=True, exist_ok=True)
            out = out_dir / (Path(path).stem + "_pred.png")
            save_png(picture, out)
            print(f"  wrote {out}")
    if args.mosaic:
        Path(args.mosaic).parent.mkdir(parents=True, exist_ok=True)
        save_png(mosaic(drawn, columns=3), args.mosaic)
        print(f"wrote {args.mosaic}")
    return 0


def run_map(args) -> int:
    from ..atomic import atomic_write_text
    from ..detect.evaluate import evaluate_detector
    data, net, names = _setup(args)
    imgs = _valid_images(data, args.limit)
    print(f"{len(imgs)} images of {data.valid}, {net.input_shape[2]}x{net.input_shape[1]}")
    result = evaluate_detector(net, imgs, data.classes, names, batch=args.batch, nms=args.nms,
                               score_thresh=args.thresh)
    print(result.table())
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(result.as_dict(), images=len(imgs), names=names), indent=1))
        print(f"wrote {args.json}")
    return 0


def run_valid(args) -> int:
    from ..atomic import atomic_write_text
    from ..detect.evaluate import COCO_IDS, coco_json_detections
    from ..errors import ConfigError
    data, net, names = _setup(args)
    imgs = _valid_images(data)
    coco = args.coco_ids or data.options.get("eval", "").strip() == "coco"
    if coco and data.classes != len(COCO_IDS):
        raise ConfigError(f"--coco-ids needs the 80 COCO classes, {args.data} has classes = {data.classes}")
    dets = coco_json_detections(net, imgs, args.thresh, args.nms, COCO_IDS if coco else None)
    out = Path(args.out) if args.out else Path("results") / f"{_cfg_base(args.cfg)}_detections.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(dets))
    print(f"{len(dets)} detections of {len(imgs)} images: wrote {out}")
    return 0


# options of `detector train` that the resume command repeats (the backup folder is the checkpoint's)
_RESUME_OPTIONS = (("width", "--width"), ("height", "--height"), ("max_batches", "--max-batches"),
                   ("batch", "--batch"), ("subdivisions", "--subdivisions"), ("lr", "--lr"),
                   ("save_every", "--save-every"), ("keep", "--keep"), ("log_every", "--log-every"),
                   ("map", "--map"), ("map_every", "--map-every"), ("map_images", "--map-images"),
                   ("workers", "--workers"), ("skip_bad_labels", "--skip-bad-labels"))


def _resume_command(args, seed: int):
    """The command line that continues this run from a checkpoint (printed on Ctrl-C)."""
    from ..darknet.checkpoint import weights_path

    def command(state) -> str:
        weights = weights_path(state)
        parts = ["deltaprop", "detector", "train", str(args.data), str(args.cfg),
                 str(weights if weights.is_file() else state)]
        for attr, flag in _RESUME_OPTIONS:
            value = getattr(args, attr, None)
            if value is True:
                parts.append(flag)
            elif value is not None and value is not False:
                parts += [flag, str(value)]
        parts += ["--seed", str(seed)]
        if args.no_progress:
            parts.append("--no-progress")
        return " ".join(parts)
    return command


def _resumed_state(args):
    """(the checkpoint's state file, its run state) when WEIGHTS is a checkpoint to resume, else (None, None);
    a .weights whose state disagrees raises CheckpointError naming the newest whole checkpoint."""
    from ..darknet.checkpoint import state_path
    from ..darknet.task import open_checkpoint
    from ._files import file_kind
    if not args.weights or args.clear:
        return None, None
    w = Path(args.weights)
    if file_kind(w) != "npz" and not state_path(w).is_file():
        return None, None                    # a plain Darknet .weights: fine-tune from its seen
    return open_checkpoint(w, _cfg_base(args.cfg))


def _backup_folder(args, data, resumed) -> Path:
    """Where the run writes: --backup, else the resumed checkpoint's folder, else the data's backup; a folder
    that holds an earlier run (not the one resumed) is numbered (backup-2, ...) unless --exist-ok."""
    from ..distributed import is_main_process
    from ..training.lock import run_directory
    if args.backup is None and resumed is not None:
        return resumed.parent
    base = Path(args.backup) if args.backup else (data.backup or Path("backup"))
    if not is_main_process() or (resumed is not None and base.resolve() == resumed.parent.resolve()):
        return base
    out = run_directory(base, args.exist_ok, option="--backup")
    if out != base:
        print(f"note: {base} holds an earlier run; this one writes to {out} (--exist-ok writes into {base})",
              file=sys.stderr)
    return out


def run_train(args) -> int:
    from .. import backend, darknet
    from ..detect.train import DetectorTraining, TrainOptions
    from ..distributed import is_main_process, quiet_unless_main
    from ..errors import ConfigError
    from ..training import StopRequest
    from ..training.checkpoints import resolve_keep
    from ..training.lock import RunFolder
    quiet_unless_main()   # under mpirun -n N rank 0 prints (docs/distributed.md)
    state_file, state = _resumed_state(args)
    stored = (state or {}).get("settings") or {}
    if args.seed is not None and stored.get("seed") is not None and args.seed != stored["seed"]:
        raise ConfigError(f"--seed {args.seed}: the resumed run used --seed {stored['seed']} (its shuffling and "
                          f"augmentation); leave --seed out when resuming")
    seed = args.seed if args.seed is not None else int(stored.get("seed", 0) or 0)
    backend.manual_seed(seed)     # the initial weights (drawn when the cfg is built), then shuffling, augmentation
    if state_file is not None and Path(args.weights) == state_file:   # the state file holds the weights
        weights, args.weights = args.weights, None
        data, net, names = _setup(args)
        args.weights = weights
    else:
        data, net, names = _setup(args)
    if args.clear:
        object.__setattr__(net, "seen", 0)
    backup = _backup_folder(args, data, state_file)
    opts = TrainOptions(max_batches=args.max_batches, batch=args.batch, subdivisions=args.subdivisions,
                        learning_rate=args.lr, save_every=args.save_every, keep=resolve_keep(args.keep),
                        log_every=args.log_every, map_every=0, map_images=args.map_images, workers=args.workers,
                        seed=seed,
                        progress=(args.progress or not args.no_progress and sys.stderr.isatty()) and is_main_process(),
                        skip_bad_labels=args.skip_bad_labels)
    stop = StopRequest()
    with RunFolder(backup, "--backup", main=is_main_process()), stop.active():
        run = DetectorTraining(net, data, backup, _cfg_base(args.cfg), opts, names,
                               resume_command=_resume_command(args, seed))
        if args.map or args.map_every:
            _valid_images(data)
            opts.map_every = args.map_every or max(1, len(run.loader))
        resumed = state_file is not None and run.resume(state_file)
        start = int(state["batch"]) if resumed else run.trainer.current_batch
        print(f"{args.cfg}: {len(run.dataset)} training images, batch {run.trainer.batch} "
              f"(subdivisions {run.trainer.subdivisions}), from batch {start} to {run.trainer.max_batches}"
              f"{' (resumed exactly from ' + str(args.weights) + ')' if resumed else ''}, seed {seed}; "
              f"checkpoints in {backup}", flush=True)
        run.fit(stop=stop)
    return 0
