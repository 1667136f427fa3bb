"""``deltaprop gradcheck``: check every layer type and loss in ``deltaprop.nn`` against centred differences.

Each class found in ``deltaprop.nn`` is built with a small case from ``CASES`` (or, for a class without
one, its default constructor on a few trial input shapes) and checked in float64 by
``deltaprop.gradcheck``: the input gradient and every parameter gradient (layers) or ∂C/∂pred (losses).
A class that cannot be built or run is listed as SKIP with the reason, never silently left out.
"""
from __future__ import annotations

import argparse
import inspect
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._options import int_range, positive_float

# name -> list of (label, factory() -> module, input shape or callable(rng) -> input[, target maker]).
# Other engineers: add your layer here when its default constructor cannot run on the trial shapes.
LayerCase = Tuple[str, Callable[[], Any], Any]
TRIAL_SHAPES = [(2, 3, 6, 6), (3, 4), (2, 3, 7), (4,)]


def _away_from_zero(shape):
    """Inputs with |x| ≥ 0.1: no ReLU/max kink within h."""
    def make(rng):
        x = rng.uniform(0.1, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
        return x
    return make


def _distinct(shape):
    """Well-separated values (no max-pool ties)."""
    def make(rng):
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) / n + 0.05).astype(np.float64)
    return make


def layer_cases(nn) -> Dict[str, List[LayerCase]]:
    c: Dict[str, List[LayerCase]] = {
        "Linear": [("4->3", lambda: nn.Linear(4, 3), (2, 4)), ("no bias", lambda: nn.Linear(3, 2, bias=False), (3, 3))],
        "ReLU": [("", lambda: nn.ReLU(), _away_from_zero((3, 5)))],
        "LeakyReLU": [("slope 0.1", lambda: nn.LeakyReLU(0.1), _away_from_zero((3, 5)))],
        "Sigmoid": [("", lambda: nn.Sigmoid(), (3, 5)), ("steepness 2", lambda: nn.Sigmoid(2.0), (3, 5))],
        "Conv2d": [("3x3 pad 1", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)),
                   ("stride 2", lambda: nn.Conv2d(2, 2, 3, stride=2), (1, 2, 7, 7))],
        "Conv1d": [("k3", lambda: nn.Conv1d(2, 3, 3), (2, 2, 7))],
        "Flatten": [("", lambda: nn.Flatten(), (2, 2, 3))],
        "Dropout": [("p 0.3", lambda: nn.Dropout(0.3), (3, 4))],
        "Upsample": [("x2", lambda: nn.Upsample(2), (1, 2, 3, 3))],
        "MaxPool2d": [("2x2", lambda: nn.MaxPool2d(2), _distinct((2, 2, 4, 4)))],
        "AvgPool2d": [("2x2", lambda: nn.AvgPool2d(2), (2, 2, 4, 4))],
        "LPPool2d": [("p 2, 2x2", lambda: nn.LPPool2d(2, 2), _away_from_zero((2, 2, 4, 4))),
                     ("p 3, 3x3 stride 1", lambda: nn.LPPool2d(3, 3, stride=1), _away_from_zero((1, 2, 4, 4)))],
        "AdaptiveAvgPool2d": [("to 2x2", lambda: nn.AdaptiveAvgPool2d(2), (2, 2, 5, 5)),
                              ("global", lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4))],
        "BatchNormAct2d": [("leaky", lambda: nn.BatchNormAct2d(2, "leaky", 0.1), (4, 2, 3, 3)),
                           ("relu", lambda: nn.BatchNormAct2d(2, "relu"), (4, 2, 3, 3))],
        "BatchNorm1d": [("", lambda: nn.BatchNorm1d(3), (5, 3))],
        "BatchNorm2d": [("", lambda: nn.BatchNorm2d(2), (4, 2, 3, 3))],
        "Sequential": [("Linear-Tanh-Linear", lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)),
                        (3, 4))],
    }
    return c


def _probs(shape):
    return lambda rng: rng.uniform(0.05, 0.95, size=shape)


def _labels(n, c):
    return lambda rng: rng.integers(0, c, size=n)


def _one_hot(n, c):
    def make(rng):
        t = np.zeros((n, c))
        t[np.arange(n), rng.integers(0, c, size=n)] = 1.0
        return t
    return make


def _softmax_pred(shape):
    def make(rng):
        z = rng.standard_normal(shape)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    return make


def _log_softmax_pred(shape):
    def make(rng):
        return np.log(_softmax_pred(shape)(rng))
    return make


