"""Data-parallel training over MPI (deltaprop.distributed) on this machine, with PyTorch's DistributedDataParallel
(gloo) measured in the same run, and what the measured numbers mean for a cluster.

Every process runs one thread (``OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS=1``: two ranks on two cores).
For 1 and 2 processes (``mpirun -n 2``) at the same global batch, each run reports: samples/s, the step time,
the measured bucket sizes, the gradient allreduce time per step (the buckets allreduced blocking, with no
compute, right after the timed loop), the time ``finish()`` still waited per step (the part backward did not
hide; the ranks pass a barrier before each backward so that this is the network's time, not a forward slowed
by other jobs) and the hidden fraction ``1 − wait/allreduce``; also the backward time left after the first bucket was
launched (the overlap window). Implementations and process counts are interleaved over ``--rounds`` rounds
(the order rotates each round); medians are reported.

Then a table from those numbers with the ring-allreduce cost model (weak scaling: every rank keeps the
per-rank batch of the 2-process run): a bucket of S bytes over p ranks costs ``2(p − 1)·α + 2·(p − 1)/p·S/B``;
the overlap window W hides all but ``max(T − W, T_last)`` (T the sum over buckets, T_last the last bucket,
which leaves when backward ends); efficiency = step / (step + exposed). α, B: 10 Gb/s Ethernet (α = 25 µs)
and 100 Gb/s InfiniBand (α = 2 µs). The line states where efficiency drops below 90 %.

    python3 bench/distributed.py                       # MLP, global batch 128; writes bench/results/distributed.jsonl
    python3 bench/distributed.py --model lenet --batch 64 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, blas_info, rotated, run_header  # noqa: E402

NETWORKS = {"10 Gb/s Ethernet": (10e9 / 8, 25e-6), "100 Gb/s InfiniBand": (100e9 / 8, 2e-6)}
RANKS = (8, 64, 512)
WARMUP_STEPS = 5


def _data(n: int, seed: int = 0):
    import numpy as np
    g = np.random.default_rng(seed)
    return g.standard_normal((n, 1, 28, 28)).astype(np.float32), g.integers(0, 10, n).astype(np.int64)


# --- workers (run under mpirun) ------------------------------------------------------------------

def worker_deltaprop(args) -> dict:
    import numpy as np
    import deltaprop as dp
    from deltaprop import models, nn, optim
    from deltaprop.data import DataLoader
    from deltaprop.distributed import DataParallel, world
    comm = world()
    dp.manual_seed(0)
    model = models.build(args.model)
    X, y = _data(args.batch * 16)
    loader = DataLoader(X, y, batch_size=args.batch, shuffle=True, seed=1)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = nn.CrossEntropyLoss()
    par = DataParallel(model, comm)
    par.broadcast_state(opt)
    steps, waits, windows, t_bwd = 0, [], [], []

    def epoch(limit):
        nonlocal steps
        for xb, yb, n in par.batches(loader):
            out = model(xb)
            loss(out, yb)
            opt.zero_grad()
            if par.active:
                comm.barrier()      # both ranks start backward together: finish() then waits for the network,
            t0 = time.perf_counter()  # not for a rank the other jobs on this machine slowed down in forward
            par.backward(model, loss.backward(), len(xb), n)
            t_bwd.append(time.perf_counter() - t0)
            if par.reducer is not None:
                waits.append(par.reducer.stats["wait_s"])
                windows.append(par.reducer.stats["overlap_window_s"])
            opt.step()
            steps += 1
            if steps >= limit:
                return True
        return False

    while not epoch(WARMUP_STEPS):         # compiles the kernels
        pass
    steps = 0
    t0 = time.perf_counter()
    while not epoch(WARMUP_STEPS):
        pass
    n = _agreed_steps(comm.broadcast, (time.perf_counter() - t0) / WARMUP_STEPS, args.seconds)
    steps, waits, windows, t_bwd = 0, [], [], []
    comm.barrier()
    t0 = time.perf_counter()
    while not epoch(n):
        pass
    elapsed = time.perf_counter() - t0
    rec = {"impl": "deltaprop", "procs": comm.size, "steps": steps, "step_ms": 1e3 * elapsed / steps,
           "samples_per_s": steps * args.batch / elapsed, "backward_ms": 1e3 * statistics.median(t_bwd)}
    if par.reducer is not None:
        buckets = [b.nbytes for b in par.reducer.buckets]
        bufs = [np.ones(b.size, dtype=b.dtype) for b in par.reducer.buckets]
        comm.barrier()
        t_ar = []
        for _ in range(max(20, steps)):
            t0 = time.perf_counter()
            for b in bufs:
                comm.allreduce_sum(b)
            t_ar.append(time.perf_counter() - t0)
        last = []
        for _ in range(20):
            t0 = time.perf_counter()
            comm.allreduce_sum(bufs[-1])
            last.append(time.perf_counter() - t0)
        ar, wait = statistics.median(t_ar), statistics.median(waits)
        rec.update({"bucket_bytes": buckets, "gradient_bytes": sum(buckets), "allreduce_ms": 1e3 * ar,
                    "last_bucket_allreduce_ms": 1e3 * statistics.median(last), "wait_ms": 1e3 * wait,
                    "hidden_fraction": max(0.0, 1.0 - wait / ar) if ar > 0 else None,
                    "overlap_window_ms": 1e3 * statistics.median(windows)})
    return rec


def worker_torch(args) -> dict:
    import torch
    import torch.distributed as tdist
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = {"mlp": lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                                 torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)),
              "lenet": lambda: torch.nn.Sequential(
                  torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                  torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                  torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
                  torch.nn.Linear(84, 10))}
    model = layers[args.model]()
    if size > 1:
        tdist.init_process_group("gloo", rank=rank, world_size=size)
        model = torch.nn.parallel.DistributedDataParallel(model)
    X, y = _data(args.batch * 16)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    per = args.batch // size
    nb = len(X) // args.batch

    def run(n: int) -> int:
        steps = 0
        while steps < n:
            s = (steps % nb) * args.batch + rank * per
            opt.zero_grad()
            lossf(model(X[s:s + per]), y[s:s + per]).backward()
            opt.step()
            steps += 1
        return steps
    run(WARMUP_STEPS)
    t0 = time.perf_counter()
    run(WARMUP_STEPS)

    def bcast(a):
        if size > 1:
            t = torch.from_numpy(a)
            tdist.broadcast(t, 0)
        return a
    n = _agreed_steps(bcast, (time.perf_counter() - t0) / WARMUP_STEPS, args.seconds)
    if size > 1:
        tdist.barrier()
    t0 = time.perf_counter()
    steps = run(n)
    elapsed = time.perf_counter() - t0
    if size > 1:
        tdist.destroy_process_group()
    return {"impl": "torch-ddp-gloo", "procs": size, "steps": steps, "step_ms": 1e3 * elapsed / steps,
            "samples_per_s": steps * args.batch / elapsed}


def _agreed_steps(broadcast, step_s: float, seconds: float) -> int:
    """Steps to time, from rank 0's warm-up: every rank must run the same number (collectives)."""
    import numpy as np
    n = np.array([max(10.0, seconds / max(step_s, 1e-6))], dtype=np.float64)
    broadcast(n)
    return int(n[0])


