"""``DarknetSGD``: Darknet's update rule (pjreddie f6afaabc ``update_convolutional_layer``,
``update_connected_layer``; DARKNET.md "Training"; EQUATIONS.md §7, last rule).

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

from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import numpy as np

from ..errors import StateDictError
from ..nn.parameter import Parameter

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


class DarknetSGD:
    """Darknet's SGD with momentum and batch-scaled decay, on any model.

    ``params``: a ``Module`` (named parameters; per-layer ``learning_rate_scale`` read from its modules),
    an iterable of Parameters or of ``(name, Parameter)`` pairs, or a list of group dicts
    (``{"params": [...], "decay": ..., "lr_scale": ...}``). ``decay_filter(name, param)`` says which get
    decay (default: ≥ 2-D arrays). ``batch`` is B, the images per update (all subdivisions together).
    Group keys: ``lr`` (the net's current rate: set it each update, e.g. from ``DarknetLR``), ``momentum``,
    ``decay``, ``lr_scale``, ``batch``.
    """

    def __init__(self, params: Any, lr: float = 0.001, momentum: float = 0.9, decay: float = 0.0001,
                 batch: int = 1, decay_filter: DecayFilter = decay_weights_only) -> None:
        if lr < 0 or momentum < 0 or decay < 0:
            raise ValueError(f"DarknetSGD: lr, momentum and decay must be ≥ 0, got {lr}, {momentum}, {decay}")
        if int(batch) < 1:
            raise ValueError(f"DarknetSGD: batch must be ≥ 1, got {batch}")
        self.defaults = {"lr": float(lr), "momentum": float(momentum), "decay": float(decay),
                         "lr_scale": 1.0, "batch": int(batch)}
        self.param_groups: List[Dict[str, Any]] = []
        self.state: Dict[int, Dict[str, Any]] = {}  # keyed by id(param)
        for g in self._make_groups(params, decay_filter):
            self.add_param_group(g)
        if not self.param_groups:
            raise ValueError("DarknetSGD got an empty parameter list")

    # --- groups -----------------------------------------------------------------------------------
    def _make_groups(self, params: Any, decay_filter: DecayFilter) -> List[Dict[str, Any]]:
        from ..nn.module import Module
        scales: Dict[int, float] = {}
        if isinstance(params, Module):
            scales = _owner_lr_scales(params)
            params = list(params.named_parameters())
        else:
            params = list(params)
        if params and isinstance(params[0], dict):
            return params
        named = [(None, p) if isinstance(p, Parameter) else (p[0], p[1]) for p in params]
        buckets: Dict[tuple, List[Parameter]] = {}
        for name, p in named:
            if not isinstance(p, Parameter):
                raise TypeError(f"DarknetSGD: expected Parameters, got {type(p).__name__}")
            key = (bool(decay_filter(name, p)), scales.get(id(p), 1.0))
            buckets.setdefault(key, []).append(p)
        return [{"params": ps, "decay": self.defaults["decay"] if dec else 0.0, "lr_scale": sc}
                for (dec, sc), ps in buckets.items()]

    def add_param_group(self, group: Dict[str, Any]) -> None:
        g = dict(self.defaults)
        g.update(group)
        ps = g["params"]
        g["params"] = [ps] if isinstance(ps, Parameter) else list(ps)
        seen = {id(p) for grp in self.param_groups for p in grp["params"]}
        for p in g["params"]:
            if id(p) in seen:
                raise ValueError("DarknetSGD: a parameter appears in more than one group")
        self.param_groups.append(g)

    def set_lr(self, lr: float) -> None:
        """Set the net's current learning rate (each group still multiplies it by its ``lr_scale``)."""
        for g in self.param_groups:
            g["lr"] = float(lr)

    def set_batch(self, batch: int) -> None:
        for g in self.param_groups:
            g["batch"] = int(batch)

    # --- the update --------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.zero_grad(set_to_none)

    def step(self) -> None:
        """One Darknet update of every trainable parameter (also those without a gradient this time:
        Darknet applies decay and momentum regardless)."""
        for g in self.param_groups:
            for p in g["params"]:
                if not p.requires_grad:
                    continue
                self._update(p, g)

    def _update(self, p: Parameter, g: Dict[str, Any]) -> None:
        w = p.data
        t = w.dtype.type
        st = self.state.setdefault(id(p), {"step": 0})
        buf = st.get("momentum_buffer")
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
            buf = np.zeros_like(w)
        if p.grad is not None:
            buf += p.grad                                  # b = −u: Darknet's backward accumulation
        B = int(g["batch"])
        if g["decay"]:
            buf += t(t(g["decay"]) * t(B)) * w            # u += −decay·B·w
        lr = t(t(g["lr"]) * t(g["lr_scale"]))
        w -= t(lr / t(B)) * buf                            # w += (lr/B)·u
        buf *= t(g["momentum"])                            # u *= momentum
        st["momentum_buffer"] = buf
        st["step"] = int(st["step"]) + 1

    # --- state dict ---------------------------------------------------------------------------------
    def _index(self) -> Dict[int, int]:
        out: Dict[int, int] = {}
        for g in self.param_groups:
            for p in g["params"]:
                out.setdefault(id(p), len(out))
        return out

    def state_dict(self) -> Dict[str, Any]:
        """``{"param_groups": [{..., "params": [idx]}], "state": {idx: {"step": n, "momentum_buffer": array}}}``
        with parameters numbered in group order."""
        idx = self._index()
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [idx[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                st = self.state.get(id(p))
                if st:
                    state[idx[id(p)]] = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                                         for k, v in st.items()}
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, sd: Dict[str, Any]) -> None:
        """Restore hyper-parameters and buffers; raises StateDictError on a mismatch (group count or
        sizes, buffer shapes)."""
        try:
            groups, state = sd["param_groups"], sd["state"]
        except (KeyError, TypeError):
            raise StateDictError("optimizer state dict needs 'param_groups' and 'state'") from None
        if len(groups) != len(self.param_groups):
            raise StateDictError(f"optimizer state dict has {len(groups)} parameter groups, this DarknetSGD has "
                                 f"{len(self.param_groups)}")
        plist = [p for g in self.param_groups for p in g["params"]]
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved.get("params", [])) != len(mine["params"]):
                raise StateDictError(f"optimizer group {i}: {len(saved.get('params', []))} parameters saved, "
                                     f"{len(mine['params'])} here")
        new_state: Dict[int, Dict[str, Any]] = {}
        for k, st in state.items():
            k = int(k)
            if not 0 <= k < len(plist):
                raise StateDictError(f"optimizer state for parameter {k}, but there are {len(plist)}")
            p = plist[k]
            entry = {"step": int(st.get("step", 0))}
            buf = st.get("momentum_buffer")
            if buf is not None:
                buf = np.asarray(buf)
                if buf.shape != p.data.shape:
                    raise StateDictError(f"optimizer state {k}.momentum_buffer: expected shape {p.data.shape}, "
                                         f"got {buf.shape}")
                entry["momentum_buffer"] = buf.astype(p.data.dtype, copy=True)
            new_state[id(p)] = entry
        for saved, mine in zip(groups, self.param_groups):
            for key in ("lr", "momentum", "decay", "lr_scale", "batch"):
                if key in saved:
                    mine[key] = type(self.defaults[key])(saved[key])
        self.state = new_state

    def __repr__(self) -> str:
        g = self.param_groups[0]
        return (f"DarknetSGD(lr={g['lr']}, momentum={g['momentum']}, decay={self.defaults['decay']}, "
                f"batch={g['batch']}, groups={len(self.param_groups)})")
