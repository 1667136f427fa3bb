"""Pooling and batch-norm kernels on the conv-BN-leaky bench shapes (N=16, 16/32/64 channels at 64/32/16 px),
deltaprop (NumPy path, numba path) against PyTorch, each engine in its own process, interleaved rounds.
``bn_leaky_pool`` is convbn's block after the convolution (``BatchNormActPool2d``; PyTorch: BatchNorm2d,
LeakyReLU, MaxPool2d).

    python bench/pool_norm.py [--rounds 5] [--reps 40] [--threads 1] [--clock cpu]

Prints one JSON line per (case, engine) with the median forward+backward milliseconds over rounds, and a
summary line with the ratios torch_ms / ours_ms (> 1: deltaprop is faster). Every line records the BLAS
kernel (threadpoolctl) and the OPENBLAS_* variables.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(16, 16, 64, 64), (16, 32, 32, 32), (16, 64, 16, 16)]
CASES = ["bn", "bn_leaky", "bn_leaky_fused", "maxpool2", "avgpool2", "bn_leaky_pool"]
ENGINES = ["numpy", "numba", "torch"]


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info
        return ";".join(f"{i.get('internal_api')}:{i.get('architecture')}:{i.get('num_threads')}"
                        for i in threadpool_info())
    except Exception as exc:  # pragma: no cover - threadpoolctl is a bench extra
        return f"unknown ({exc})"


def _time(fn, reps: int) -> float:
    clock = time.process_time if os.environ.get("DP_BENCH_CLOCK") == "cpu" else time.perf_counter
    fn()
    ts = []
    for _ in range(reps):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return statistics.median(ts) * 1e3


def worker(engine: str, reps: int) -> None:
    import numpy as np
    rng = np.random.default_rng(0)
    out = {}
    if engine == "torch":
        import torch
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        tnn = torch.nn
        for shape in SHAPES:
            c = shape[1]
            x = torch.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
            mods = {"bn": tnn.BatchNorm2d(c), "bn_leaky": tnn.Sequential(tnn.BatchNorm2d(c), tnn.LeakyReLU(0.1)),
                    "bn_leaky_fused": tnn.Sequential(tnn.BatchNorm2d(c), tnn.LeakyReLU(0.1)),
                    "maxpool2": tnn.MaxPool2d(2), "avgpool2": tnn.AvgPool2d(2),
                    "bn_leaky_pool": tnn.Sequential(tnn.BatchNorm2d(c), tnn.LeakyReLU(0.1), tnn.MaxPool2d(2))}
            for case, m in mods.items():
                y = m(x)
                d = torch.ones_like(y)

                def step(m=m, d=d):
                    m(x).backward(d)
                out[f"{case}{shape}"] = _time(step, reps)
    else:
        from deltaprop.runtime import jit as _numba
        import deltaprop.nn as nn
        _numba.set_enabled(engine == "numba")
        for shape in SHAPES:
            c = shape[1]
            x = rng.standard_normal(shape).astype(np.float32)
            mods = {"bn": nn.BatchNorm2d(c), "bn_leaky": nn.Sequential(nn.BatchNorm2d(c), nn.LeakyReLU(0.1)),
                    "bn_leaky_fused": nn.BatchNormAct2d(c, "leaky", 0.1),
                    "maxpool2": nn.MaxPool2d(2), "avgpool2": nn.AvgPool2d(2),
                    "bn_leaky_pool": nn.BatchNormActPool2d(c, "leaky", 0.1)}
            for case, m in mods.items():
                d = np.ones_like(m.forward(x))
                m.backward(d)

                def step(m=m, d=d):
                    m.forward(x)
                    m.backward(d)
                out[f"{case}{shape}"] = _time(step, reps)
    out["_blas"] = _blas()
    print(json.dumps(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for BLAS and PyTorch in the workers (0: their defaults); 1 is steadier")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time (with --threads 1, steadier when other jobs share the cores)")
    ap.add_argument("--worker", choices=ENGINES)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.reps)
        return 0
    results = {e: [] for e in ENGINES}
    wenv = dict(os.environ, DP_BENCH_CLOCK=args.clock)
    if args.threads:
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            wenv[k] = str(args.threads)
    for _ in range(args.rounds):  # interleaved: A B C A B C ...
        for e in ENGINES:
            p = subprocess.run([sys.executable, __file__, "--worker", e, "--reps", str(args.reps)],
                               capture_output=True, text=True, check=True, env=wenv)
            results[e].append(json.loads(p.stdout.strip().splitlines()[-1]))
    env = {k: wenv.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")}
    blas = results["numpy"][0]["_blas"]
    med = {e: {k: statistics.median(r[k] for r in results[e]) for k in results[e][0] if not k.startswith("_")}
           for e in ENGINES}
    for key in med["torch"]:
        line = {"case": key, **{f"{e}_ms": round(med[e][key], 3) for e in ENGINES},
                "ratio_numpy": round(med["torch"][key] / med["numpy"][key], 2),
                "ratio_numba": round(med["torch"][key] / med["numba"][key], 2),
                "blas": blas, "env": env, "rounds": args.rounds, "clock": args.clock}
        print(json.dumps(line))
    per_step = {e: sum(med[e][f"bn_leaky_pool{s}"] for s in SHAPES) for e in ENGINES}
    print(json.dumps({"case": "conv-BN-net share (3x BatchNormActPool2d: BN + leaky + maxpool 2x2, fwd+bwd)",
                      **{f"{e}_ms": round(v, 3) for e, v in per_step.items()},
                      "ratio_numpy": round(per_step["torch"] / per_step["numpy"], 2),
                      "ratio_numba": round(per_step["torch"] / per_step["numba"], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
