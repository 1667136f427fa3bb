"""Trim a reference step dumped by ``step_pjreddie``/``step_alexeyab`` into a test fixture of a few hundred KB.

    python3 tools/darknet_harness/trim_dump.py DUMP_DIR FIXTURE_DIR [--cap 2048] [--head-cap 16384] [--heads 16,23]

DUMP_DIR holds the harness's ``step/`` (``manifest.txt``, ``cost.txt``, ``{params_before,forward,backward,
after_update}/Lxx_NAME.f32``). FIXTURE_DIR gets ``step.npz``: every array of the manifest except
``params_before`` (the test rebuilds the start with ``hash_init``), whole when it has at most ``--cap`` values,
else every k-th value from the first (k = ⌈count/cap⌉; ``--head-cap`` for the outputs and deltas of the
``--heads`` layers, the [yolo] layers), with ``NAME:stride`` and ``NAME:count`` beside each; and ``cost.txt``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def trim(dump: Path, out: Path, cap: int = 2048, head_cap: int = 16384, heads=()) -> dict:
    """Write ``out/step.npz`` and ``out/cost.txt`` from ``dump/step``; returns {name: (count, stride)}."""
    step = dump / "step"
    arrays, kept = {}, {}
    for line in (step / "manifest.txt").read_text().splitlines():
        rel, count = line.split()
        if rel.startswith("params_before/"):
            continue
        name = rel[:-4]
        layer = int(name.split("/L")[1][:2]) if "/L" in name else -1
        limit = head_cap if layer in heads and ("output" in name or "delta" in name) else cap
        a = np.fromfile(step / rel, "<f4")
        assert a.size == int(count), rel
        stride = max(1, math.ceil(a.size / limit))
        arrays[name] = a[::stride].copy()
        arrays[f"{name}:stride"] = np.array(stride)
        arrays[f"{name}:count"] = np.array(a.size)
        kept[name] = (a.size, stride)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "step.npz", **arrays)
    (out / "cost.txt").write_text((step / "cost.txt").read_text())
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cap", type=int, default=2048)
    ap.add_argument("--head-cap", type=int, default=16384)
    ap.add_argument("--heads", default="", help="comma-separated indices of the [yolo] layers")
    a = ap.parse_args()
    heads = tuple(int(h) for h in a.heads.split(",") if h)
    kept = trim(a.dump, a.out, a.cap, a.head_cap, heads)
    size = (a.out / "step.npz").stat().st_size
    print(f"{len(kept)} arrays -> {a.out}/step.npz ({size:,} bytes)")


if __name__ == "__main__":
    main()
