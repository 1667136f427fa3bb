"""Convolutional-network throughput and memory, deltaprop (NumPy path, and with numba) vs PyTorch CPU.

Cases (float32):

- ``lenet-train``: LeNet-5 (``models.build("lenet")``) on 1×28×28, batch 64, cross-entropy, SGD momentum 0.9;
- ``convbn-train``: conv-BN-leaky ×3 + max pools (16/32/64 filters, ``models.build("convbn")``) on 3×64×64,
  batch 16;
- ``lenet-infer``: LeNet-5 forward in eval mode without caches (``no_grad``), batch 64: with numba the compiled
  inference plan (docs/inference.md), without it the layers one by one.

Every measurement runs in its own subprocess (sharing a process slowed PyTorch by half), the three
implementations are interleaved (their order rotates every round) over ``--rounds`` rounds, and the medians
are reported with ratios ``deltaprop / torch`` (ratio of medians, and ``paired_ratio_*``: the median of the
ratios within each round). PyTorch runs with ``torch.set_num_threads(2)``. The training
workers also report the peak RSS of their process (``ru_maxrss``) and its growth over the training steps.
Each result line records the BLAS library and kernel (threadpoolctl) and the OPENBLAS variables; the whole
set runs under each environment of ``--envs``:

- ``as-is``: the OPENBLAS variables as this machine sets them (or not);
- ``unset``: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``;
- ``haswell``: ``OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512`` (the AVX2 guard some machines set).

A last subprocess times the naive reference kernels against the fast ones on a small convolution.

The machine is shared: before each run the script waits (``--wait-idle`` seconds at most) for it to be
85% idle, and it records ``others_cores``, the CPU other processes used during the run. Runs with more
than 0.15 cores of such contention are left out of the medians when 3 clean runs of each implementation
remain (the summary says which). A busy second core slows 2-thread BLAS (ours and PyTorch's) several-fold.

    python3 bench/cnn.py                       # unset, 5 rounds, both libraries, writes bench/results/cnn.jsonl
    python3 bench/cnn.py --quick               # 2 short rounds: a check that everything runs (~3 min)
    python3 bench/cnn.py --rounds 7 --envs unset haswell --cases lenet-train --blas numpy

The deltaprop runs (NumPy path = numba off, numba path = numba on) are made with each library of ``--blas``
(``DELTAPROP_BLAS=mkl`` and ``numpy``: the matrix {MKL, OpenBLAS} × {numba on, off}); every result line records
the CPU model, the BLAS, the threading layer and the wait policy (``host``); the summaries are per (environment,
library, case) and carry issue 17's targets for the numba path (``target_issue17``, ``meets_issue17``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ISSUE17_TARGETS, ROOT, add_run_options, apply_quick, blas_info,  # noqa: E402
                     cpu_jiffies, env_for as _env_for, host_record, openblas_env, rotated, run_header,
                     run_measured)

CASES = {"lenet-train": ("lenet", 64, True), "convbn-train": ("convbn", 16, True), "lenet-infer": ("lenet", 64, False)}
IMPLS = ("numpy", "numba", "torch")
# Targets of issue 4 (OPENBLAS variables unset): minimum deltaprop/torch throughput ratios, max memory ratio.
# Issue 27: LeNet inference with numba (the compiled inference plan, docs/inference.md) at 1.2× PyTorch.
TARGETS = {("numpy", "lenet-train"): 0.6, ("numpy", "convbn-train"): 0.6, ("numpy", "lenet-infer"): 0.5,
           ("numba", "lenet-train"): 0.8, ("numba", "convbn-train"): 0.9, ("numba", "lenet-infer"): 1.2}
MEMORY_TARGET = 1.5
CLEAN_OTHERS = 0.15   # cores used by other processes during a run, above which the run counts as contended


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data(model: str, batch: int, seed: int = 0):
    import numpy as np
    g = np.random.default_rng(seed)
    shape = (1, 28, 28) if model == "lenet" else (3, 64, 64)
    n = batch * 8
    return g.standard_normal((n,) + shape).astype(np.float32), g.integers(0, 10, size=n).astype(np.int64)


def _time_loop(step, n_batches: int, batch: int, warmup_s: float, measure_s: float) -> dict:
    """Call step(i) for warmup_s, then count steps for at least measure_s (and at least 10 steps)."""
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < warmup_s or i < 2:
        step(i % n_batches)
        i += 1
    steps = 0
    t0 = time.perf_counter()
    while True:
        step((i + steps) % n_batches)
        steps += 1
        el = time.perf_counter() - t0
        if el >= measure_s and steps >= 10:
            break
    return {"steps": steps, "seconds": round(el, 4), "samples_per_s": steps * batch / el}


def worker_deltaprop(case: str, warmup_s: float, measure_s: float) -> dict:
    sys.path.insert(0, str(ROOT))
    import deltaprop as dp
    from deltaprop import models, nn, optim
    from deltaprop.runtime import jit as _numba
    name, batch, train = CASES[case]
    X, y = _data(name, batch)
    nb = len(X) // batch
    dp.manual_seed(0)
    model = models.build(name)
    res = {"numba_enabled": _numba.enabled()}
    if train:
        loss = nn.CrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(i):
            out = model(X[i * batch:(i + 1) * batch])
            loss(out, y[i * batch:(i + 1) * batch])
            opt.zero_grad()
            model.backward(loss.backward())
            opt.step()
    else:
        model.eval()

        def step(i):
            with dp.no_grad():
                model(X[i * batch:(i + 1) * batch])
    rss0 = _rss_mb()
    res.update(_time_loop(step, nb, batch, warmup_s, measure_s))
    res.update({"rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1), "host": host_record(dp)})
    return res


def worker_torch(case: str, warmup_s: float, measure_s: float) -> dict:
    import torch
    torch.set_num_threads(2)
    nn = torch.nn
    name, batch, train = CASES[case]
    X, y = _data(name, batch)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    nb = len(X) // batch
    torch.manual_seed(0)
    if name == "lenet":
        model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                              nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                              nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    else:
        layers = []
        for cin, cout in ((3, 16), (16, 32), (32, 64)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1),
                       nn.MaxPool2d(2)]
        model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 8 * 8, 10))
    if train:
        loss = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(i):
            opt.zero_grad()
            loss(model(Xt[i * batch:(i + 1) * batch]), yt[i * batch:(i + 1) * batch]).backward()
            opt.step()
    else:
        model.eval()

        def step(i):
            with torch.no_grad():
                model(Xt[i * batch:(i + 1) * batch])
    rss0 = _rss_mb()
    res = _time_loop(step, nb, batch, warmup_s, measure_s)
    res.update({"rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1),
                "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                "host": dict(host_record(), blas="torch's MKL", threading_layer="torch's OpenMP")})
    return res


def worker_naive(warmup_s: float, measure_s: float) -> dict:
    """Fast vs naive conv kernels (forward + backward, NumPy path) on N=2, 4→8 channels, 12×12, 3×3, pad 1."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from deltaprop.runtime import jit as _numba
    from deltaprop.functional import conv as C
    _numba.set_enabled(False)
    g = np.random.default_rng(0)
    x = g.standard_normal((2, 4, 12, 12)).astype(np.float32)
    w = g.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = g.standard_normal(8).astype(np.float32)

    def run(fwd, bwd):
        out, cache = fwd(x, w, b, 1, 1)
        bwd(np.ones_like(out), cache)

    def timeit(fn, min_s):
        fn()
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            el = time.perf_counter() - t0
            if el >= min_s and n >= 3:
                return el / n
    fast = timeit(lambda: run(C.conv2d_forward, C.conv2d_backward), measure_s)
    naive = timeit(lambda: run(C.conv2d_forward_naive, C.conv2d_backward_naive), measure_s)
    return {"case": "naive-vs-fast", "shape": "x (2,4,12,12), w (8,4,3,3), pad 1", "fast_ms": fast * 1e3,
            "naive_ms": naive * 1e3, "speedup": naive / fast}