# name -> (factory, pred maker, target maker)
def loss_cases(nn) -> Dict[str, Tuple[Callable[[], Any], Any, Any]]:
    return {
        "CrossEntropyLoss": (lambda: nn.CrossEntropyLoss(), (4, 5), _labels(4, 5)),
        "NLLLoss": (lambda: nn.NLLLoss(), _log_softmax_pred((4, 5)), _labels(4, 5)),
        "MSELoss": (lambda: nn.MSELoss(), (3, 4), lambda rng: rng.standard_normal((3, 4))),
        "HalfSquaredError": (lambda: nn.HalfSquaredError(), (3, 4), lambda rng: rng.standard_normal((3, 4))),
        "BCELoss": (lambda: nn.BCELoss(), _probs((3, 4)), lambda rng: (rng.random((3, 4)) > 0.5).astype(float)),
        "BCEWithLogitsLoss": (lambda: nn.BCEWithLogitsLoss(), (3, 4),
                              lambda rng: (rng.random((3, 4)) > 0.5).astype(float)),
        "ProbabilityCrossEntropyLoss": (lambda: nn.ProbabilityCrossEntropyLoss(), _softmax_pred((4, 5)),
                                        _one_hot(4, 5)),
        "MultiMarginLoss": (lambda: nn.MultiMarginLoss(), (4, 5), _labels(4, 5)),
        "MulticlassHingeLoss": (lambda: nn.MulticlassHingeLoss(), (4, 5), _labels(4, 5)),
    }


def _make(spec, rng) -> np.ndarray:
    return spec(rng) if callable(spec) else rng.standard_normal(spec)


def discover(nn) -> Tuple[List[str], List[str]]:
    """(layer class names, loss class names) exported by ``deltaprop.nn``."""
    layers, losses = [], []
    for name, obj in sorted(vars(nn).items()):
        if not isinstance(obj, type) or name.startswith("_"):
            continue
        if issubclass(obj, nn.Module):
            if obj is nn.Module:
                continue
            (losses if name.endswith("Loss") or name == "HalfSquaredError" or "loss" in obj.__module__.rsplit(".", 1)[-1]
             else layers).append(name)
        elif name == "L2Penalty":
            losses.append(name)
    return layers, losses


Row = Dict[str, Any]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _why(e: Exception) -> str:
    text = _ANSI.sub("", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:120]


def _check_layer(name: str, label: str, factory, xspec, rng, tol: float) -> Row:
    from ..gradcheck import check_module
    try:
        m = factory()
        m.double()
        x = _make(xspec, rng)
        res = check_module(m, x)
    except Exception as e:  # the row says why
        return {"name": name, "case": label, "status": "ERROR", "error": None, "tensors": 0,
                "note": _why(e)}
    return {"name": name, "case": label, "status": "PASS" if res.ok(tol) else "FAIL", "error": res.max_error,
            "tensors": len(res.errors), "note": "" if res.ok(tol) else str(res)[:120]}


def _generic_layer(name: str, cls, rng, tol: float) -> Row:
    try:
        sig = inspect.signature(cls.__init__)
        required = [p for p in list(sig.parameters.values())[1:]
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):
        required = []
    if required:
        return {"name": name, "case": "", "status": "SKIP", "error": None, "tensors": 0,
                "note": f"no case in deltaprop.commands.gradcheck and the constructor needs "
                        f"{', '.join(p.name for p in required)}"}
    from ..backend import enable_grad
    for shape in TRIAL_SHAPES:
        try:
            m = cls().double()
            with enable_grad():
                m(rng.standard_normal(shape))
        except Exception:
            continue
        return _check_layer(name, f"default {shape}", cls, shape, rng, tol)
    return {"name": name, "case": "", "status": "SKIP", "error": None, "tensors": 0,
            "note": f"default constructor runs on none of the trial shapes {TRIAL_SHAPES}"}


def _check_loss(name: str, factory, pspec, tspec, rng, tol: float) -> Row:
    from ..gradcheck import check_loss
    try:
        loss = factory()
        pred, target = _make(pspec, rng), _make(tspec, rng)
        res = check_loss(loss, pred, target)
    except Exception as e:
        return {"name": name, "case": "", "status": "ERROR", "error": None, "tensors": 0,
                "note": _why(e)}
    return {"name": name, "case": "", "status": "PASS" if res.ok(tol) else "FAIL", "error": res.max_error,
            "tensors": len(res.errors), "note": ""}


