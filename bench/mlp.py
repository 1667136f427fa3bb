"""Training throughput of the MLP 784-256-128-10 (ReLU, cross-entropy, SGD momentum 0.9), deltaprop vs PyTorch CPU.

Every measurement runs in its own subprocess (sharing a process slows PyTorch), the implementations are
interleaved (A B, then B A) over ``--rounds`` rounds, and the medians are reported with their ratio. Each result
line records the BLAS library and kernel in use (threadpoolctl) and the OPENBLAS variables. The whole set
runs under each environment of ``--envs``:

- ``as-is``: the OPENBLAS variables as this machine sets them;
- ``unset``: ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed (as on a user's machine);
- ``haswell``: ``OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512`` (the guard some machines set: AVX2 kernel).

    python3 bench/mlp.py                     # all, writes bench/results/mlp.jsonl
    python3 bench/mlp.py --quick             # 2 short rounds, batch 64: a check that it runs (~2 min)
    python3 bench/mlp.py --rounds 7 --batches 64 256 --envs as-is unset --blas numpy

deltaprop runs on each library of ``--blas`` (``DELTAPROP_BLAS=mkl`` and ``numpy``: the matrix {MKL, OpenBLAS})
with numba on and off; every result line records the CPU model, the BLAS, the threading layer and the wait
policy (``host``), and each summary line is per (environment, batch, library), with issue 17's target.

Output: one JSON line per measurement, then one summary line per (env, batch) with the medians and
``ratio = deltaprop / torch``; all written to ``--out`` (JSON lines) and printed. A third worker,
``gemm-only``, runs just the matrix products of deltaprop's step (same library, ``deltaprop.blas``): its
throughput over PyTorch's, ``ceiling_ratio``, is the most any engine using this BLAS could reach. A fourth,
``gemm+update``, adds the SGD-momentum pass over the parameters to those products (``floor_ratio``): the two
parts of a step no engine can skip. On a machine shared with
other jobs the whole-run medians swing wildly; each run therefore also records its best ~0.25 s window
(the throughput when the machine was quiet) and its samples per CPU-second, with their median ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ISSUE17_TARGETS, ROOT, add_run_options, apply_quick, blas_info,  # noqa: E402
                     env_for as _env_for, host_record, openblas_env, rotated, run_header)

SIZES = (784, 256, 128, 10)
WINDOW_S = 0.25
IMPLS = ["deltaprop", "torch", "gemm-only", "gemm+update"]
NONUMBA = "deltaprop-nonumba"        # deltaprop with DELTAPROP_NUMBA=0 (the NumPy path): run label, not a worker


def _data(n: int = 8192, seed: int = 0):
    import numpy as np
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = g.integers(0, 10, size=n).astype(np.int64)
    return X, y


def _time_loop(step, n_batches: int, batch: int, warmup_s: float, measure_s: float) -> dict:
    """Call step(i) for warmup_s, then count steps for at least measure_s."""
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < warmup_s:
        step(i % n_batches)
        i += 1
    steps = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    windows = []                      # throughput of consecutive ~0.25 s windows
    w_start, w_steps = t0, 0
    while True:
        step((i + steps) % n_batches)
        steps += 1
        w_steps += 1
        now = time.perf_counter()
        if now - w_start >= WINDOW_S and w_steps >= 3:
            windows.append(w_steps * batch / (now - w_start))
            w_start, w_steps = now, 0
        el = now - t0
        if el >= measure_s and steps >= 20:
            break
    cpu = time.process_time() - c0
    # samples per CPU-second: robust to other jobs on the machine when single-threaded (--threads 1);
    # the best window: the throughput of the quietest quarter-second (other jobs come and go)
    return {"steps": steps, "seconds": el, "samples_per_s": steps * batch / el, "cpu_seconds": cpu,
            "samples_per_cpu_s": steps * batch / cpu if cpu > 0 else None,
            "best_window_samples_per_s": max(windows) if windows else steps * batch / el,
            "windows": len(windows)}


def worker_deltaprop(batch: int, warmup_s: float, measure_s: float) -> dict:
    sys.path.insert(0, str(ROOT))
    import deltaprop as dp
    from deltaprop import models, nn, optim
    X, y = _data()
    nb = len(X) // batch
    dp.manual_seed(0)
    model = models.build("mlp")
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(i):
        xb, yb = X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        out = model(xb)
        loss(out, yb)
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    r = _time_loop(step, nb, batch, warmup_s, measure_s)
    r["deltaprop_blas"] = dp.blas.info()
    r["host"] = host_record(dp)
    return r


def worker_gemm(batch: int, warmup_s: float, measure_s: float, update: bool = False) -> dict:
    """Only the matrix products of deltaprop's step (3 forward, 3 weight-gradient, 2 input-gradient, 3 bias
    sums), through the same ``deltaprop.blas.matmul``: the floor of a step on this BLAS. torch's step time
    over this one is the highest ratio any engine using this BLAS could reach.

    ``update=True`` (worker ``gemm+update``) also applies SGD with momentum to the six parameters with the
    gradients those products returned (deltaprop's fused kernel, called directly: no optimizer object):
    the two parts every engine must do, products and one pass over parameters, gradients and momentum."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import deltaprop as dp
    from deltaprop.fast.sgd_numba import sgd_momentum_update
    X, _ = _data()
    X = X.reshape(len(X), -1)
    nb = len(X) // batch
    g = np.random.default_rng(0)
    ws = [g.standard_normal((o, i)).astype(np.float32) * np.float32(0.01) for i, o in zip(SIZES[:-1], SIZES[1:])]
    bs = [np.zeros(o, np.float32) for o in SIZES[1:]]
    hs = [g.standard_normal((batch, o)).astype(np.float32) for o in SIZES[1:]]
    bufs = [np.zeros_like(p) for p in ws + bs]
    ones = np.ones(batch, np.float32)
    mm = dp.blas.matmul

    # lr 0: the same passes over memory (w ← w − 0·b is still read and written), while the weights stay put and
    # the fixed random gradients cannot drive them to overflow over thousands of steps
    def sgd(p, grad, buf):
        if not sgd_momentum_update(p, grad, buf, 0.0, 0.9, 0.0, 0.0, False, False):
            buf *= np.float32(0.9)
            buf += grad
            p -= np.float32(0.0) * buf

    def step(i):
        a = X[i * batch:(i + 1) * batch]
        acts = [a]
        for w in ws:
            acts.append(mm(acts[-1], w.T))
        grads = [None] * 6
        for k in (2, 1, 0):
            d = hs[k]
            grads[k] = mm(d.T, acts[k])
            grads[3 + k] = mm(ones, d)
            if k:
                mm(d, ws[k])
        if update:
            for p, grad, buf in zip(ws + bs, grads, bufs):
                sgd(p, grad, buf)
    r = _time_loop(step, nb, batch, warmup_s, measure_s)
    r["deltaprop_blas"] = dp.blas.info()
    r["host"] = host_record(dp)
    return r


def worker_torch(batch: int, warmup_s: float, measure_s: float) -> dict:
    import torch
    X, y = _data()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    nb = len(X) // batch
    torch.manual_seed(0)
    layers = [torch.nn.Flatten()]
    for a, b in zip(SIZES[:-1], SIZES[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(i):
        xb, yb = Xt[i * batch:(i + 1) * batch], yt[i * batch:(i + 1) * batch]
        opt.zero_grad()
        out = model(xb)
        loss(out, yb).backward()
        opt.step()
    r = _time_loop(step, nb, batch, warmup_s, measure_s)
    r["torch_version"] = torch.__version__
    r["torch_threads"] = torch.get_num_threads()
    r["host"] = dict(host_record(), blas="torch's MKL", threading_layer="torch's OpenMP")
    return r


def run_worker(args) -> None:
    if args.worker in ("gemm-only", "gemm+update"):
        res = worker_gemm(args.batch, args.warmup, args.seconds, update=args.worker == "gemm+update")
    else:
        fn = {"deltaprop": worker_deltaprop, "torch": worker_torch}[args.worker]
        res = fn(args.batch, args.warmup, args.seconds)
    import numpy as np
    res.update({"impl": args.worker, "batch": args.batch, "numpy": np.__version__, "blas": blas_info(),
                "openblas_env": openblas_env()})
    print(json.dumps(res), flush=True)


def runs_of_round(args, r: int) -> list:
    """(label, worker, DELTAPROP_BLAS, numba) of one round: per library deltaprop with numba on and off and the
    two product workers, and PyTorch; the order rotates round by round."""
    runs = [("torch", "torch", None, True)]
    for b in args.blas:
        runs += [("deltaprop", "deltaprop", b, True), (NONUMBA, "deltaprop", b, False),
                 ("gemm-only", "gemm-only", b, True), ("gemm+update", "gemm+update", b, True)]
    return rotated(runs, r)


def measure(impl: str, batch: int, mode: str, args, blas=None, numba: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--batch", str(batch),
           "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
    env = _env_for(mode)
    if blas:
        env["DELTAPROP_BLAS"] = blas
    env["DELTAPROP_NUMBA"] = "1" if numba else "0"
    if args.threads:
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = str(args.threads)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["env_mode"] = mode
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes (default 64 256)")
    add_run_options(ap, seconds=2.0, warmup=0.5, envs=("unset",))
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/torch threads (default: the libraries' default, all cores)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mlp.jsonl"), help="JSON-lines output")
    args = ap.parse_args()
    if args.worker:
        run_worker(args)
        return
    apply_quick(args)
    if args.quick:
        args.batches = [64]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [run_header("mlp", "training samples/s, MLP 784-256-128-10 ReLU, CE, SGD momentum, float32", args,
                        threads=args.threads or "default")]
    results = []
    for mode in args.envs:
        for r in range(args.rounds):
            for batch in args.batches:
                for label, impl, blas, numba in runs_of_round(args, r):
                    res = measure(impl, batch, mode, args, blas, numba)
                    res.update({"round": r, "impl": label, "blas_setting": blas, "numba": numba})
                    results.append(res)
                    lines.append(res)
                    print(json.dumps(res), flush=True)
    summaries = []
    for mode in args.envs:
        for batch in args.batches:
            for lib in args.blas:
                summaries.append(_summary(results, mode, batch, lib, args))
                lines.append(summaries[-1])
    with open(out, "w") as f:
        for x in lines:
            f.write(json.dumps(x) + "\n")
    print("\nsummary (training samples/s, medians):")
    for s in summaries:
        print(f"  {s['env_mode']:>7}  batch {s['batch']:>4}  {s['blas']:>5}: deltaprop {s['deltaprop_median']:>9,} "
              f"(numba off {s['deltaprop_numba_off_median']:,})  torch {s['torch_median']:>9,}  "
              f"ratio {s['ratio']:.2f}x (numba off {s['ratio_numba_off']:.2f}x; target {s['target']}x: "
              f"{'met' if s['meets_target'] else 'NOT met'})  (paired {s['paired_ratio_median']:.2f}x; best windows "
              f"{s['deltaprop_best_window_median']:,} / {s['torch_best_window_median']:,} = "
              f"{s['ratio_best_window']:.2f}x; per CPU-s {s['ratio_per_cpu_s']:.2f}x; "
              f"products alone {s['gemm_only_median']:,} = ceiling {s['ceiling_ratio']:.2f}x; "
              f"products + SGD update {s['gemm_update_median']:,} = {s['floor_ratio']:.2f}x; "
              f"{s['host'].get('threading_layer')}, {s['host'].get('wait_policy')})")
    print(f"written to {out}")


def _summary(results, mode: str, batch: int, lib: str, args) -> dict:
    """Medians and ratios of one (environment, batch, library): deltaprop (numba on and off) against PyTorch."""
    def rows(impl):
        return [x for x in results if x["env_mode"] == mode and x["batch"] == batch and x["impl"] == impl
                and (impl == "torch" or x["blas_setting"] == lib)]
    impls = IMPLS + [NONUMBA]
    med = {impl: statistics.median([x["samples_per_s"] for x in rows(impl)]) for impl in impls}
    kernels = {impl: sorted({f"{b.get('internal_api')}:{b.get('architecture')}" for x in rows(impl)
                             for b in x["blas"]}) for impl in impls}
    cpu = {impl: statistics.median([x["samples_per_cpu_s"] for x in rows(impl)]) for impl in impls}
    best = {impl: statistics.median([x["best_window_samples_per_s"] for x in rows(impl)]) for impl in impls}
    paired = []   # deltaprop / torch within a round (measured back to back: same machine state)
    for r in range(args.rounds):
        d = {x["impl"]: x["samples_per_s"] for x in rows("deltaprop") + rows("torch") if x["round"] == r}
        if "deltaprop" in d and "torch" in d:
            paired.append(d["deltaprop"] / d["torch"])
    ratio = med["deltaprop"] / med["torch"]
    return {"summary": True, "env_mode": mode, "batch": batch, "blas": lib, "threads": args.threads or "default",
            "paired_ratio_median": round(statistics.median(paired), 3) if paired else None,
            "deltaprop_median": round(med["deltaprop"]), "torch_median": round(med["torch"]),
            "ratio": round(med["deltaprop"] / med["torch"], 3),
            "ratio_per_cpu_s": round(cpu["deltaprop"] / cpu["torch"], 3),
            "deltaprop_best_window_median": round(best["deltaprop"]),
            "torch_best_window_median": round(best["torch"]),
            "ratio_best_window": round(best["deltaprop"] / best["torch"], 3), "blas_kernels": kernels,
            "gemm_only_median": round(med["gemm-only"]),
            "ceiling_ratio": round(med["gemm-only"] / med["torch"], 3),
            "gemm_update_median": round(med["gemm+update"]),
            "floor_ratio": round(med["gemm+update"] / med["torch"], 3),
            "openblas_env": next((x["openblas_env"] for x in results if x["env_mode"] == mode), None),
            "deltaprop_numba_off_median": round(med[NONUMBA]),
            "ratio_numba_off": round(med[NONUMBA] / med["torch"], 3),
            "target": ISSUE17_TARGETS["mlp"], "meets_target": ratio >= ISSUE17_TARGETS["mlp"],
            "host": rows("deltaprop")[0]["host"], "host_numba_off": rows(NONUMBA)[0]["host"],
         "torch_host": rows("torch")[0]["host"]}


if __name__ == "__main__":
    main()
