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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cfg", default="yolov3-tiny")
    ap.add_argument("--data", help=".data file whose train images to load (default: coco128)")
    a = ap.parse_args()
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
