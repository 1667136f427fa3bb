"""``DarknetSGD``: Darknet's update rule (pjreddie f6afaabc ``update_convolutional_layer``,
``update_connected_layer``; docs/equations.md §10; docs/equations.md §7, last rule).

Darknet, per layer, with B = the full batch (all subdivisions) and ``u`` its ``*_updates`` buffer, which
its backward passes fill with ``−∂C/∂w`` summed over the B images:

    weights:           u += −decay·B·w;   w += (lr/B)·u;   u *= momentum
    biases, BN scales: w += (lr/B)·u;   u *= momentum          (no decay)

with lr = the net's current rate × the layer's ``learning_rate`` scale.

Sign conversion: the engine keeps the gradient sign. ``param.grad`` holds ``+∂C/∂w`` summed over the batch
(backward passes of several sub-batches ADD into it), and the buffer kept here is ``b = −u``. The same
update then reads ``b += grad;  b += decay·B·w;  w −= (lr/B)·b;  b *= momentum``, a sign mirror of Darknet's
lines: every float operation is the same up to sign, so float32 results round identically. After a step
``state[p]["momentum_buffer"]`` equals −(Darknet's ``*_updates``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..nn.parameter import Parameter
from .optimizer import Optimizer

DecayFilter = Callable[[Optional[str], Parameter], bool]


def decay_weights_only(name: Optional[str], param: Parameter) -> bool:
    """The default rule for which parameters get weight decay: arrays with ≥ 2 dimensions (conv and
    connected weights), never biases or BN scales (1-D), whatever their name."""
    return param.data.ndim >= 2


def _owner_lr_scales(model) -> Dict[int, float]:
    """Per-parameter learning-rate multipliers from modules with a ``learning_rate_scale`` attribute
    (Darknet's per-layer ``learning_rate`` key)."""
    out: Dict[int, float] = {}
    for _, mod in model.named_modules():
        scale = getattr(mod, "learning_rate_scale", None)
        if scale is None:
            continue
        for p in mod.parameters():
            out.setdefault(id(p), float(scale))
    return out


class DarknetSGD(Optimizer):
    """Darknet's SGD with momentum and batch-scaled decay (§7, "Darknet's update"), on any model.

    ``params``: a ``Module`` (named parameters; per-layer ``learning_rate_scale`` read from its modules),
    an iterable of Parameters or of ``(name, Parameter)`` pairs, or a list of group dicts
    (``{"params": [...], "decay": ..., "lr_scale": ...}``). ``decay_filter(name, param)`` says which get
    decay (default: ≥ 2-D arrays). ``batch`` is B, the images per update (all subdivisions together).
    Group keys: ``lr`` (the net's current rate: set it each update, e.g. from ``DarknetLR``), ``momentum``,
    ``decay``, ``lr_scale``, ``batch``. State per parameter: ``step``, ``momentum_buffer`` (= −Darknet's
    ``*_updates`` after the update).
    """

    _buffers = ("momentum_buffer",)
    _required = ()

    def __init__(self, params: Any, lr: float = 0.001, momentum: float = 0.9, decay: float = 0.0001,
                 batch: int = 1, decay_filter: DecayFilter = decay_weights_only) -> None:
        defaults = {"lr": float(lr), "momentum": float(momentum), "decay": float(decay), "lr_scale": 1.0,
                    "batch": int(batch)}
        super().__init__(_make_groups(params, decay_filter, float(decay)), defaults)

    def _check_group(self, group: Dict[str, Any]) -> None:
        for k in ("lr", "momentum", "decay", "lr_scale"):
            if not float(group[k]) >= 0.0:
                raise ValueError(f"DarknetSGD: invalid {k} {group[k]!r} (must be >= 0)")
        if int(group["batch"]) < 1 or int(group["batch"]) != group["batch"]:
            raise ValueError(f"DarknetSGD: batch must be a positive integer, got {group['batch']!r}")

    def set_lr(self, lr: float) -> None:
        """Set the net's current learning rate (each group still multiplies it by its ``lr_scale``)."""
        for g in self.param_groups:
            g["lr"] = float(lr)

    def set_batch(self, batch: int) -> None:
        """Set B, the images per update."""
        for g in self.param_groups:
            g["batch"] = int(batch)

    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One Darknet update of every trainable parameter, also those without a gradient this time
        (Darknet applies decay and momentum regardless)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    self._update(p, p.grad, self.state.setdefault(p, {}), group)
        return loss

    def _update(self, p: Parameter, grad: Optional[np.ndarray], state: Dict[str, Any],
                group: Dict[str, Any]) -> None:
        w = p.data
        t = w.dtype.type
        buf = self._buffer(state, "momentum_buffer", p)
        if grad is not None:
            buf += grad                                    # b = −u: Darknet's backward accumulation
        B = int(group["batch"])
        if group["decay"]:
            buf += t(t(group["decay"]) * t(B)) * w        # u += −decay·B·w
        lr = t(t(group["lr"]) * t(group["lr_scale"]))
        w -= t(lr / t(B)) * buf                            # w += (lr/B)·u
        buf *= t(group["momentum"])                        # u *= momentum
        state["step"] = int(state.get("step", 0)) + 1


def _make_groups(params: Any, decay_filter: DecayFilter, decay: float) -> List[Dict[str, Any]]:
    """Parameter groups by (gets decay, learning-rate scale), in first-appearance order."""
    from ..nn.module import Module
    scales: Dict[int, float] = {}
    if isinstance(params, Module):
        scales = _owner_lr_scales(params)
        params = list(params.named_parameters())
    elif isinstance(params, Parameter):
        params = [params]
    else:
        params = list(params)
    if not params or isinstance(params[0], dict):
        return params
    buckets: Dict[tuple, List[Parameter]] = {}
    for item in params:
        name, p = (None, item) if isinstance(item, Parameter) else tuple(item)
        if not isinstance(p, Parameter):
            raise TypeError(f"DarknetSGD: expected Parameters, got {type(p).__name__}")
        key = (bool(decay_filter(name, p)), scales.get(id(p), 1.0))
        buckets.setdefault(key, []).append(p)
    return [{"params": ps, "decay": decay if dec else 0.0, "lr_scale": sc} for (dec, sc), ps in buckets.items()]
