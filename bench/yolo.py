"""yolov3-tiny throughput and memory, deltaprop (NumPy path, and with numba: the ``fast`` extra) vs PyTorch CPU.

Cases (float32, the shipped ``yolov3-tiny`` cfg, 80 classes, random weights written once as a Darknet
``.weights`` file that every implementation loads):

- ``train-416`` / ``train-320``: one training step on batch 8 at 416×416 / 320×320: forward in training mode
  (batch statistics), backward from a fixed gradient of the two head outputs, SGD with momentum 0.9 and
  weight decay. The YOLO loss itself is left out on both sides (PyTorch has none; it is measured apart as
  ``deltaprop_loss_ms``: deltaprop's [yolo] deltas of a batch against 4 boxes an image);
- ``infer-416-b1``, ``infer-416-b8``, ``infer-320-b1``, ``infer-320-b8``: the forward pass in eval mode
  (running statistics, no caches), batch 1 and 8: with numba the compiled inference plan (docs/inference.md;
  ``bench/engines.py`` sets it beside ONNX Runtime, OpenVINO and OpenCV DNN).

PyTorch runs the same architecture written below with ``torch.nn`` (conv-BN-leaky, Darknet's 2×2/1 max pool
padded on the right and bottom, nearest upsampling, the [yolo] logistic on x, y, objectness and classes) and
the same weights, read from the ``.weights`` file; before any timing a check process runs both at 416 on the
same images in eval mode and asserts the outputs agree (max |difference| reported). deltaprop uses its
"standard" numerics (ε = 1e-5 inside the root, biased batch variance: PyTorch's batch norm) so that the two
compute the same function; Darknet's own numerics cost the same.

Every measurement is its own subprocess; implementations are interleaved and their order rotates every round;
medians over ``--rounds`` and ratios ``deltaprop / torch`` (of the medians, and ``paired_ratio``: the median
of the per-round ratios). The deltaprop runs are made with each library of ``--blas`` (``DELTAPROP_BLAS``: mkl,
numpy = NumPy's OpenBLAS), so one run gives the matrix {MKL, OpenBLAS} × {NumPy path, numba}; PyTorch uses its
own MKL/oneDNN on 2 threads (``torch.set_num_threads(2)``). Every result line carries its host record (CPU
model, BLAS, threading layer, wait policy; ``_common.host_record``) and ``others_cores``, the CPU other processes
used during the run (the machine is shared). ``peak_rss_mb`` is the worker's ``VmHWM`` (interpreter and
libraries included, as bench/cnn.py); ``step_rss_growth_mb`` what the timed loop added to it. ``--profile`` adds
a per-layer forward/backward time table of deltaprop's training step and eval forward at 416 (``--profile-size
320`` for 320; NumPy path and numba, each library).

    python3 bench/yolo.py --rounds 3                   # all cases, both libraries, ~19 min (2 cores)
    python3 bench/yolo.py --quick                      # 2 short rounds: a check that everything runs
    python3 bench/yolo.py --rounds 1 --cases infer-416-b1 train-416 --blas numpy --profile
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, add_run_options, apply_quick, blas_info, env_for as _env_for, host_record,  # noqa: E402
                     openblas_env, rotated, run_header, run_measured)

# case -> (input size, batch, training)
CASES = {"train-416": (416, 8, True), "train-320": (320, 8, True), "infer-416-b1": (416, 1, False),
         "infer-416-b8": (416, 8, False), "infer-320-b1": (320, 1, False), "infer-320-b8": (320, 8, False)}
IMPLS = ("numpy", "numba", "torch")
QUICK_CASES = ("train-416", "infer-416-b1", "infer-416-b8")   # --quick: the 416 cases only
TARGETS = {"numpy": 0.7, "numba": 1.0}          # minimum deltaprop/torch throughput ratios (issue 14)
MEMORY_TARGET = 1.0                            # maximum peak-memory ratio
CLASSES = 80
# yolov3-tiny, Darknet layer by layer: ("conv", filters, size, bn) | ("max", stride) | ("route", [i..]) |
# ("up",) | ("yolo",)
ARCH = [("conv", 16, 3, True), ("max", 2), ("conv", 32, 3, True), ("max", 2), ("conv", 64, 3, True), ("max", 2),
        ("conv", 128, 3, True), ("max", 2), ("conv", 256, 3, True), ("max", 2), ("conv", 512, 3, True), ("max", 1),
        ("conv", 1024, 3, True), ("conv", 256, 1, True), ("conv", 512, 3, True), ("conv", 255, 1, False),
        ("yolo",), ("route", [13]), ("conv", 128, 1, True), ("up",), ("route", [19, 8]), ("conv", 256, 3, True),
        ("conv", 255, 1, False), ("yolo",)]


def _status_mb(field: str) -> float:
    """``VmHWM`` (the peak resident memory) or ``VmRSS`` (now) of this process in MiB, from /proc/self/status; off
    Linux ``ru_maxrss``. Not ``ru_maxrss`` on Linux: it is kept across ``execve``, so a worker would report its
    parent's peak when the parent's was larger."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    return _status_mb("VmHWM")


