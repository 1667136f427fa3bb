"""Where yolov3-tiny's evaluation forward spends its time, layer by layer: the layers one by one (the reference
program, what ``net(x)`` did before the plan) and the compiled plan (docs/inference.md).

For the layers one by one, each [convolutional] layer's time is split into its parts, each timed alone on the
layer's own arrays in the same process: the im2col columns (``functional.im2col.im2col`` through its variants),
the product (``dispatch.matmul`` of the layer's weights and those columns, or the direct loops where they serve
the layer), and the epilogue (the batch norm folded into a scale and shift with the activation,
``conv_bn.affine_act_``); pooling, route and upsample layers are timed whole; "overhead" is the forward's time
minus the sum of its layers' (Python between layers, the graph's bookkeeping). For the plan, each operation
(a convolution with everything fused into it, a pooling it could not fuse, ...) is timed whole.

Timing: one process, the variants' order alternating round by round (``--rounds``), the median of each item;
``others_cores`` the CPU other processes used meanwhile (the machine may be shared).

    python3 bench/infer_profile.py --size 416 --batch 1 --blas numpy      # prints a table, appends JSON lines
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cpu_jiffies, host_record  # noqa: E402

VARIANT = "eval_program/compiled plan"


def _timed(fn, reps: int) -> float:
    """The median seconds of ``reps`` calls of fn() after one warm-up."""
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def layer_parts(net, x, reps: int) -> list:
    """Per layer of the layer-by-layer forward: kind, total and (convolutions) im2col, product, epilogue (ms)."""
    import numpy as np
    from deltaprop import dispatch, no_grad
    from deltaprop.functional import conv as C
    from deltaprop.functional.conv_bn import affine_act_, bn_scale_shift
    from deltaprop.functional.im2col import conv_geometry, im2col
    outs, rows = [], []
    with no_grad():
        dispatch.set_enabled(False, VARIANT)
        try:
            net(x)
            outs = list(net.layer_outputs)
        finally:
            dispatch.set_enabled(True, VARIANT)
    for i, layer in enumerate(net.layers):
        ins = [x if j < 0 else outs[j] for j in net.node_inputs(i)]
        arg = ins if getattr(layer, "multi_input", False) else ins[0]
        with no_grad():
            total = _timed(lambda: layer.forward(arg), reps)
        row = {"layer": i, "kind": layer.kind, "total_ms": total * 1e3}
        if layer.kind == "convolutional":
            xi = ins[0]
            w = layer.weight.data
            g = conv_geometry(xi.shape, w.shape, layer.stride, layer.padding, 1, layer.groups)
            cols = im2col(xi, g)
            w2 = np.ascontiguousarray(w.reshape(w.shape[0], -1))
            z = np.empty((w.shape[0], cols.shape[1]), w.dtype)
            row["im2col_ms"] = _timed(lambda: im2col(xi, g), reps) * 1e3
            row["product_ms"] = _timed(lambda: dispatch.matmul(w2, cols, out=z), reps) * 1e3
            row["conv_ms"] = _timed(lambda: C.conv2d_forward(xi, w, None, stride=layer.stride,
                                                             padding=layer.padding, keep_cols=False), reps) * 1e3
            zz = outs[i].copy()
            if layer.bn is not None:
                eps, outside = layer.bn.eval_eps()
                sc, sh = bn_scale_shift(layer.bn.weight.data, layer.bn.bias.data, layer.bn.running_mean,
                                        layer.bn.running_var, eps, eps_outside_root=outside, dtype=w.dtype)
            else:
                sc, sh = np.ones(w.shape[0], w.dtype), np.zeros(w.shape[0], w.dtype)
            row["epilogue_ms"] = _timed(lambda: affine_act_(zz, sc, sh, layer.activation, 0.1), reps) * 1e3
        rows.append(row)
    return rows


def plan_ops(net, x, reps: int) -> list:
    """Per operation of the compiled plan: its step, what it runs (ms)."""
    from deltaprop import no_grad
    from deltaprop.darknet import eval_program
    from deltaprop.fast import cblas, inference_plan
    with no_grad():
        net(x)
    plan = inference_plan.compiled(eval_program.current_program(net))
    outs = [None] * len(plan._ops)
    with cblas.one_thread():
        for i, (s, op) in enumerate(zip(plan.program.steps, plan._ops)):
            outs[i] = op([x if j < 0 else outs[j] for j in s.srcs])
    rows = []
    for i, (s, op) in enumerate(zip(plan.program.steps, plan._ops)):
        xs = [x if j < 0 else outs[j] for j in s.srcs]
        with cblas.one_thread():
            t = _timed(lambda: op(xs), reps)
        c = plan.convs.get(i)
        what = type(s).__name__
        if c is not None:
            what = c.kind + ("-blocks" if c.kind == "winograd" and plan._blocked(c, x.shape[0]) else "") + \
                (" +pool" if c.pool is not None else "")
        elif i in plan.fused_pools:
            what = "pool (in its convolution)"
        rows.append({"layer": i, "kind": net.layers[i].kind, "runs": what, "total_ms": t * 1e3})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15, help="timed calls per item (default 15)")
    ap.add_argument("--blas", choices=("mkl", "numpy"), help="DELTAPROP_BLAS (default: as set)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "infer_profile.jsonl"))
    args = ap.parse_args()
    if args.blas:
        os.environ["DELTAPROP_BLAS"] = args.blas
    import numpy as np
    import deltaprop as dp
    from deltaprop import darknet, dispatch, no_grad
    dp.tune()
    sys.path.insert(0, str(ROOT / "bench"))
    import yolo
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "w.weights")
        yolo.make_weights(weights)
        net = darknet.load("yolov3-tiny", weights, numerics="standard", width=args.size, height=args.size)
    net.eval()
    x = np.random.default_rng(0).random((args.batch, 3, args.size, args.size), dtype=np.float32)
    j0, t0 = cpu_jiffies(), time.perf_counter()
    r0 = os.times()

    def whole(plan_on: bool):
        def run():
            with no_grad():
                net(x)
        dispatch.set_enabled(plan_on, VARIANT)
        try:
            return _timed(run, args.reps) * 1e3
        finally:
            dispatch.set_enabled(True, VARIANT)
    layers_ms, plan_ms = [], []
    for r in range(3):                      # the two forwards alternating
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            (plan_ms if on else layers_ms).append(whole(on))
    layers = layer_parts(net, x, args.reps)
    ops = plan_ops(net, x, args.reps)
    wall = time.perf_counter() - t0
    j1, r1 = cpu_jiffies(), os.times()
    others = None
    if j0 and j1:
        busy = (j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK")
        own = (r1.user - r0.user) + (r1.system - r0.system)
        others = round(max(busy - own, 0.0) / wall, 3)
    fwd_layers, fwd_plan = statistics.median(layers_ms), statistics.median(plan_ms)
    rec = {"bench": "infer_profile", "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "size": args.size,
           "batch": args.batch, "blas": dp.blas.info()["backend"], "forward_layers_ms": round(fwd_layers, 2),
           "forward_plan_ms": round(fwd_plan, 2), "layers": [{k: (round(v, 3) if isinstance(v, float) else v)
                                                              for k, v in r.items()} for r in layers],
           "plan": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in ops],
           "overhead_layers_ms": round(fwd_layers - sum(r["total_ms"] for r in layers), 2),
           "overhead_plan_ms": round(fwd_plan - sum(r["total_ms"] for r in ops), 2),
           "others_cores": others, "host": host_record(dp)}
    with open(args.out, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"yolov3-tiny {args.size} batch {args.batch}, {rec['blas']}: layer by layer {fwd_layers:.1f} ms, "
          f"plan {fwd_plan:.1f} ms (others {others} cores)")
    print(f"{'layer':>5} {'kind':13s} {'total':>7} {'im2col':>7} {'product':>8} {'epilog':>7} | {'plan runs':26s} "
          f"{'ms':>7}")
    for a, b in zip(layers, ops):
        parts = "".join(f" {a[k]:7.2f}" if k in a else "        " for k in ("im2col_ms", "product_ms", "epilogue_ms"))
        print(f"{a['layer']:5d} {a['kind']:13s} {a['total_ms']:7.2f}{parts}  | {b['runs']:26s} {b['total_ms']:7.2f}")
    print(f"overhead (forward − Σ layers): layer by layer {rec['overhead_layers_ms']:.2f} ms, "
          f"plan {rec['overhead_plan_ms']:.2f} ms")


if __name__ == "__main__":
    main()