# --- the cost model --------------------------------------------------------------------------------

def ring_allreduce_s(nbytes: float, p: int, bandwidth: float, alpha: float) -> float:
    """2(p − 1) steps, each a latency α and a 1/p-th of the buffer each way: 2(p − 1)·α + 2(p − 1)/p·S/B."""
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / bandwidth


def scaling_table(two: dict) -> list:
    """Efficiency at 8, 64, 512 ranks on each network, from the 2-process run's step, buckets and overlap."""
    step = two["step_ms"] / 1e3 - two.get("wait_ms", 0.0) / 1e3          # compute of one step, comm excluded
    window = two.get("overlap_window_ms", 0.0) / 1e3
    rows = []
    for net, (bw, alpha) in NETWORKS.items():
        for p in RANKS:
            per = [ring_allreduce_s(b, p, bw, alpha) for b in two["bucket_bytes"]]
            total = sum(per)
            exposed = max(total - window, per[-1])
            rows.append({"network": net, "ranks": p, "allreduce_ms": round(1e3 * total, 3),
                         "exposed_ms": round(1e3 * exposed, 3), "compute_ms": round(1e3 * step, 3),
                         "efficiency": round(step / (step + exposed), 4)})
    return rows


def below_90(rows: list) -> dict:
    out = {}
    for net in NETWORKS:
        low = [r["ranks"] for r in rows if r["network"] == net and r["efficiency"] < 0.9]
        out[net] = (f"below 90% from {min(low)} ranks" if low else f"at least 90% up to {max(RANKS)} ranks")
    return out


