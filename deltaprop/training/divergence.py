"""The divergence guard: a NaN or infinite loss stops the run before the weights change, with a DivergenceError
naming the step and the first layer whose output or gradient went non-finite; optionally the weights are checked
after each update too (Darknet's trainers: an update can overflow while the loss was still finite).

Where the first non-finite value is, the task finds out (``Task.diverged``): ``diagnose_nonfinite`` re-runs one
batch layer by layer for ``nn`` models; ``first_nonfinite_layer`` reads a Darknet network's kept layer outputs.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from .. import backend
from ..errors import NonFiniteError
from .loop import Callback, Loop, StepOutput


def finite(a) -> bool:
    """Whether an array (or None, or a non-float) holds only finite values."""
    return a is None or not isinstance(a, np.ndarray) or a.dtype.kind != "f" or bool(np.isfinite(a).all())


def diagnose_nonfinite(model, loss, x: np.ndarray, y, rng_state: Optional[dict] = None) -> Dict[str, Any]:
    """Re-run one batch's forward and backward layer by layer and report where values stop being finite.

    Returns ``{"bad_params": [names], "forward": (name, class) | None, "backward": (name, class, what) | None,
    "loss": value}``: the first leaf layer (in execution order) whose output is non-finite, and the first one
    (in backward order) whose input gradient or parameter gradient is. Weights are not changed."""
    leaves = [(n, m) for n, m in model.named_modules() if not m._modules]
    report: Dict[str, Any] = {"bad_params": [n for n, p in model.named_parameters() if not finite(p.data)],
                              "forward": None, "backward": None, "loss": None}
    saved_grads = {id(p): (None if p.grad is None else p.grad.copy()) for p in model.parameters()}
    patched = []
    for name, mod in leaves:
        fwd, bwd = mod.forward, mod.backward

        def f(inp, *a, _f=fwd, _n=name, _m=mod, **k):
            out = _f(inp, *a, **k)
            if report["forward"] is None and not finite(out):
                report["forward"] = (_n or "<model>", type(_m).__name__)
            return out

        def b(dout, _b=bwd, _n=name, _m=mod):
            dx = _b(dout)
            if report["backward"] is None:
                bad = [pn for pn, p in _m._parameters.items() if p is not None and not finite(p.grad)]
                if not finite(dx) or bad:
                    what = "input gradient" if not finite(dx) else f"gradient of {bad[0]}"
                    report["backward"] = (_n or "<model>", type(_m).__name__, what)
            return dx
        object.__setattr__(mod, "forward", f)
        object.__setattr__(mod, "backward", b)
        patched.append(mod)
    was_training = model.training
    try:
        model.train()
        if rng_state is not None:
            backend.set_rng_state(rng_state)
        for p in model.parameters():
            p.grad = None
        with backend.enable_grad(), np.errstate(all="ignore"):
            out = model(x)
            try:
                report["loss"] = float(loss(out, y))
            except NonFiniteError:
                report["loss"] = math.nan
                return report
            dout = loss.backward()
            if not finite(dout) and report["backward"] is None:
                report["backward"] = ("<loss>", type(loss).__name__, "gradient of the loss")
            try:
                model.backward(dout)
            except Exception:  # a layer may refuse NaN input; what was found so far stands
                pass
    finally:
        for mod in patched:
            mod.__dict__.pop("forward", None)
            mod.__dict__.pop("backward", None)
        for p in model.parameters():
            p.grad = saved_grads.get(id(p))
        model.train(was_training)
    return report


def first_nonfinite_layer(net, outputs: bool = True) -> Optional[str]:
    """The first layer of a Darknet network whose last output (``outputs``), or whose parameters, hold a NaN or
    an infinity, as ``"layer i [kind] (its output)"`` (None when all are finite)."""
    outs = (getattr(net, "layer_outputs", None) or []) if outputs else []
    for i, out in enumerate(outs):
        if isinstance(out, np.ndarray) and out.size and not np.isfinite(out).all():
            return f"layer {i} [{net.layers[i].kind}] (its output)"
    for i, layer in enumerate(net.layers):
        for name, p in layer.named_parameters():
            if not np.isfinite(p.data).all():
                return f"layer {i} [{layer.kind}] (its {name})"
    return None


class DivergenceGuard(Callback):
    """After each backward pass: a non-finite loss raises the task's DivergenceError (before the update).
    ``check_weights``: after each update, a non-finite weight raises too."""

    def __init__(self, check_weights: bool = False) -> None:
        self.check_weights = check_weights

    def after_backward(self, loop: Loop, out: StepOutput) -> None:
        if not out.skipped and not math.isfinite(out.loss):
            raise loop.task.diverged(out)

    def after_step(self, loop: Loop, out: StepOutput) -> None:
        if self.check_weights:
            err = loop.task.nonfinite_after_update()
            if err is not None:
                raise err


__all__ = ["DivergenceGuard", "diagnose_nonfinite", "first_nonfinite_layer", "finite"]
