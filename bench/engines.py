"""yolov3-tiny inference: deltaprop against ONNX Runtime, OpenVINO, OpenCV DNN and PyTorch, same weights.

One random Darknet ``.weights`` file (``bench/yolo.make_weights``: the shipped ``yolov3-tiny`` cfg, 80 classes,
running statistics that are not the identity) is what every engine runs:

- ``deltaprop``: ``darknet.load(cfg, weights, numerics="standard")``, eval mode under ``no_grad``: the compiled
  inference plan (the numba path; each library of ``--blas``: ``DELTAPROP_BLAS=mkl`` and ``numpy`` = NumPy's
  OpenBLAS); ``deltaprop-layers``: the same with the plan switched off (the layers one by one, as before it);
- ``torch``: the ``torch.nn`` twin of ``bench/yolo.py`` (eager, ``torch.set_num_threads(2)``);
- ``ort``: ONNX Runtime on the ONNX export of that twin (``torch.onnx.export(..., dynamo=False, opset_version=13)``,
  one file per input shape), ``intra_op_num_threads=2``, ``inter_op_num_threads=1``, all graph optimisations;
- ``openvino``: OpenVINO's CPU plugin on the same ONNX file, ``INFERENCE_NUM_THREADS=2``, ``PERFORMANCE_HINT``
  LATENCY, ``INFERENCE_PRECISION_HINT`` f32 (on a CPU with AVX-512 BF16 its default would be bf16: another
  function);
- ``opencv``: OpenCV DNN reading the cfg and the ``.weights`` itself (``cv2.dnn.readNetFromDarknet``),
  ``cv2.setNumThreads(2)``, forward to its two ``yolo`` outputs.

Before any timing every engine runs the same two images at 416 and writes its two head outputs (the [yolo]
logistic applied to x, y, objectness and classes; OpenCV's raw ``conv_15``/``conv_22`` outputs get the same
logistic here); each must equal PyTorch's within 1e-3 of the outputs' scale, else the run stops.

Timing: every (engine, case) is its own subprocess; the order of the engines rotates every round; each run warms
up, then counts forwards for ``--seconds``. Reported: milliseconds per image (median over rounds), the ratios
``their ms / deltaprop's ms`` (deltaprop's speed over theirs: > 1 means deltaprop is faster) as the ratio of the
medians and as the median of the per-round ratios, and the memory: ``peak_rss_mb`` (the worker's ``VmHWM``:
interpreter, libraries, model and buffers) and ``inference_mb`` (the peak minus the RSS when the worker starts,
with Python, NumPy and the bench modules loaded: the engine's libraries, its model and everything inference
holds). ``others_cores``: the CPU other processes used during the run (the machine may be shared).

    python3 bench/engines.py --rounds 3                               # every engine, case and library
    python3 bench/engines.py --rounds 1 --cases infer-416-b1 --engines ort deltaprop --blas numpy
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, blas_info, host_record, rotated, run_header, run_measured  # noqa: E402
import yolo  # noqa: E402  the weights, the PyTorch twin, the images and the timing loop of bench/yolo.py

CASES = {k: v for k, v in yolo.CASES.items() if not v[2]}          # the inference cases: (size, batch, False)
ENGINES = ("deltaprop", "deltaprop-layers", "torch", "ort", "openvino", "opencv")
THREADS = 2
HEADS = ("conv_15", "conv_22")           # OpenCV's names of the layers before the two [yolo] layers
TARGETS = {("ort", 1): 1.0, ("torch", 1): 1.5, ("openvino", 8): 1.0}   # issue 27: deltaprop speed / theirs
CHECK = (416, 2)                         # size and batch of the equality check


def _rss_mb() -> float:
    return yolo._status_mb("VmHWM")


def _current_rss_mb() -> float:
    return yolo._status_mb("VmRSS")


def _logistic_heads(heads):
    """The [yolo] logistic of the raw head outputs (x, y, objectness and classes; w and h stay linear)."""
    import numpy as np
    out = []
    for z in heads:
        z = np.array(z, dtype=np.float32)
        n, c, h, w = z.shape
        zz = z.reshape(n, 3, c // 3, h, w)
        keep = zz[:, :, 2:4].copy()
        zz[...] = 1.0 / (1.0 + np.exp(-zz))
        zz[:, :, 2:4] = keep
        out.append(zz.reshape(n, c, h, w))
    return out


def onnx_path(tmp: str, size: int, batch: int) -> str:
    return str(Path(tmp) / f"yolov3-tiny-{size}-b{batch}.onnx")


def export_onnx(weights: str, path: str, size: int, batch: int) -> None:
    """The PyTorch twin exported to ONNX (TorchScript exporter, opset 13) for one input shape."""
    import torch
    model = yolo.torch_model(weights).eval()
    x = torch.zeros(batch, 3, size, size)
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=13, input_names=["x"],
                      output_names=["y16", "y23"])


# --- engines: each returns run(x) -> list of the two head outputs ------------------------------------------

def _engine_deltaprop(weights: str, tmp: str, size: int, batch: int, plan: bool = True):
    from deltaprop import darknet, dispatch, no_grad, tune
    tune()
    if not plan:
        dispatch.set_enabled(False, "eval_program/compiled plan")
    net = darknet.load("yolov3-tiny", weights, numerics="standard", width=size, height=size)
    net.eval()

    def run(x):
        with no_grad():
            return net(x)
    return run


def _engine_torch(weights: str, tmp: str, size: int, batch: int):
    import torch
    torch.set_num_threads(THREADS)
    model = yolo.torch_model(weights).eval()

    def run(x):
        with torch.no_grad():
            return [t.numpy() for t in model(torch.from_numpy(x))]
    return run


def _engine_ort(weights: str, tmp: str, size: int, batch: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path(tmp, size, batch), so, providers=["CPUExecutionProvider"])

    def run(x):
        return sess.run(None, {"x": x})
    return run


def _engine_openvino(weights: str, tmp: str, size: int, batch: int):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(onnx_path(tmp, size, batch), "CPU",
                                  {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY",
                                   "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    outs = compiled.outputs

    def run(x):
        r = req.infer({0: x})
        return [r[o] for o in outs]
    return run


def _engine_opencv(weights: str, tmp: str, size: int, batch: int, raw: bool = False):
    import cv2
    cv2.setNumThreads(THREADS)
    cfg = str(Path(tmp) / f"yolov3-tiny-{size}.cfg")
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    names = list(HEADS) if raw else list(net.getUnconnectedOutLayersNames())

    def run(x):
        net.setInput(x)
        return net.forward(names)
    return run


def _engine_deltaprop_layers(weights: str, tmp: str, size: int, batch: int):
    return _engine_deltaprop(weights, tmp, size, batch, plan=False)


ENGINE_BUILDERS = {"deltaprop": _engine_deltaprop, "deltaprop-layers": _engine_deltaprop_layers,
                   "torch": _engine_torch, "ort": _engine_ort,
                   "openvino": _engine_openvino, "opencv": _engine_opencv}


def write_cfg(tmp: str, size: int) -> None:
    """The shipped yolov3-tiny cfg with [net]'s width and height set to ``size`` (OpenCV takes the input size from
    the cfg)."""
    text = (ROOT / "deltaprop" / "cfg" / "yolov3-tiny.cfg").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={size}" if key in ("width", "height") else line)
    (Path(tmp) / f"yolov3-tiny-{size}.cfg").write_text("\n".join(lines) + "\n")


def worker_check(engine: str, weights: str, tmp: str) -> dict:
    """The engine's heads on the check images, saved for the driver to compare."""
    import numpy as np
    size, batch = CHECK
    x = yolo._images(size, batch, n=1)
    if engine == "opencv":
        heads = _logistic_heads(_engine_opencv(weights, tmp, size, batch, raw=True)(x))
    else:
        heads = [np.asarray(h) for h in ENGINE_BUILDERS[engine](weights, tmp, size, batch)(x)]
    path = str(Path(tmp) / f"check-{engine}.npz")
    np.savez(path, *heads)
    return {"check": engine, "shapes": [list(h.shape) for h in heads], "file": path}


