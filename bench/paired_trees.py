"""The same benchmark workers run from two checkouts, paired: is a change of the code as fast as the code before it?

Each case runs the deltaprop worker of ``mlp.py``, ``cnn.py`` or ``yolo.py`` (the same measurement those scripts make
against PyTorch) from an old and a new checkout in alternate processes, each with its own tree on ``PYTHONPATH``
and its own copy of the bench script, the order flipped every round; the same ``DELTAPROP_BLAS`` (numpy: NumPy's
OpenBLAS, mkl) and numba setting on both sides; a first, discarded run per tree compiles numba's kernels into its
cache. Result: samples (images) per second, medians, and new ÷ old of the
medians and of each round (``paired_ratio``: the median of the per-round ratios, the number to quote on a shared
machine). One JSON line per case and setting, appended to ``--out``.

    python3 bench/paired_trees.py --old /path/to/old/checkout --rounds 5
    python3 bench/paired_trees.py --old ../base --cases yolo:infer-416-b1 yolo:train-320 --blas numpy --numba 1

A case is ``BENCH:CASE``: ``mlp:64`` / ``mlp:256`` (the batch), ``cnn:lenet-train``, ``cnn:convbn-train``,
``cnn:lenet-infer``, ``yolo:train-416`` ... ``yolo:infer-320-b8``. ``DELTAPROP_CONV_DIRECT`` (the direct 3×3 loops)
is set the same on both sides (``--conv-direct``, default ``off``: the old code measured it inside its first
convolution, the new one reads the machine's calibration, so only a forced value compares the two codes alike).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, host_record  # noqa: E402

DEFAULT_CASES = ["mlp:64", "cnn:lenet-train", "cnn:convbn-train", "cnn:lenet-infer", "yolo:train-320",
                 "yolo:infer-416-b1", "yolo:infer-416-b8"]
RATE = {"mlp": "samples_per_s", "cnn": "samples_per_s", "yolo": "images_per_s"}


def worker_command(tree: Path, bench: str, case: str, numba: str, seconds: float, warmup: float,
                   weights: str) -> list:
    script = str(tree / "bench" / f"{bench}.py")
    common = ["--seconds", str(seconds), "--warmup", str(warmup)]
    if bench == "mlp":
        return [sys.executable, script, "--worker", "deltaprop", "--batch", case] + common
    worker = "numba" if numba == "1" else "numpy"
    if bench == "cnn":
        return [sys.executable, script, "--worker", worker, "--case", case] + common
    return [sys.executable, script, "--worker", "numpy", "--case", case, "--weights", weights] + common


def run_one(tree: Path, bench: str, case: str, blas: str, numba: str, args, weights: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), DELTAPROP_BLAS=blas, DELTAPROP_NUMBA=numba,
               DELTAPROP_CONV_DIRECT=args.conv_direct)
    p = subprocess.run(worker_command(tree, bench, case, numba, args.seconds, args.warmup, weights), env=env,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{tree} {bench}:{case} (blas {blas}, numba {numba}) failed:\n{p.stderr[-3000:]}")
    return float(json.loads(p.stdout.strip().splitlines()[-1])[RATE[bench]])


def git_commit(tree: Path) -> str:
    p = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    ap.add_argument("--new", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help=f"BENCH:CASE (default {' '.join(DEFAULT_CASES)})")
    ap.add_argument("--blas", nargs="+", default=["numpy", "mkl"], choices=["numpy", "mkl"])
    ap.add_argument("--numba", nargs="+", default=["1"], choices=["0", "1"], help="1: the numba path, 0: NumPy's")
    ap.add_argument("--conv-direct", default="off", choices=["on", "off"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "paired_trees.jsonl"))
    args = ap.parse_args()
    old, new = args.old.resolve(), args.new.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "yolov3-tiny.weights")
        if any(c.startswith("yolo:") for c in args.cases):   # one weights file, written by the new tree
            subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import yolo; "
                            "yolo.make_weights(sys.argv[2])", str(new / "bench"), weights],
                           env=dict(os.environ, PYTHONPATH=str(new)), check=True)
        head = {"bench": "paired_trees", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "old": str(old),
                "old_commit": git_commit(old), "new": str(new), "new_commit": git_commit(new),
                "rounds": args.rounds, "seconds": args.seconds, "conv_direct": args.conv_direct, **host_record()}
        print(json.dumps(head), flush=True)
        with open(args.out, "a") as out:
            out.write(json.dumps(head) + "\n")
            for spec in args.cases:
                bench, case = spec.split(":", 1)
                numbas = ["1"] if bench == "mlp" and "1" not in args.numba else args.numba
                for blas in args.blas:
                    for numba in numbas:
                        rates = {"old": [], "new": []}
                        for tree in (old, new):      # discarded: numba compiles into each tree's own cache
                            run_one(tree, bench, case, blas, numba, args, weights)
                        for r in range(args.rounds):
                            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                                tree = old if side == "old" else new
                                rates[side].append(run_one(tree, bench, case, blas, numba, args, weights))
                        mo, mn = statistics.median(rates["old"]), statistics.median(rates["new"])
                        line = {"bench": "paired_trees", "case": spec, "blas": blas, "numba": numba,
                                "old": round(mo, 2), "new": round(mn, 2), "new/old": round(mn / mo, 3),
                                "paired_ratio": round(statistics.median(
                                    n / o for n, o in zip(rates["new"], rates["old"])), 3),
                                "old_all": [round(v, 2) for v in rates["old"]],
                                "new_all": [round(v, 2) for v in rates["new"]],
                                "old_commit": head["old_commit"], "new_commit": head["new_commit"],
                                "cpu": head.get("cpu"), "date": head["date"]}
                        print(json.dumps(line), flush=True)
                        out.write(json.dumps(line) + "\n")
                        out.flush()


if __name__ == "__main__":
    main()