# --- the driver --------------------------------------------------------------------------------------

def _launch(impl: str, procs: int, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=str(ROOT),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    cmd = [sys.executable, __file__, "--worker", impl, "--model", args.model, "--batch", str(args.batch),
           "--seconds", str(args.seconds)]
    if procs > 1:
        cmd = ["mpirun", "-n", str(procs), "--oversubscribe", "--bind-to", "none"] + \
              sum((["-x", k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "NUMBA_NUM_THREADS", "PYTHONPATH",
                                       "MASTER_ADDR", "MASTER_PORT")), []) + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise SystemExit(f"{impl} with {procs} process(es) failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(lines[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["mlp", "lenet"], default="mlp")
    ap.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed.jsonl"))
    ap.add_argument("--worker", choices=["deltaprop", "torch"])
    args = ap.parse_args()
    if args.worker:
        rec = (worker_deltaprop if args.worker == "deltaprop" else worker_torch)(args)
        if int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == 0:
            rec.update({"model": args.model, "global_batch": args.batch, "blas": blas_info()})
            print(json.dumps(rec), flush=True)
        return
    lines = [run_header("distributed", f"data-parallel {args.model} training, global batch {args.batch}, 1 and 2 "
                                       f"MPI processes, deltaprop vs torch DDP (gloo)", args)]
    runs = [(impl, p) for impl in ("deltaprop", "torch") for p in (1, 2)]
    results = {r: [] for r in runs}
    for rnd in range(args.rounds):
        for impl, p in rotated(runs, rnd):
            rec = _launch(impl, p, args)
            rec["round"] = rnd
            results[(impl, p)].append(rec)
            print(json.dumps(rec), flush=True)
            lines.append(rec)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("samples_per_s", "step_ms", "allreduce_ms",
                                                                "wait_ms", "hidden_fraction",
                                                                "overlap_window_ms", "last_bucket_allreduce_ms")
               if all(f in r and r[f] is not None for r in v)} for k, v in results.items()}
    two = dict(med[("deltaprop", 2)], bucket_bytes=results[("deltaprop", 2)][-1]["bucket_bytes"])
    table = scaling_table(two)
    summary = {"summary": "distributed", "model": args.model, "global_batch": args.batch,
               "median": {f"{i}-{p}": m for (i, p), m in med.items()},
               "speedup_2_vs_1": {i: round(med[(i, 2)]["samples_per_s"] / med[(i, 1)]["samples_per_s"], 3)
                                  for i in ("deltaprop", "torch")},
               "ratio_deltaprop_over_torch": {p: round(med[("deltaprop", p)]["samples_per_s"]
                                                       / med[("torch", p)]["samples_per_s"], 3) for p in (1, 2)},
               "bucket_bytes": two["bucket_bytes"], "model_table": table, "efficiency_90": below_90(table),
               "cost_model": "ring allreduce per bucket 2(p-1)a + 2(p-1)/p S/B; exposed = max(T - W, T_last); "
                             "weak scaling at the 2-process per-rank batch; "
                             + ", ".join(f"{k}: a = {a * 1e6:g} us" for k, (_, a) in NETWORKS.items())}
    print(json.dumps(summary), flush=True)
    lines.append(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