def run_worker(args) -> None:
    if args.worker == "naive":
        res = worker_naive(args.warmup, args.seconds)
    elif args.worker == "torch":
        res = worker_torch(args.case, args.warmup, args.seconds)
    else:
        res = worker_deltaprop(args.case, args.warmup, args.seconds)
    import numpy as np
    res.update({"impl": args.worker, "numpy": np.__version__, "blas": blas_info(),
                "openblas_env": openblas_env()})
    if args.worker != "naive":
        res["case"] = args.case
    print(json.dumps(res), flush=True)


def env_for(mode: str, impl: str, blas=None) -> dict:
    env = _env_for(mode)
    env["DELTAPROP_NUMBA"] = "1" if impl == "numba" else "0"
    if blas:
        env["DELTAPROP_BLAS"] = blas
    return env


def wait_idle(max_wait_s: float, min_idle: float = 0.85) -> float:
    """Wait (up to max_wait_s) until the machine is at least min_idle idle over one second; return that idle."""
    t0 = time.perf_counter()
    while True:
        a = cpu_jiffies()
        time.sleep(1.0)
        b = cpu_jiffies()
        if a is None or b is None:
            return float("nan")
        idle = 1.0 - (b[0] - a[0]) / max(b[1] - a[1], 1)
        if idle >= min_idle or time.perf_counter() - t0 > max_wait_s:
            return idle