def worker_time(engine: str, case: str, weights: str, tmp: str, warmup_s: float, measure_s: float) -> dict:
    size, batch, _ = CASES[case]
    rss_start = _current_rss_mb()
    run = ENGINE_BUILDERS[engine](weights, tmp, size, batch)
    rss_model = _current_rss_mb()
    X = yolo._images(size, batch)

    def step(i):
        k = i % 2
        run(X[k * batch:(k + 1) * batch])
    res = yolo._time_loop(step, batch, warmup_s, measure_s)
    res["ms_per_image"] = 1e3 / res["images_per_s"]
    res.update({"rss_start_mb": round(rss_start, 1), "rss_model_mb": round(rss_model, 1),
                "peak_rss_mb": round(_rss_mb(), 1), "inference_mb": round(_rss_mb() - rss_start, 1)})
    if engine.startswith("deltaprop"):
        import deltaprop as dp
        res["host"] = host_record(dp)
    else:
        res["host"] = host_record()
        res["version"] = _version(engine)
    return res


def _version(engine: str) -> str:
    import importlib
    mod = {"torch": "torch", "ort": "onnxruntime", "openvino": "openvino", "opencv": "cv2"}[engine]
    return importlib.import_module(mod).__version__


# --- driver --------------------------------------------------------------------------------------------------

