"""What the benchmark scripts share: the repository root, the OPENBLAS environments each run is measured
under, the BLAS record every result line carries, and how a worker subprocess is run and its contention
recorded."""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # the benches run from a clone without an install, too
    sys.path.insert(0, str(ROOT))

from deltaprop.runtime.machine import cpu_model  # noqa: E402  one reader of /proc/cpuinfo for the engine and the benches
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ENV_MODES = ("as-is", "unset", "haswell")
BLAS_CHOICES = ("mkl", "numpy")        # DELTAPROP_BLAS of the deltaprop workers: the matrix {MKL, OpenBLAS}
# issue 17's targets, deltaprop (numba on) / PyTorch, on either library
ISSUE17_TARGETS = {"mlp": 1.2, "lenet-train": 0.8, "convbn-train": 0.8, "lenet-infer": 0.8}


def blas_info() -> list:
    """The BLAS/OpenMP libraries loaded in this process (threadpoolctl): API, library, version, kernel, threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    return [{k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                                   "num_threads", "threading_layer")} for d in threadpool_info()]




def cpu_jiffies():
    """(busy, total) CPU jiffies of the whole machine from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(u) for u in f.readline().split()[1:9]]
    except OSError:
        return None
    return sum(v) - v[3] - v[4], sum(v)


def run_measured(cmd: list, env: dict, what: str, timeout: float = 1800) -> dict:
    """Run one worker subprocess and return the JSON of its last output line, with ``others_cores``: the machine's
    busy time minus the worker's own CPU time, per second of wall time (what other processes took meanwhile: the
    machine may be shared). A failed worker raises, naming ``what``, with the end of its stderr."""
    j0, r0, t0 = cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    j1, r1, wall = cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if j0 is not None and j1 is not None:
        busy = (j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK")
        own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        res["others_cores"] = round(max(busy - own, 0.0) / wall, 3)
    return res


def host_record(dp=None) -> dict:
    """What a result line was measured on: CPU model, the BLAS of the products, the threading layer and the wait
    policy (deltaprop's own record when ``dp`` is the imported package; the OpenMP variables otherwise)."""
    rec = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count(), "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                                           "OMP_NUM_THREADS")}}
    if dp is not None:
        info = dp.blas.info()
        t = info.get("threads", {})
        rec.update({"blas": info["backend"], "blas_setting": info["setting"], "mkl_threading": info["mkl_threading"],
                    "threading_layer": t.get("numba_layer", "none (numba off)"), "thread_design": t.get("design"),
                    "wait_policy": t.get("wait_policy")})
    return rec


def openblas_env() -> dict:
    """The OPENBLAS variables of this process."""
    return {k: os.environ.get(k) for k in OPENBLAS_VARS}


def env_for(mode: str) -> dict:
    """A copy of the environment under ``mode``: "as-is" (the machine's OPENBLAS variables), "unset" (removed,
    as on a user's machine) or "haswell" (``OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512``, the AVX2 guard)."""
    env = dict(os.environ)
    if mode == "unset":
        for k in OPENBLAS_VARS:
            env.pop(k, None)
    elif mode == "haswell":
        env.update({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"})
    elif mode != "as-is":
        raise ValueError(f"unknown OPENBLAS environment {mode!r} (expected one of {ENV_MODES})")
    return env


def run_header(bench: str, what: str, args, **extra) -> dict:
    """The first JSON line of a benchmark run (printed here): what was measured, when, on what machine, with
    the machine's OPENBLAS variables, the rounds and seconds per run, and ``extra``."""
    header = {"bench": bench, "what": what, "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "machine_openblas_env": openblas_env(), "rounds": args.rounds, "seconds": args.seconds, **extra}
    print(json.dumps(header), flush=True)
    return header


def rotated(items, r: int) -> list:
    """``items`` starting at position r (mod their count): who runs first moves round by round."""
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


def add_run_options(ap, seconds: float, warmup: float, envs) -> None:
    """The options every benchmark has: interleaved rounds, seconds measured and warmed up per run, the
    OPENBLAS environments to run under, the libraries of deltaprop's products, and ``--quick``."""
    ap.add_argument("--blas", nargs="+", default=list(BLAS_CHOICES), choices=list(BLAS_CHOICES),
                    help="DELTAPROP_BLAS of the deltaprop runs (default: mkl numpy, the matrix with numba on/off)")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, 1 s per run, one environment (unset): a check that everything runs, ~2-4 min")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--seconds", type=float, default=seconds, help=f"measured seconds per run (default {seconds})")
    ap.add_argument("--warmup", type=float, default=warmup, help=f"warm-up seconds per run (default {warmup})")
    ap.add_argument("--envs", nargs="+", default=list(envs), choices=list(ENV_MODES),
                    help=f"OPENBLAS environments (default {' '.join(envs)})")


def apply_quick(args) -> None:
    """``--quick``: fewer, shorter rounds under one environment."""
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.envs = 2, 1.0, min(args.warmup, 0.4), ["unset"]