def _check_l2(nn, rng, tol: float) -> Row:
    from ..gradcheck import check_function
    try:
        pen = nn.L2Penalty(0.3)
        w = rng.standard_normal((3, 4))

        def f(a):
            return pen([nn.Parameter(a)])

        def g(a):
            p = nn.Parameter(a.copy())
            pen([p])
            pen.backward()
            return [p.grad]
        res = check_function(f, g, [w], names=["W"])
    except Exception as e:
        return {"name": "L2Penalty", "case": "", "status": "ERROR", "error": None, "tensors": 0,
                "note": _why(e)}
    return {"name": "L2Penalty", "case": "", "status": "PASS" if res.ok(tol) else "FAIL",
            "error": res.max_error, "tensors": 1, "note": ""}


def run_all(only: Optional[List[str]] = None, tol: float = 1e-6, seed: int = 0) -> List[Row]:
    """Check every layer and loss class of ``deltaprop.nn`` (or those in ``only``); one row per case."""
    from .. import nn
    rng = np.random.default_rng(seed)
    layers, losses = discover(nn)
    lcases, xcases = layer_cases(nn), loss_cases(nn)
    rows: List[Row] = []
    for name in layers:
        if only and name not in only:
            continue
        if name in lcases:
            for label, factory, xspec in lcases[name]:
                rows.append(_check_layer(name, label, factory, xspec, rng, tol))
        elif name == "Graph":
            rows.append({"name": name, "case": "", "status": "SKIP", "error": None, "tensors": 0,
                         "note": "a container: checked through the networks built with it (tests)"})
        else:
            rows.append(_generic_layer(name, getattr(nn, name), rng, tol))
    for name in losses:
        if only and name not in only:
            continue
        if name == "L2Penalty":
            rows.append(_check_l2(nn, rng, tol))
        elif name in xcases:
            rows.append(_check_loss(name, *xcases[name], rng=rng, tol=tol))
        else:
            rows.append({"name": name, "case": "", "status": "SKIP", "error": None, "tensors": 0,
                         "note": "no case in deltaprop.commands.gradcheck.loss_cases"})
    return rows


def format_table(rows: List[Row], tol: float) -> str:
    w = max([len(r["name"] + (f" [{r['case']}]" if r["case"] else "")) for r in rows] + [10])
    out = [f"{'layer / loss':<{w}}  {'tensors':>7}  {'max rel error':>13}  status", "-" * (w + 34)]
    for r in rows:
        name = r["name"] + (f" [{r['case']}]" if r["case"] else "")
        err = f"{r['error']:.2e}" if r["error"] is not None else "-"
        line = f"{name:<{w}}  {r['tensors']:>7}  {err:>13}  {r['status']}"
        if r["note"]:
            line += f"  ({r['note']})"
        out.append(line)
    n = {s: sum(r["status"] == s for r in rows) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    out.append("-" * (w + 34))
    out.append(f"{n['PASS']} passed, {n['FAIL']} failed, {n['ERROR']} errors, {n['SKIP']} skipped "
               f"(float64 centred differences, tolerance {tol:g})")
    return "\n".join(out)


def class_name(text: str) -> str:
    """An argparse type for --only: a layer or loss class of ``deltaprop.nn`` (argparse names the option and
    the allowed names otherwise)."""
    from .. import nn
    layers, losses = discover(nn)
    if text not in layers and text not in losses:
        raise argparse.ArgumentTypeError(f"no layer or loss class named {text!r} in deltaprop.nn; allowed: "
                                         f"{', '.join(sorted(layers + losses))}")
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "gradcheck", help="check every layer's and loss's backward pass against numerical gradients",
        description="Build every layer and loss class in deltaprop.nn on a small float64 case and compare its "
                    "analytic gradients (input and every parameter; ∂C/∂pred for losses) with centred differences. "
                    "Prints a table of relative errors ‖a − n‖/(‖a‖ + ‖n‖); exits with 1 if any check fails.")
    p.add_argument("--only", nargs="+", metavar="NAME", type=class_name,
                   help="check only these classes of deltaprop.nn (e.g. Linear Conv2d)")
    p.add_argument("--tol", type=positive_float, default=1e-6,
                   help="pass threshold of the relative error, > 0 (default 1e-6)")
    p.add_argument("--seed", type=int_range(0, 2 ** 32 - 1), default=0,
                   help="seed of the random inputs, 0..2^32-1 (default 0)")
    return p


def run(args) -> int:
    t0 = time.perf_counter()
    rows = run_all(args.only, args.tol, args.seed)
    print(format_table(rows, args.tol))
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 1 if any(r["status"] in ("FAIL", "ERROR") for r in rows) else 0