def _env(engine: str, blas) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if engine.startswith("deltaprop"):
        env["DELTAPROP_NUMBA"] = "1"
        if blas:
            env["DELTAPROP_BLAS"] = blas
    return env


def _sub(args, extra, engine, blas=None) -> dict:
    cmd = [sys.executable, __file__, "--weights", args.weights, "--tmp", args.tmp, "--seconds", str(args.seconds),
           "--warmup", str(args.warmup), "--engine", engine] + extra
    return run_measured(cmd, _env(engine, blas), f"{engine} {' '.join(extra)} (blas {blas})")


def check_all(args, runs) -> list:
    """Every engine's heads on the same images against PyTorch's."""
    import numpy as np
    files = {}
    lines = []
    for engine, blas in runs:
        res = _sub(args, ["--worker", "check"], engine, blas)
        files[(engine, blas)] = res["file"]
    ref = np.load(files[("torch", None)])
    ref = [ref[k] for k in sorted(ref.files)]
    scale = max(float(np.abs(r).max()) for r in ref)
    for (engine, blas), f in files.items():
        got = np.load(f)
        got = [got[k] for k in sorted(got.files)]
        same = all(a.shape == b.shape for a, b in zip(got, ref))
        diffs = [float(np.abs(a - b).max()) if a.shape == b.shape else float("inf") for a, b in zip(got, ref)]
        ok = same and max(diffs) <= 1e-3 * max(scale, 1.0)
        lines.append({"check": "outputs equal PyTorch's", "engine": engine, "blas_setting": blas, "size": CHECK[0],
                      "batch": CHECK[1], "max_abs_diff": diffs, "max_abs_output": scale, "equal": ok})
        print(json.dumps(lines[-1]), flush=True)
        if not ok:
            raise SystemExit(f"{engine} (blas {blas}) disagrees with PyTorch: {diffs}")
    return lines


