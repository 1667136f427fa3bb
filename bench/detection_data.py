"""Does detection data loading keep up with training? JSON lines:

- ``loader``: one batch built in the calling thread (decode, Darknet augmentation, boxes), median ms;
- ``step``: one Darknet-exact training step of yolov3-tiny (forward, ``net.loss``, ``net.backward``) on a
  fixed batch, median ms;
- ``train``: the two together as a trainer runs them: a ``DetectionLoader`` with worker threads builds the
  next batches while the step runs; ``wait_ms`` is the time the step loop spent blocked in ``next()``
  (median and max over the steps after the first), ``stall_fraction`` its share of the loop's time.

No PyTorch here: the claim is about the loader against deltaprop's own step, on the same machine in the same
run. Data: ../shared/data/coco128 train2017 (skipping its two unlabelled photos), or the test fixture photos.

    python3 bench/detection_data.py [--size 416] [--batch 8] [--steps 8] [--workers 2] [--cfg C] [--data D]

``--long-list N [--distinct K] [--tree DIR]`` measures instead what a train list of N lines naming K distinct
pictures (hard links of one 64×48 PNG, each with its label file, built in a temporary folder) costs
``deltaprop data check`` and ``DetectionDataset``: wall time and peak resident memory of each, in a fresh process
(JSON lines ``what: data_check`` and ``what: dataset``). ``--tree`` runs the command of another checkout (the
code before issue 30, say) on the same list.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltaprop import darknet  # noqa: E402
from deltaprop.data.augment import Augment  # noqa: E402
from deltaprop.data.detection import DetectionDataset, DetectionLoader, image_list, read_data_file  # noqa: E402


def _images(data):
    """(images, classes, what) of a .data file's train list, or of coco128 (the fixture photos without it)."""
    if data:
        cfg = read_data_file(data)
        return image_list(cfg.train), cfg.classes, str(data)
    coco = ROOT.parent / "shared" / "data" / "coco128" / "images" / "train2017"
    if coco.is_dir():
        return image_list(coco), 80, "coco128/train2017"
    return image_list(ROOT / "tests" / "fixtures" / "coco128" / "images"), 80, "tests/fixtures/coco128"


def _long_list(lines: int, distinct: int, tree: Path) -> None:
    """Time and peak RSS of ``data check`` and of a DetectionDataset on a list of ``lines`` lines."""
    import os
    import subprocess
    import tempfile
    import numpy as np
    from PIL import Image
    with tempfile.TemporaryDirectory(prefix="deltaprop-longlist-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                     else None) as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        (root / "labels").mkdir()
        first = root / "images" / "im0000000.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)).save(first)
        for k in range(distinct):
            if k:
                os.link(first, root / "images" / f"im{k:07d}.png")
            (root / "labels" / f"im{k:07d}.txt").write_text(f"{k % 3} 0.5 0.5 0.25 0.25\n")
        with open(root / "train.txt", "w") as f:
            for i in range(lines):
                f.write(f"images/im{i % distinct:07d}.png\n")
        (root / "set.data").write_text("classes = 3\ntrain = train.txt\n")
        common = {"bench": "detection_data", "lines": lines, "distinct": distinct, "tree": str(tree)}
        measure = ("import atexit, resource, sys, time; t0 = time.perf_counter(); atexit.register(lambda: "
                   "sys.stderr.write('\\nBENCH %.2f %d\\n' % (time.perf_counter() - t0, "
                   "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n")
        runs = {"data_check": f"from deltaprop.cli import main; sys.exit(main(['data', 'check', {str(root / 'set.data')!r}]))",
                "dataset": f"from deltaprop.data.detection import DetectionDataset; "
                           f"print(len(DetectionDataset({str(root / 'train.txt')!r}, 3, 416, 416)), 'images')"}
        for what, code in runs.items():
            env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
            p = subprocess.run([sys.executable, "-c", measure + code], env=env, capture_output=True, text=True,
                               cwd=root)          # not this checkout: -c puts the working directory first
            seconds, kib = p.stderr.strip().splitlines()[-1].split()[1:]
            tail = (p.stdout.strip().splitlines() or [""])[-1]
            print(json.dumps({**common, "what": what, "seconds": float(seconds), "peak_rss_mib": round(int(kib) / 1024),
                              "rc": p.returncode, "last_line": tail[-160:]}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cfg", default="yolov3-tiny")
    ap.add_argument("--data", help=".data file whose train images to load (default: coco128)")
    ap.add_argument("--long-list", type=int, metavar="N", help="measure data check on a list of N lines instead")
    ap.add_argument("--distinct", type=int, default=1000, help="distinct pictures of --long-list (1000)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose deltaprop --long-list runs (this one)")
    a = ap.parse_args()
    if a.long_list:
        _long_list(a.long_list, a.distinct, a.tree)
        return
    images, classes, source = _images(a.data)
    ds = DetectionDataset(images, classes, a.size, a.size, augment=Augment(), seed=0, skip_bad=True)
    common = {"size": a.size, "batch": a.batch, "data": source, "images": len(ds)}

    plain = DetectionLoader(ds, a.batch, seed=0, workers=0)
    times = []
    for pos in range(min(a.steps, len(plain))):
        t = time.perf_counter()
        plain.make_batch(0, pos, a.size, a.size)
        times.append(time.perf_counter() - t)
    loader_ms = 1000 * statistics.median(times)
    print(json.dumps({"bench": "detection_data", "what": "loader", **common, "ms_per_batch": round(loader_ms, 1),
                      "ms_per_image": round(loader_ms / a.batch, 2)}), flush=True)

    net = darknet.load(a.cfg, width=a.size, height=a.size)
    net.train()
    x, targets = plain.make_batch(0, 0, a.size, a.size)
    times = []
    for _ in range(max(2, a.steps // 2)):
        t = time.perf_counter()
        net(x)
        net.loss(targets)
        net.backward()
        times.append(time.perf_counter() - t)
    step_ms = 1000 * statistics.median(times)
    print(json.dumps({"bench": "detection_data", "what": "step", "cfg": a.cfg, **common,
                      "ms_per_step": round(step_ms, 1), "loader_over_step": round(loader_ms / step_ms, 3)}),
          flush=True)

    loader = DetectionLoader(ds, a.batch, seed=0, workers=a.workers)
    waits, total = [], time.perf_counter()
    it = loader.batches()
    for k in range(a.steps):
        t = time.perf_counter()
        x, targets = next(it)
        if k:
            waits.append(time.perf_counter() - t)
        net(x)
        net.loss(targets)
        net.backward()
    total = time.perf_counter() - total
    loader.close()
    print(json.dumps({"bench": "detection_data", "what": "train", "cfg": a.cfg, "workers": a.workers, **common,
                      "steps": a.steps, "ms_per_step": round(1000 * total / a.steps, 1),
                      "wait_ms_median": round(1000 * statistics.median(waits), 2) if waits else None,
                      "wait_ms_max": round(1000 * max(waits), 2) if waits else None,
                      "stall_fraction": round(sum(waits) / total, 4)}), flush=True)


if __name__ == "__main__":
    main()
