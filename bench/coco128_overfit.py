"""The real-photo check of issue 14: yolov3-tiny at 320×320, random weights, the cfg's augmentation on (jitter
.3, hue .1, saturation and exposure 1.5, flips), trained with ``deltaprop detector train`` on 16 photos of
coco128 until it overfits them, then ``deltaprop detector map`` on the same 16 photos (target mAP@0.5 ≥ 0.8).

It writes into ``--out``: ``train.txt`` = ``valid.txt`` (the first ``--images`` photos of train2017, sorted by
name, that have a label file), ``coco16.data`` (Darknet's keys, ``backup`` = ``--out``/backup) and
``yolov3-tiny-coco16.cfg``: the shipped yolov3-tiny with width = height = 320, ``random=0`` (no multi-scale),
``batch``, ``learning_rate``, ``burn_in``, ``max_batches`` and the two ``steps`` from the options. Then it runs
the two commands below (checkpoints every 20 batches, mAP on the 16 photos every 50, ``_best.weights`` kept)
and prints one JSON line: batches, wall seconds, mAP@0.5 and mAP@[.5:.95] of the best and the last weights.

    python3 bench/coco128_overfit.py --out /tmp/coco16                         # the whole recipe
    python3 bench/coco128_overfit.py --out /tmp/coco16 --resume                # go on from backup/_last
    python3 bench/coco128_overfit.py --out /tmp/coco16 --lr 0.001 --resume     # ... at another rate

Each ``detector train`` resumes exactly from a ``_last``/numbered checkpoint (its ``.state.npz``), so the run
may be stopped and continued; a changed ``--lr`` applies from the resumed batch on. The measured run in
docs/detection.md used these defaults from the start (rate 0.001, burn_in 30, 2400 batches, steps 1600,2000);
an earlier run that began at 0.01 diverged at batch 35, and 0.003 was unstable.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "deltaprop" / "cfg" / "yolov3-tiny.cfg"
NAME = "yolov3-tiny-coco16"


def pick_images(coco: Path, n: int) -> list:
    """The first ``n`` photos of train2017 (sorted by name) that have a non-empty label file."""
    labels = coco / "labels" / "train2017"
    if not labels.is_dir():
        raise SystemExit(f"{labels}: not found (coco128 in Darknet's layout: images/ and labels/ side by side)")
    out = []
    for lab in sorted(labels.glob("*.txt")):
        img = coco / "images" / "train2017" / (lab.stem + ".jpg")
        if img.is_file() and lab.read_text().strip():
            out.append(img)
        if len(out) == n:
            return out
    raise SystemExit(f"{labels}: only {len(out)} labelled photos, fewer than {n}")


def write_cfg(path: Path, batch: int, lr: float, burn_in: int, max_batches: int, steps: tuple) -> None:
    """The shipped yolov3-tiny cfg with the run's [net] settings, 320×320 and no multi-scale."""
    text = CFG.read_text()
    subs = {"batch": batch, "subdivisions": 1, "width": 320, "height": 320, "learning_rate": lr,
            "burn_in": burn_in, "max_batches": max_batches, "steps": f"{steps[0]},{steps[1]}"}
    for key, value in subs.items():
        text, k = re.subn(rf"^{key}=.*$", f"{key}={value}", text, count=1, flags=re.M)
        if k != 1:
            raise SystemExit(f"{CFG}: no '{key}=' line to set")
    text = re.sub(r"^random=1$", "random=0", text, flags=re.M)
    path.write_text(text)


def detector(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "deltaprop", "detector", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True)


def map_json(data: Path, cfg: Path, weights: Path, out: Path) -> dict:
    detector("map", str(data), str(cfg), str(weights), "--json", str(out))
    r = json.loads(out.read_text())
    return {k: r[k] for k in ("map50", "map") if k in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco", default=str(ROOT.parent / "shared" / "data" / "coco128"), help="coco128 folder")
    ap.add_argument("--out", default="/tmp/coco16", help="folder for the lists, .data, cfg and backup")
    ap.add_argument("--images", type=int, default=16, help="photos to overfit (16)")
    ap.add_argument("--batch", type=int, default=8, help="images per update (8)")
    ap.add_argument("--lr", type=float, default=0.001, help="learning_rate (0.001)")
    ap.add_argument("--burn-in", type=int, default=30, help="burn_in batches (30)")
    ap.add_argument("--max-batches", type=int, default=2400, help="max_batches (2400)")
    ap.add_argument("--steps", type=int, nargs=2, default=(1600, 2000), help="the two rate steps (/10 each)")
    ap.add_argument("--resume", action="store_true", help="continue from backup/<cfg>_last.weights")
    ap.add_argument("--seed", type=int, default=0, help="initial weights, shuffling, augmentation (0)")
    args = ap.parse_args()
    out = Path(args.out)
    backup = out / "backup"
    backup.mkdir(parents=True, exist_ok=True)
    imgs = pick_images(Path(args.coco), args.images)
    for name in ("train.txt", "valid.txt"):
        (out / name).write_text("".join(f"{p}\n" for p in imgs))
    data = out / "coco16.data"
    data.write_text(f"classes=80\ntrain={out / 'train.txt'}\nvalid={out / 'valid.txt'}\n"
                    f"names={Path(args.coco) / 'coco.names'}\nbackup={backup}\n")
    cfg = out / f"{NAME}.cfg"
    write_cfg(cfg, args.batch, args.lr, args.burn_in, args.max_batches, tuple(args.steps))
    last = backup / f"{NAME}_last.weights"
    t0 = time.perf_counter()
    train = ["train", str(data), str(cfg)] + ([str(last)] if args.resume and last.is_file() else [])
    detector(*train, "--map", "--map-every", "50", "--save-every", "20", "--log-every", "5", "--no-progress",
             "--seed", str(args.seed), "--exist-ok")
    wall = time.perf_counter() - t0
    res = {"bench": "coco128_overfit", "images": len(imgs), "size": 320, "batch": args.batch, "lr": args.lr,
           "max_batches": args.max_batches, "train_wall_s": round(wall, 1),
           "best": map_json(data, cfg, backup / f"{NAME}_best.weights", out / "map_best.json"),
           "final": map_json(data, cfg, backup / f"{NAME}_final.weights", out / "map_final.json")}
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