def measure(impl: str, case: str, mode: str, args, blas=None) -> dict:
    """One worker subprocess. Records how much CPU other processes used meanwhile (``others_cores``:
    machine busy time minus the worker's own CPU time, per second of wall time), since the machine is shared."""
    idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else float("nan")
    cmd = [sys.executable, __file__, "--worker", impl, "--case", case,
           "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    res = run_measured(cmd, env_for(mode, impl, blas), f"{impl} {case} worker", timeout=600)
    res["env_mode"] = mode
    res["idle_before"] = round(idle, 3)
    return res


def summarize(results, envs, cases, libs=(None,)) -> list:
    out = []
    for mode, lib, case in [(m, b, c) for m in envs for b in libs for c in cases]:
        rows = [x for x in results if x["env_mode"] == mode and x.get("case") == case
                and (x["impl"] == "torch" or x.get("blas_setting") == lib)]
        if not rows:
            continue
        # Runs during which other processes used more than CLEAN_OTHERS cores are left out of the
        # medians when at least 3 clean runs of every implementation remain.
        clean = [x for x in rows if x.get("others_cores", 0.0) <= CLEAN_OTHERS]
        if all(sum(1 for x in clean if x["impl"] == i) >= 3 for i in IMPLS):
            rows_used, basis = clean, "clean runs"
        else:
            rows_used, basis = rows, "all runs (too few clean ones)"
        all_rows, rows = rows, rows_used
        med = {i: statistics.median([x["samples_per_s"] for x in rows if x["impl"] == i]) for i in IMPLS}
        s = {"summary": True, "env_mode": mode, "blas": lib, "case": case,
             "median_samples_per_s": {i: round(v, 1) for i, v in med.items()},
             "rounds": len([x for x in all_rows if x["impl"] == "torch"]), "medians_over": basis,
             "runs_used": {i: sum(1 for x in rows if x["impl"] == i) for i in IMPLS}}
        for impl in ("numpy", "numba"):
            r = med[impl] / med["torch"]
            s[f"ratio_{impl}"] = round(r, 3)
            # the same ratio taken within each round (runs minutes apart see different machine speeds)
            paired = [a["samples_per_s"] / b["samples_per_s"] for a in rows for b in rows
                      if a["impl"] == impl and b["impl"] == "torch" and a["round"] == b["round"]]
            if paired:
                s[f"paired_ratio_{impl}"] = round(statistics.median(paired), 3)
            tgt = TARGETS.get((impl, case))
            if tgt is not None:
                s[f"target_{impl}"] = tgt
                s[f"meets_{impl}"] = r >= tgt
            if impl == "numba":
                s["target_issue17"] = ISSUE17_TARGETS[case]
                s["meets_issue17"] = r >= ISSUE17_TARGETS[case]
        if CASES[case][2]:
            peak = {i: statistics.median([x["peak_rss_mb"] for x in rows if x["impl"] == i]) for i in IMPLS}
            grow = {i: statistics.median([x["peak_rss_mb"] - x["rss_before_mb"] for x in rows
                                          if x["impl"] == i]) for i in IMPLS}
            s["peak_rss_mb"] = {i: round(v, 1) for i, v in peak.items()}
            s["step_rss_growth_mb"] = {i: round(v, 1) for i, v in grow.items()}
            s["memory_ratio"] = {i: round(peak[i] / peak["torch"], 3) for i in ("numpy", "numba")}
            s["meets_memory"] = all(v <= MEMORY_TARGET for v in s["memory_ratio"].values())
        s["blas_kernels"] = sorted({f"{b.get('internal_api')}:{b.get('architecture')}:{b.get('num_threads')}"
                                    for x in rows for b in x["blas"] if b.get("user_api") == "blas"})
        s["openblas_env"] = rows[0]["openblas_env"]
        s["host"] = {i: next((x["host"] for x in rows if x["impl"] == i and "host" in x), None) for i in IMPLS}
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=list(IMPLS) + ["naive"], help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=list(CASES), default="lenet-train", help=argparse.SUPPRESS)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases (default all)")
    add_run_options(ap, seconds=1.0, warmup=0.4, envs=("unset",))
    ap.add_argument("--no-naive", action="store_true", help="skip the naive-kernel timing")
    ap.add_argument("--wait-idle", type=float, default=20.0,
                    help="before each run wait up to this many seconds for the machine to be 85%% idle (0: never)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cnn.jsonl"), help="JSON-lines output")
    args = ap.parse_args()
    if args.worker:
        run_worker(args)
        return
    apply_quick(args)
    if args.quick:
        args.wait_idle = min(args.wait_idle, 3.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [run_header("cnn", "samples/s: LeNet train b64, conv-BN-leaky 3x64x64 train b16, LeNet infer b64; "
                        "float32; deltaprop NumPy path / numba path / torch (2 threads)", args,
                        load_avg=os.getloadavg())]
    results = []
    t_start = time.perf_counter()
    for r in range(args.rounds):                            # environments interleaved too: the VM drifts
        for mode in args.envs:
            runs = [("torch", None)] + [(i, b) for b in args.blas for i in IMPLS if i != "torch"]
            order = rotated(runs, r)           # rotate who goes first
            for case in args.cases:
                for impl, blas in order:
                    res = measure(impl, case, mode, args, blas)
                    res["round"] = r
                    res["blas_setting"] = blas
                    results.append(res)
                    lines.append(res)
                    print(json.dumps(res), flush=True)
    if not args.no_naive:
        p = subprocess.run([sys.executable, __file__, "--worker", "naive", "--seconds", "0.5"],
                           env=env_for("as-is", "numpy"), capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        naive = json.loads(p.stdout.strip().splitlines()[-1])
        lines.append(naive)
        print(json.dumps(naive), flush=True)
    summaries = summarize(results, args.envs, args.cases, args.blas)
    for s in summaries:
        print(json.dumps(s), flush=True)
    lines += summaries
    with open(out, "a") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"\n{'env':7s} {'blas':5s} {'case':13s} {'numpy/s':>9s} {'numba/s':>9s} {'torch/s':>9s} {'np/t':>6s} {'nb/t':>6s}"
          f" {'paired':>11s}  {'mem np/nb/t MB':15s} runs used (np/nb/t)")
    for s in summaries:
        m = s["median_samples_per_s"]
        mem = "/".join(f"{s['peak_rss_mb'][i]:.0f}" for i in IMPLS) if "peak_rss_mb" in s else "-"
        used = "/".join(str(s["runs_used"][i]) for i in IMPLS)
        print(f"{s['env_mode']:7s} {s['blas']:5s} {s['case']:13s} {m['numpy']:9.0f} {m['numba']:9.0f} {m['torch']:9.0f} "
              f"{s['ratio_numpy']:6.2f} {s['ratio_numba']:6.2f} "
              f"{s['paired_ratio_numpy']:5.2f}/{s['paired_ratio_numba']:.2f}"
              f"  {mem:15s} {used} {s['medians_over']}; issue 17 target {s['target_issue17']}: "
              f"{'met' if s['meets_issue17'] else 'NOT met'}; {(s['host']['numba'] or {}).get('threading_layer')}, "
              f"{(s['host']['numba'] or {}).get('wait_policy')}")
    if not args.no_naive:
        print(f"naive kernels: fast {naive['fast_ms']:.3f} ms vs naive {naive['naive_ms']:.1f} ms "
              f"({naive['speedup']:.0f}x)")
    print(f"total {time.perf_counter() - t_start:.0f} s; results appended to {out}")


if __name__ == "__main__":
    main()
