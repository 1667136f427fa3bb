"""``Optimizer``: parameter groups, ``zero_grad``, ``step`` and a checkpointable state, as PyTorch.

``state_dict()`` is ``{"param_groups": [{<hyper-parameters as Python scalars/lists>, "params": [int, ...]}],
"state": {int: {"step": int, "<buffer>": np.ndarray, ...}}}``; the integer indices count the parameters of
all groups in order (PyTorch's format with NumPy arrays). Updates are in place and keep each parameter's
dtype: hyper-parameters are Python floats, so a float32 model stays float32.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from ..errors import StateDictError
from ..nn.parameter import Parameter

ParamsT = Union[Iterable[Parameter], Iterable[Dict[str, Any]]]


def _plain(v: Any) -> Any:
    """Hyper-parameter as a JSON-able Python value (tuples become lists, NumPy scalars Python ones)."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


class Optimizer:
    """Base class. Subclasses set ``defaults``, validate a group in ``_check_group`` and update one
    parameter in ``_update(p, grad, state, group)``. ``_buffers`` names the parameter-shaped arrays a
    stepped parameter may keep in its state, ``_required`` those it must keep."""

    _buffers: Tuple[str, ...] = ()
    _required: Tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: Dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: Dict[Parameter, Dict[str, Any]] = {}
        self.param_groups: List[Dict[str, Any]] = []
        if isinstance(params, (Parameter, np.ndarray)) or hasattr(params, "named_parameters"):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters or of dicts, got "
                            f"{type(params).__name__} (pass model.parameters())")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # --- groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group ``{"params": [...], <hyper-parameter overrides>}``; missing ones take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("a parameter group needs a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters must be an ordered iterable, not a set")
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__} can only optimize Parameters, but item {i} of the group "
                                f"is a {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same parameter twice")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {k: (tuple(v) if isinstance(v, list) else v) for k, v in param_group.items() if k != "params"}
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        group = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in group.items()}
        self._check_group(group)
        group["params"] = params
        self.param_groups.append(group)

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Validate hyper-parameters (ValueError naming the bad one)."""

    # --- stepping --------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient (to None, or to zeros in place)."""
        for g in self.param_groups:
            for p in g["params"]:
                p.zero_grad(set_to_none)

    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One update of every parameter that has a gradient (frozen ones and grad None are skipped)."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                state = self.state.setdefault(p, {})
                self._update(p, p.grad, state, group)
        return loss

    def _update(self, p: Parameter, grad: np.ndarray, state: Dict[str, Any],
                group: Dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _buffer(state: Dict[str, Any], name: str, p: Parameter, init: Optional[np.ndarray] = None) -> np.ndarray:
        """state[name] in p's dtype, created as zeros (or a copy of ``init``) on first use."""
        buf = state.get(name)
        if buf is None:
            buf = np.zeros_like(p.data) if init is None else np.array(init, dtype=p.data.dtype, copy=True)
            state[name] = buf
        elif buf.dtype != p.data.dtype:      # the model was converted with .float()/.double()
            buf = state[name] = buf.astype(p.data.dtype)
        return buf

    # --- checkpoints -----------------------------------------------------------------------
    def _indexed(self) -> List[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> Dict[str, Any]:
        """``{"param_groups": [...], "state": {index: {...}}}`` with copies of the state arrays."""
        index = {id(p): i for i, p in enumerate(self._indexed())}
        groups = []
        for g in self.param_groups:
            packed = {k: _plain(v) for k, v in g.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in g["params"]]
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index and s:
                state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else _plain(v)) for k, v in s.items()}
        return {"param_groups": groups, "state": dict(sorted(state.items()))}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by ``state_dict`` (matched by position, as PyTorch).
        Wrong keys, group sizes, buffer names or shapes raise StateDictError and change nothing."""
        who = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"param_groups", "state"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise StateDictError(f"{who} state dict must have exactly the keys ['param_groups', 'state'], got {got}")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            n = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else type(saved_groups).__name__
            raise StateDictError(f"{who}: the state dict has {n} parameter groups, this optimizer has "
                                 f"{len(self.param_groups)}")
        sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in saved_groups]
        mine = [len(g["params"]) for g in self.param_groups]
        if sizes != mine:
            raise StateDictError(f"{who}: parameter group sizes {sizes} in the state dict do not match this "
                                 f"optimizer's {mine}")
        id_map: Dict[int, Parameter] = {}
        new_groups = []
        for saved, cur in zip(saved_groups, self.param_groups):
            for idx, p in zip(saved["params"], cur["params"]):
                try:
                    id_map[int(idx)] = p
                except (TypeError, ValueError):
                    raise StateDictError(f"{who}: parameter index {idx!r} in param_groups is not an integer") from None
            g = {k: v for k, v in cur.items() if k != "params"}
            for k, v in saved.items():
                if k == "params":
                    continue
                if isinstance(v, np.ndarray) and v.ndim == 0:   # e.g. read back from an .npz
                    v = v.item()
                if isinstance(v, list) and isinstance(cur.get(k), tuple):
                    v = tuple(v)
                g[k] = v
            try:
                self._check_group(g)
            except (ValueError, TypeError) as e:
                raise StateDictError(f"{who}: bad hyper-parameter in the state dict: {e}") from None
            g["params"] = cur["params"]
            new_groups.append(g)
        group_of = {id(p): g for g in new_groups for p in g["params"]}
        new_state: Dict[Parameter, Dict[str, Any]] = {}
        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise StateDictError(f"{who}: 'state' must be a dict, got {type(saved_state).__name__}")
        for key, entry in saved_state.items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise StateDictError(f"{who}: state key {key!r} is not a parameter index") from None
            if idx not in id_map:
                raise StateDictError(f"{who}: state for parameter index {idx}, but the optimizer's parameters "
                                     f"are numbered 0..{len(id_map) - 1}")
            p = id_map[idx]
            new_state[p] = self._load_entry(idx, entry, p, group_of[id(p)])
        for g, ng in zip(self.param_groups, new_groups):
            g.clear()
            g.update(ng)
        self.state = new_state

    def _load_entry(self, idx: int, entry: Any, p: Parameter, group: Dict[str, Any]) -> Dict[str, Any]:
        who = type(self).__name__
        if not isinstance(entry, dict):
            raise StateDictError(f"{who}: state[{idx}] must be a dict, got {type(entry).__name__}")
        allowed = set(self._buffers) | {"step"}
        unexpected = sorted(set(entry) - allowed)
        missing = sorted((set(self._required) | {"step"}) - set(entry))
        if unexpected or missing:
            raise StateDictError(f"{who}: state[{idx}] has unexpected entries {unexpected} and misses {missing} "
                                 f"(expected {sorted(allowed)})")
        out: Dict[str, Any] = {}
        step = entry["step"]
        step = step.item() if isinstance(step, np.ndarray) and step.size == 1 else step
        step = step.item() if isinstance(step, np.generic) else step
        if not isinstance(step, numbers.Real) or isinstance(step, bool) or step < 0:
            raise StateDictError(f"{who}: state[{idx}]['step'] must be a non-negative number, got {step!r}")
        out["step"] = int(step) if float(step).is_integer() else float(step)
        for name in sorted(set(entry) - {"step"}):
            arr = np.asarray(entry[name])
            if arr.shape != p.data.shape:
                raise StateDictError(f"{who}: state[{idx}][{name!r}]: expected shape {p.data.shape} (the parameter's), "
                                     f"got {arr.shape}")
            if arr.dtype.kind != "f" or not np.isfinite(arr).all():
                raise StateDictError(f"{who}: state[{idx}][{name!r}] must hold finite floats, got dtype {arr.dtype}"
                                     + (" with NaN/inf" if arr.dtype.kind == "f" else ""))
            out[name] = arr.astype(p.data.dtype, copy=True)
        return out

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)