def _images(size: int, batch: int, n: int = 2, seed: int = 0):
    import numpy as np
    return np.random.default_rng(seed).random((n * batch, 3, size, size), dtype=np.float32)


def _douts(size: int, batch: int, seed: int = 1):
    import numpy as np
    g = np.random.default_rng(seed)
    return [g.standard_normal((batch, 255, size // s, size // s)).astype(np.float32) * 0.01 for s in (32, 16)]


def _time_loop(step, batch: int, warmup_s: float, measure_s: float, min_steps: int = 3) -> dict:
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < warmup_s or i < 1:
        step(i)
        i += 1
    steps, t0 = 0, time.perf_counter()
    while True:
        step(i + steps)
        steps += 1
        el = time.perf_counter() - t0
        if el >= measure_s and steps >= min_steps:
            break
    return {"steps": steps, "seconds": round(el, 3), "images_per_s": steps * batch / el}


# --- deltaprop ------------------------------------------------------------------------------------

def _dp_net(weights: str, size: int):
    sys.path.insert(0, str(ROOT))
    from deltaprop import darknet
    return darknet.load("yolov3-tiny", weights, numerics="standard", width=size, height=size)


def worker_deltaprop(case: str, weights: str, warmup_s: float, measure_s: float) -> dict:
    size, batch, train = CASES[case]
    net = _dp_net(weights, size)
    from deltaprop import no_grad, tune
    tune()      # as the deltaprop command does first: the direct loops' choice, measured here on a cache miss
    from deltaprop.runtime import jit as _numba
    from deltaprop.optim import SGD
    X = _images(size, batch)
    res = {"numba_enabled": _numba.enabled()}
    if train:
        douts = _douts(size, batch)
        opt = SGD(net.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        object.__setattr__(net, "needs_input_grad", False)
        net.train()

        def step(i):
            k = i % 2
            net(X[k * batch:(k + 1) * batch])
            opt.zero_grad()
            net.backward(douts, keep_grads=False)
            opt.step()
    else:
        net.eval()

        def step(i):
            k = i % 2
            with no_grad():
                net(X[k * batch:(k + 1) * batch])
    rss0 = _rss_mb()
    res.update(_time_loop(step, batch, warmup_s, measure_s))
    import deltaprop as dp
    res.update({"rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1), "host": host_record(dp)})
    if train:
        res["deltaprop_loss_ms"] = round(_loss_ms(net, X[:batch]), 1)
    return res


def _loss_ms(net, x) -> float:
    """deltaprop's [yolo] loss (both heads' deltas) of one batch after a training forward, in ms."""
    import numpy as np
    g = np.random.default_rng(2)
    targets = [np.column_stack([g.integers(0, CLASSES, 4), g.uniform(0.2, 0.8, (4, 2)),
                                g.uniform(0.05, 0.4, (4, 2))]).astype(np.float32) for _ in range(len(x))]
    net.train()
    net(x)
    t0 = time.perf_counter()
    net.loss(targets)
    return (time.perf_counter() - t0) * 1e3


def profile_deltaprop(weights: str, size: int = 416, batch: int = 8, reps: int = 2) -> dict:
    """Per-layer milliseconds (the median of ``reps`` runs after one warm-up): forward and backward of the
    training step at batch ``batch``, and the eval-mode forward at batch 1."""
    from deltaprop import no_grad
    net = _dp_net(weights, size)
    object.__setattr__(net, "needs_input_grad", False)
    X = _images(size, batch, n=1)
    douts = _douts(size, batch)
    times = {(i, k): [] for i in range(len(net.layers)) for k in ("fwd", "bwd", "infer")}
    phase = ["fwd"]
    for i, layer in enumerate(net.layers):
        f, b = layer.forward, layer.backward

        def fwd(*a, _f=f, _i=i, **k):
            t0 = time.perf_counter()
            out = _f(*a, **k)
            times[(_i, phase[0])].append(time.perf_counter() - t0)
            return out

        def bwd(*a, _b=b, _i=i, **k):
            t0 = time.perf_counter()
            out = _b(*a, **k)
            times[(_i, "bwd")].append(time.perf_counter() - t0)
            return out
        object.__setattr__(layer, "forward", fwd)
        object.__setattr__(layer, "backward", bwd)
    net.train()
    step_ms = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        net(X)
        net.backward(douts, keep_grads=False)
        step_ms.append((time.perf_counter() - t0) * 1e3)
    net.eval()
    phase[0] = "infer"
    infer_ms = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        with no_grad():
            net(X[:1])
        infer_ms.append((time.perf_counter() - t0) * 1e3)

    def med(v):
        return round(statistics.median(v[1:]) * 1e3, 2) if len(v) > 1 else 0.0
    rows = [{"layer": i, "kind": layer.kind, "fwd_ms": med(times[(i, "fwd")]), "bwd_ms": med(times[(i, "bwd")]),
             "infer_b1_ms": med(times[(i, "infer")])} for i, layer in enumerate(net.layers)]
    return {"profile": True, "size": size, "batch": batch, "layers": rows,
            "train_step_ms": round(statistics.median(step_ms[1:]), 1),
            "infer_b1_ms": round(statistics.median(infer_ms[1:]), 1),
            "total_fwd_ms": round(sum(r["fwd_ms"] for r in rows), 1),
            "total_bwd_ms": round(sum(r["bwd_ms"] for r in rows), 1),
            "total_infer_b1_ms": round(sum(r["infer_b1_ms"] for r in rows), 1)}


# --- PyTorch --------------------------------------------------------------------------------------

def torch_model(weights: str):
    """yolov3-tiny in torch.nn with the weights of a Darknet .weights file (Darknet's layout: per conv
    layer, biases or [BN beta, gamma, mean, var], then the kernel)."""
    import numpy as np
    import torch
    nn = torch.nn
    F = torch.nn.functional
    data = Path(weights).read_bytes()
    major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
    off = 12 + (8 if major * 10 + minor >= 2 else 4)
    floats = np.frombuffer(data[off:], dtype=np.float32)

    class Yolov3Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleList()
            cin, chans = 3, []
            for spec in ARCH:
                if spec[0] == "conv":
                    _, n, k, bn = spec
                    seq = [nn.Conv2d(cin, n, k, padding=k // 2, bias=not bn)]
                    if bn:
                        seq += [nn.BatchNorm2d(n, eps=1e-5, momentum=0.01), nn.LeakyReLU(0.1)]
                    self.mods.append(nn.Sequential(*seq))
                    cin = n
                elif spec[0] == "route":
                    cin = sum(chans[j] for j in spec[1])
                    self.mods.append(nn.Identity())
                else:
                    self.mods.append(nn.Identity())
                chans.append(cin)
            self.obj_mask = torch.ones(255, dtype=torch.bool)
            for a in range(3):
                self.obj_mask[a * 85 + 2:a * 85 + 4] = False        # w, h stay linear

        def forward(self, x):
            outs, heads = [], []
            for spec, m in zip(ARCH, self.mods):
                if spec[0] == "conv":
                    x = m(x)
                elif spec[0] == "max":
                    x = F.max_pool2d(x, 2, 2) if spec[1] == 2 else \
                        F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1)
                elif spec[0] == "route":
                    x = torch.cat([outs[j] for j in spec[1]], dim=1) if len(spec[1]) > 1 else outs[spec[1][0]]
                elif spec[0] == "up":
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                else:
                    x = torch.where(self.obj_mask[None, :, None, None], torch.sigmoid(x), x)
                    heads.append(x)
                outs.append(x)
            return heads

    model = Yolov3Tiny()
    pos = 0

    def take(t):
        nonlocal pos
        n = t.numel()
        t.data.copy_(torch.from_numpy(floats[pos:pos + n].copy()).view_as(t))
        pos += n
    for spec, m in zip(ARCH, model.mods):
        if spec[0] != "conv":
            continue
        conv = m[0]
        if spec[3]:
            bnm = m[1]
            take(bnm.bias)
            take(bnm.weight)
            take(bnm.running_mean)
            take(bnm.running_var)
        else:
            take(conv.bias)
        take(conv.weight)
    if pos != floats.size:
        raise RuntimeError(f"{weights}: read {pos} floats of {floats.size}")
    return model


def worker_torch(case: str, weights: str, warmup_s: float, measure_s: float) -> dict:
    import torch
    torch.set_num_threads(2)
    size, batch, train = CASES[case]
    model = torch_model(weights)
    X = torch.from_numpy(_images(size, batch))
    if train:
        douts = [torch.from_numpy(d) for d in _douts(size, batch)]
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
        model.train()

        def step(i):
            k = i % 2
            opt.zero_grad()
            outs = model(X[k * batch:(k + 1) * batch])
            torch.autograd.backward(outs, douts)
            opt.step()
    else:
        model.eval()

        def step(i):
            k = i % 2
            with torch.no_grad():
                model(X[k * batch:(k + 1) * batch])
    rss0 = _rss_mb()
    res = _time_loop(step, batch, warmup_s, measure_s)
    res.update({"rss_before_mb": round(rss0, 1), "peak_rss_mb": round(_rss_mb(), 1),
                "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
                "host": dict(host_record(), blas="torch's MKL/oneDNN", threading_layer="torch's OpenMP")})
    return res


def check_equal(weights: str, size: int = 416, batch: int = 2) -> dict:
    """Both implementations on the same images in eval mode: the largest output difference."""
    import numpy as np
    import torch
    from deltaprop import no_grad
    net = _dp_net(weights, size)
    net.eval()
    x = _images(size, batch, n=1)
    with no_grad():
        ours = net(x)
    model = torch_model(weights).eval()
    with torch.no_grad():
        theirs = [t.numpy() for t in model(torch.from_numpy(x))]
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs)]
    scale = max(float(np.abs(b).max()) for b in theirs)
    ok = all(a.shape == b.shape for a, b in zip(ours, theirs)) and max(diffs) <= 1e-3 * max(scale, 1.0)
    return {"check": "outputs equal", "size": size, "batch": batch, "max_abs_diff": diffs,
            "max_abs_output": scale, "equal": ok}


# --- driver ---------------------------------------------------------------------------------------

def env_for(mode: str, impl: str, blas=None) -> dict:
    env = _env_for(mode)
    env["DELTAPROP_NUMBA"] = "1" if impl == "numba" else "0"
    if blas:
        env["DELTAPROP_BLAS"] = blas
    return env


def _sub(args, extra, impl="numpy", mode="as-is", blas=None) -> dict:
    """One worker subprocess; records ``others_cores`` (machine busy time minus the worker's own CPU time, per
    second of wall time: what other processes took meanwhile)."""
    cmd = [sys.executable, __file__, "--weights", args.weights, "--seconds", str(args.seconds),
           "--warmup", str(args.warmup)] + extra
    return run_measured(cmd, env_for(mode, impl, blas), f"{' '.join(extra)} ({impl}, blas {blas})")


def make_weights(path: str) -> None:
    sys.path.insert(0, str(ROOT))
    import deltaprop as dp
    from deltaprop import darknet
    from deltaprop.darknet.weights import save_weights
    dp.manual_seed(0)
    net = darknet.load("yolov3-tiny", numerics="standard")
    import numpy as np
    g = np.random.default_rng(0)
    for layer in net.layers:               # running statistics that are not the identity, so they are checked
        for name, buf in getattr(layer, "named_buffers", lambda: [])():
            if name.endswith("running_mean") or name.endswith("rolling_mean"):
                buf[...] = g.normal(0, 0.1, buf.shape)
            elif name.endswith("running_var") or name.endswith("rolling_variance"):
                buf[...] = g.uniform(0.5, 1.5, buf.shape)
    save_weights(net, path)


def summarize(results, cases, libs) -> list:
    """One summary per (library of deltaprop's products, case): medians, ratios to PyTorch, targets, memory."""
    out = []
    for lib, case in [(b, c) for b in libs for c in cases]:
        rows = [r for r in results if r["case"] == case and (r["impl"] == "torch" or r.get("blas_setting") == lib)]
        if not rows:
            continue
        med = {i: statistics.median([r["images_per_s"] for r in rows if r["impl"] == i]) for i in IMPLS
               if any(r["impl"] == i for r in rows)}
        s = {"summary": True, "blas": lib, "case": case,
             "median_images_per_s": {i: round(v, 2) for i, v in med.items()},
             "rounds": sum(1 for r in rows if r["impl"] == "torch"),
             "median_others_cores": round(statistics.median([r.get("others_cores", 0.0) for r in rows]), 3)}
        for impl in ("numpy", "numba"):
            if impl in med and "torch" in med:
                s[f"ratio_{impl}"] = round(med[impl] / med["torch"], 3)
                paired = [a["images_per_s"] / b["images_per_s"] for a in rows for b in rows
                          if a["impl"] == impl and b["impl"] == "torch" and a["round"] == b["round"]]
                s[f"paired_ratio_{impl}"] = round(statistics.median(paired), 3) if paired else None
                s[f"target_{impl}"] = TARGETS[impl]
                s[f"meets_{impl}"] = s[f"ratio_{impl}"] >= TARGETS[impl]
        peak = {i: statistics.median([r["peak_rss_mb"] for r in rows if r["impl"] == i]) for i in med}
        grow = {i: statistics.median([r["peak_rss_mb"] - r["rss_before_mb"] for r in rows if r["impl"] == i])
                for i in med}
        s["peak_rss_mb"] = {i: round(v, 1) for i, v in peak.items()}
        s["step_rss_growth_mb"] = {i: round(v, 1) for i, v in grow.items()}
        if "torch" in peak:
            s["memory_ratio"] = {i: round(peak[i] / peak["torch"], 3) for i in peak if i != "torch"}
            s["meets_memory"] = all(v <= MEMORY_TARGET for v in s["memory_ratio"].values())
        loss = [r["deltaprop_loss_ms"] for r in rows if "deltaprop_loss_ms" in r]
        if loss:
            s["deltaprop_loss_ms"] = round(statistics.median(loss), 1)
        s["host"] = {i: next((r["host"] for r in rows if r["impl"] == i and "host" in r), None) for i in med}
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=list(IMPLS) + ["check", "profile"], help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=list(CASES), default="infer-416-b1", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases (default all)")
    ap.add_argument("--impls", nargs="+", choices=list(IMPLS), default=list(IMPLS), help="implementations")
    ap.add_argument("--profile", action="store_true", help="also a per-layer profile of deltaprop's train step")
    ap.add_argument("--profile-size", type=int, choices=(416, 320), default=416,
                    help="input size of the --profile step (default 416)")
    add_run_options(ap, seconds=4.0, warmup=1.0, envs=("as-is",))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "yolo.jsonl"), help="JSON-lines output")
    args = ap.parse_args()
    if args.worker:
        if args.worker == "check":
            res = check_equal(args.weights)
        elif args.worker == "profile":
            res = profile_deltaprop(args.weights, size=args.profile_size)
        elif args.worker == "torch":
            res = worker_torch(args.case, args.weights, args.warmup, args.seconds)
        else:
            res = worker_deltaprop(args.case, args.weights, args.warmup, args.seconds)
        import numpy as np
        res.update({"impl": args.worker, "numpy": np.__version__, "blas": blas_info(),
                    "openblas_env": openblas_env()})
        if args.worker not in ("check", "profile"):
            res["case"] = args.case
        print(json.dumps(res), flush=True)
        return
    apply_quick(args)
    if args.quick:
        args.cases = [c for c in args.cases if c in QUICK_CASES] or args.cases
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = args.envs[0]
    lines = [run_header("yolo", "images/s: yolov3-tiny train b8 (forward, backward from a fixed head gradient, "
                        "SGD) and inference b1/b8 at 416 and 320; float32; deltaprop NumPy path / numba (each "
                        "library of --blas) / torch (2 threads)", args, load_avg=os.getloadavg(),
                        blas_settings=args.blas, env_mode=mode)]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args.weights = str(Path(tmp) / "yolov3-tiny-random.weights")
        make_weights(args.weights)
        for blas in args.blas:
            for impl in ("numpy", "numba"):
                chk = dict(_sub(args, ["--worker", "check"], impl, mode, blas), impl=impl, blas_setting=blas)
                print(json.dumps({k: v for k, v in chk.items() if k != "blas"}), flush=True)
                lines.append(chk)
                if not chk["equal"]:
                    raise SystemExit(f"deltaprop ({impl}, {blas}) and the torch model disagree: {chk['max_abs_diff']}")
        runs = [("torch", None)] + [(i, b) for b in args.blas for i in IMPLS if i != "torch" and i in args.impls]
        runs = [r for r in runs if r[0] in args.impls]
        results = []
        for r in range(args.rounds):
            for case in args.cases:
                for impl, blas in rotated(runs, r):
                    res = _sub(args, ["--worker", "torch" if impl == "torch" else "numpy", "--case", case], impl,
                               mode, blas)
                    res.update({"impl": impl, "round": r, "env_mode": mode, "blas_setting": blas})
                    print(json.dumps({k: v for k, v in res.items() if k not in ("blas", "host")}), flush=True)
                    results.append(res)
                    lines.append(res)
        summaries = summarize(results, args.cases, args.blas)
        for s in summaries:
            print(json.dumps(s), flush=True)
        lines += summaries
        if args.profile:
            for blas in args.blas:
                for impl in ("numpy", "numba"):
                    prof = dict(_sub(args, ["--worker", "profile", "--profile-size", str(args.profile_size)], impl,
                                     mode, blas), impl=impl, blas_setting=blas)
                    print(json.dumps({k: v for k, v in prof.items() if k != "blas"}), flush=True)
                    lines.append(prof)
    with open(out, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"\n{'blas':5s} {'case':13s} {'numpy/s':>8s} {'numba/s':>8s} {'torch/s':>8s} {'np/t':>6s} {'nb/t':>6s} "
          f"{'paired':>11s}  peak RSS np/nb/t MB (ratio np/nb)  others")
    for s in summaries:
        m = s["median_images_per_s"]
        mem = "/".join(f"{s['peak_rss_mb'].get(i, float('nan')):.0f}" for i in IMPLS)
        mr = s.get("memory_ratio", {})
        print(f"{s['blas']:5s} {s['case']:13s} {m.get('numpy', float('nan')):8.2f} {m.get('numba', float('nan')):8.2f} "
              f"{m.get('torch', float('nan')):8.2f} {s.get('ratio_numpy', float('nan')):6.2f} "
              f"{s.get('ratio_numba', float('nan')):6.2f} {s.get('paired_ratio_numpy') or float('nan'):5.2f}/"
              f"{s.get('paired_ratio_numba') or float('nan'):.2f}  {mem} ({mr.get('numpy', float('nan')):.2f}/"
              f"{mr.get('numba', float('nan')):.2f})  {s['median_others_cores']:.2f}")
    print(f"total {time.perf_counter() - t_start:.0f} s; results appended to {out}")


if __name__ == "__main__":
    main()