def summarize(results, cases) -> list:
    out = []
    for case in cases:
        rows = [r for r in results if r["case"] == case]
        if not rows:
            continue
        batch = CASES[case][1]
        label = {(r["engine"], r.get("blas_setting")) for r in rows}
        med = {f"{e}-{b}" if b else e: statistics.median([r["ms_per_image"] for r in rows
                                                           if (r["engine"], r.get("blas_setting")) == (e, b)])
               for e, b in sorted(label, key=lambda t: (t[0], t[1] or ""))}
        s = {"summary": True, "case": case, "median_ms_per_image": {k: round(v, 2) for k, v in med.items()},
             "rounds": max(r["round"] for r in rows) + 1,
             "median_others_cores": round(statistics.median([r.get("others_cores", 0.0) for r in rows]), 3),
             "peak_rss_mb": {}, "inference_mb": {}}
        for e, b in label:
            k = f"{e}-{b}" if b else e
            s["peak_rss_mb"][k] = round(statistics.median([r["peak_rss_mb"] for r in rows
                                                           if (r["engine"], r.get("blas_setting")) == (e, b)]), 1)
            s["inference_mb"][k] = round(statistics.median([r["inference_mb"] for r in rows
                                                            if (r["engine"], r.get("blas_setting")) == (e, b)]), 1)
        ratios, paired, meets = {}, {}, {}
        for dp_key in [k for k in med if k.startswith("deltaprop-") and not k.startswith("deltaprop-layers")]:
            blas = dp_key.split("-", 1)[1]
            for other in [k for k in med if not k.startswith("deltaprop")] + [f"deltaprop-layers-{blas}"]:
                if other not in med:
                    continue
                key = f"{dp_key}/{other}"
                ratios[key] = round(med[other] / med[dp_key], 3)
                per_round = []
                for rnd in {r["round"] for r in rows}:
                    a = [r["ms_per_image"] for r in rows if r["round"] == rnd
                         and f"{r['engine']}-{r.get('blas_setting')}" == dp_key]
                    b = [r["ms_per_image"] for r in rows if r["round"] == rnd
                         and (f"{r['engine']}-{r.get('blas_setting')}" if r.get("blas_setting") else r["engine"])
                         == other]
                    if a and b:
                        per_round.append(b[0] / a[0])
                if per_round:
                    paired[key] = round(statistics.median(per_round), 3)
                target = TARGETS.get((other, batch))
                if target is not None:
                    meets[key] = {"target": target, "meets": ratios[key] >= target}
        s.update({"speed_ratio": ratios, "paired_speed_ratio": paired, "targets": meets})
        out.append(s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=("check", "time"), help=argparse.SUPPRESS)
    ap.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=list(CASES), default="infer-416-b1", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases (default all)")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines (default all)")
    ap.add_argument("--blas", nargs="+", default=["mkl", "numpy"], choices=("mkl", "numpy"),
                    help="DELTAPROP_BLAS of the deltaprop runs (default: mkl numpy)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per run (default 1)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engines.jsonl"), help="JSON-lines output")
    args = ap.parse_args()
    if args.worker:
        if args.worker == "check":
            res = worker_check(args.engine, args.weights, args.tmp)
        else:
            res = worker_time(args.engine, args.case, args.weights, args.tmp, args.warmup, args.seconds)
            res["case"] = args.case
        res.update({"engine": args.engine, "blas": blas_info()})
        print(json.dumps(res), flush=True)
        return
    engines = list(dict.fromkeys(["torch"] + args.engines))        # PyTorch is the check's reference
    runs = [(e, b) for e in engines for b in (args.blas if e.startswith("deltaprop") else [None])]
    lines = [run_header("engines", "ms per image: yolov3-tiny inference, deltaprop (numba, each library) vs ONNX "
                        "Runtime, OpenVINO, OpenCV DNN, PyTorch; 2 threads each; float32", args,
                        load_avg=os.getloadavg(), engines=engines, blas_settings=args.blas)]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        args.weights = str(Path(tmp) / "yolov3-tiny-random.weights")
        yolo.make_weights(args.weights)
        sizes = sorted({CASES[c][0] for c in args.cases} | {CHECK[0]})
        for size in sizes:
            write_cfg(tmp, size)
        shapes = {(CASES[c][0], CASES[c][1]) for c in args.cases} | {CHECK}
        for size, batch in sorted(shapes):
            export_onnx(args.weights, onnx_path(tmp, size, batch), size, batch)
        lines += check_all(args, runs)
        timed = [r for r in runs if r[0] in args.engines]
        results = []
        for rnd in range(args.rounds):
            for case in args.cases:
                for engine, blas in rotated(timed, rnd):
                    res = _sub(args, ["--worker", "time", "--case", case], engine, blas)
                    res.update({"round": rnd, "blas_setting": blas})
                    print(json.dumps({k: v for k, v in res.items() if k not in ("blas", "host")}), flush=True)
                    results.append(res)
                    lines.append(res)
        summaries = summarize(results, args.cases)
        for s in summaries:
            print(json.dumps(s), flush=True)
        lines += summaries
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print()
    for s in summaries:
        print(f"{s['case']}  (others {s['median_others_cores']:.2f} cores)")
        for k, v in s["median_ms_per_image"].items():
            print(f"  {k:18s} {v:8.2f} ms/image  peak {s['peak_rss_mb'][k]:7.1f} MB  "
                  f"inference {s['inference_mb'][k]:7.1f} MB")
        for k, v in s["speed_ratio"].items():
            t = s["targets"].get(k)
            print(f"  {k:32s} {v:6.2f}x (paired {s['paired_speed_ratio'].get(k, float('nan')):.2f})"
                  + (f"  target {t['target']}: {'met' if t['meets'] else 'MISSED'}" if t else ""))
    print(f"total {time.perf_counter() - t_start:.0f} s; results appended to {out}")


if __name__ == "__main__":
    main()
