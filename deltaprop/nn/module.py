"""``Module``: the forward/backward contract every layer follows.

- ``forward(x)`` computes the output and, when training (or inside ``enable_grad``), keeps the cache
  its backward needs; in ``eval()`` mode or inside ``no_grad()`` it keeps nothing.
- ``backward(dout)`` takes ∂C/∂output, ADDS each parameter's gradient into ``param.grad`` and returns
  ∂C/∂input. It never changes a weight.
"""
from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import backend
from ..errors import BackwardError, DTypeError, ShapeError, StateDictError
from .parameter import Parameter

_call_depth = threading.local()


def _checked_backward(backward):
    """``backward`` that first compares δ with the shape of the cached forward's output (ShapeError naming both,
    before the cache is consumed), instead of failing inside a product and losing the cache."""
    @functools.wraps(backward)
    def wrapper(self, *args, **kwargs):
        shape = self.__dict__.get("_out_shape")
        if shape is not None and args and isinstance(args[0], np.ndarray) and args[0].shape != shape:
            raise ShapeError(f"{type(self).__name__}.backward: gradient of shape {args[0].shape} does not fit the "
                             f"forward pass: δ = ∂C/∂output expected {shape}")
        return backward(self, *args, **kwargs)
    wrapper._shape_checked = True  # type: ignore[attr-defined]
    return wrapper


def _unfit(val: np.ndarray, cur: np.ndarray, kind: str) -> Optional[str]:
    """Why ``val`` cannot replace ``cur`` (a "param" or a "buffer") as ``cur``'s dtype without changing its
    values, or None: a parameter takes finite floats; a float buffer real numbers; neither a finite value
    that the cast to ``cur``'s dtype makes infinite; an integer buffer (a batch count) integers within its
    dtype's range, never a NaN cast to −2⁶³."""
    if kind == "param" and (val.dtype.kind != "f" or not np.isfinite(val).all()):
        nonfinite = " with NaN/inf" if val.dtype.kind == "f" else ""
        return f"expected finite floating-point values, got dtype {val.dtype}{nonfinite}"
    if cur.dtype.kind == "f":
        if val.dtype.kind not in "biuf":
            return f"expected real numbers, got dtype {val.dtype}"
        with np.errstate(over="ignore", invalid="ignore"):
            if not (np.isfinite(val.astype(cur.dtype)) | ~np.isfinite(val)).all():
                return f"values beyond the range of {cur.dtype}"
    elif cur.dtype.kind in "iu":
        if val.dtype.kind not in "biu":
            return f"expected integers ({cur.dtype}), got dtype {val.dtype}"
        info = np.iinfo(cur.dtype)
        if val.size and (int(val.min()) < info.min or int(val.max()) > info.max):
            return f"values beyond the range of {cur.dtype}"
    return None


class Module:
    """Base class of layers and networks (PyTorch's names: parameters, state_dict, train/eval, ...)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bw = cls.__dict__.get("backward")
        if bw is not None and callable(bw) and not getattr(bw, "_shape_checked", False):
            cls.backward = _checked_backward(bw)

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_cache", None)
        # Set to False on a first layer to skip the input gradient (Darknet never computes it).
        object.__setattr__(self, "needs_input_grad", True)

    # --- registration --------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call Module.__init__() before assigning attributes")
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Optional[np.ndarray]) -> None:
        """A state array that is saved in ``state_dict`` but is not trained (e.g. BN running mean)."""
        object.__setattr__(self, name, value)
        self._buffers[name] = None  # value lives in __dict__; the dict keeps the order
        for d in (self._parameters, self._modules):
            d.pop(name, None)

    def add_module(self, name: str, module: "Module") -> None:
        setattr(self, name, module)

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, x, *args, **kwargs):
        depth = getattr(_call_depth, "d", 0)
        if depth == 0 and isinstance(x, np.ndarray):
            # Only the outermost call scans for NaN: inner layers trust their producers.
            backend.check_array(x, f"input of {type(self).__name__}", finite=True)
        _call_depth.d = depth + 1
        try:
            out = self.forward(x, *args, **kwargs)
        finally:
            _call_depth.d = depth
        # the shape δ must have in backward (checked there); None when nothing was cached for a backward
        object.__setattr__(self, "_out_shape",
                           out.shape if isinstance(out, np.ndarray) and self.keeps_cache else None)
        return out

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    # helpers for subclasses
    @property
    def keeps_cache(self) -> bool:
        """Whether forward should keep its cache now (training mode, or inside enable_grad)."""
        return backend.keeps_cache(self.training)

    def _save(self, cache) -> None:
        object.__setattr__(self, "_cache", cache if self.keeps_cache else None)

    def _take(self):
        """The cache of the last forward; backward may run once per forward."""
        cache = self._cache
        if cache is None:
            raise BackwardError(
                f"{type(self).__name__}.backward() called without a cached forward pass: run forward in "
                f"train() mode (or inside deltaprop.enable_grad()) before calling backward")
        object.__setattr__(self, "_cache", None)
        return cache

    def _check_dtype(self, x: np.ndarray, dtype: np.dtype) -> None:
        if not isinstance(x, np.ndarray) or x.dtype != dtype:
            got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise DTypeError(f"{type(self).__name__}: input has dtype {got} but the parameters are {dtype} "
                             f"(convert the input, or the model with .float()/.double())")

    # --- traversal -------------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        return iter(self._modules.items())

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """This module and every descendant, depth first, with dotted names (an explicit stack, no recursion)."""
        stack = [(prefix, self)]
        while stack:
            name, mod = stack.pop()
            yield name, mod
            kids = [((f"{name}.{k}" if name else k), m) for k, m in mod._modules.items() if m is not None]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, Parameter]]:
        seen = set()
        for mname, mod in self.named_modules(prefix):
            for pname, p in mod._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, np.ndarray]]:
        for mname, mod in self.named_modules(prefix):
            for bname in mod._buffers:
                val = mod.__dict__.get(bname)
                if val is not None:
                    yield (f"{mname}.{bname}" if mname else bname), val

    def num_parameters(self, trainable_only: bool = False) -> int:
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    # --- modes -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
            if not mode:
                object.__setattr__(m, "_cache", None)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # --- dtype -----------------------------------------------------------------------------
    def to(self, dtype) -> "Module":
        """Convert every parameter and floating buffer to ``dtype`` (float32 or float64)."""
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise DTypeError(f"modules hold float32 or float64 parameters, not {dt}")
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dt)
                    p.grad = None if p.grad is None else p.grad.astype(dt)
            for b in m._buffers:
                val = m.__dict__.get(b)
                if isinstance(val, np.ndarray) and val.dtype.kind == "f":
                    object.__setattr__(m, b, val.astype(dt))
            object.__setattr__(m, "_cache", None)
            m._on_dtype_change(dt)
        return self

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        """Hook for modules that keep dtype-dependent state of their own."""

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (the default dtype for parameter-free modules)."""
        for p in self.parameters():
            return p.data.dtype
        return backend.get_default_dtype()

    # --- state dict ------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by PyTorch's dotted key names, as copies."""
        out: "OrderedDict[str, np.ndarray]" = OrderedDict()
        for mname, mod in self.named_modules():
            pre = f"{mname}." if mname else ""
            for pname, p in mod._parameters.items():
                if p is not None:
                    out[pre + pname] = p.data.copy()
            for bname in mod._buffers:
                val = mod.__dict__.get(bname)
                if val is not None:
                    out[pre + bname] = np.array(val, copy=True)
        return out

    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        """Load arrays by key (PyTorch names). Missing, unexpected or mis-shaped entries raise StateDictError."""
        targets: Dict[str, Tuple[Module, str, str]] = {}
        for mname, mod in self.named_modules():
            pre = f"{mname}." if mname else ""
            for pname, p in mod._parameters.items():
                if p is not None:
                    targets[pre + pname] = (mod, pname, "param")
            for bname in mod._buffers:
                if mod.__dict__.get(bname) is not None:
                    targets[pre + bname] = (mod, bname, "buffer")
        keys = set(state)
        missing = [k for k in targets if k not in keys]
        unexpected = [k for k in state if k not in targets]
        if strict and (missing or unexpected):
            raise StateDictError(f"state dict does not match {type(self).__name__}: "
                                 f"missing keys {missing}, unexpected keys {unexpected}")
        errors = []
        for key, (mod, name, kind) in targets.items():
            if key not in state:
                continue
            cur = mod._parameters[name].data if kind == "param" else mod.__dict__[name]
            val = np.asarray(state[key])
            if val.shape != cur.shape:
                errors.append(f"{key}: expected shape {cur.shape}, got {val.shape}")
                continue
            why = _unfit(val, cur, kind)
            if why:
                errors.append(f"{key}: {why}")
        if errors:
            raise StateDictError(f"state dict does not match {type(self).__name__}: " + "; ".join(errors))
        for key, (mod, name, kind) in targets.items():
            if key not in state:
                continue
            cur = mod._parameters[name].data if kind == "param" else mod.__dict__[name]
            val = np.asarray(state[key]).astype(cur.dtype, copy=True)
            if kind == "param":
                mod._parameters[name].data = val
            else:
                object.__setattr__(mod, name, val)

    # --- configuration (architecture as JSON) ---------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """Constructor arguments as JSON-able values, read from attributes of the same name.

        A parameter argument such as ``bias`` stored as a Parameter (or None) becomes True (False);
        ``dtype`` is left out. Layers whose attributes differ from their arguments override this.
        """
        cfg: Dict[str, Any] = {}
        sig = inspect.signature(type(self).__init__)
        for name, prm in list(sig.parameters.items())[1:]:
            if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD) or name == "dtype":
                continue
            if not hasattr(self, name):
                raise NotImplementedError(f"{type(self).__name__}.get_config: no attribute {name!r}; override get_config")
            val = getattr(self, name)
            if isinstance(val, Parameter) or (val is None and isinstance(prm.default, bool)):
                val = val is not None
            elif isinstance(val, np.generic):
                val = val.item()
            elif isinstance(val, tuple):
                val = list(val)
            cfg[name] = val
        return cfg

    # --- description -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for k, m in self._modules.items():
                sub = repr(m).replace("\n", "\n  ")
                lines.append(f"\n  ({k}): {sub}")
            lines.append("\n")
        lines.append(")")
        return "".join(lines)

    def summary(self, input_shape: Tuple[int, ...], dtype=None, print_fn=print) -> List[Tuple[str, str, tuple, int]]:
        """Print each leaf layer, its output shape and parameter count for an input of ``input_shape``
        (including the batch dimension); return the rows. Runs one forward pass on zeros, no cache kept."""
        from ..backend import no_grad
        rows: List[Tuple[str, str, tuple, int]] = []
        leaves = [(n, m) for n, m in self.named_modules() if not m._modules and n]
        hooks = []
        for name, mod in leaves:
            orig = mod.forward

            def wrapped(x, *a, _orig=orig, _name=name, _mod=mod, **k):
                out = _orig(x, *a, **k)
                shape = tuple(out.shape) if isinstance(out, np.ndarray) else ()
                rows.append((_name, type(_mod).__name__, shape,
                             int(sum(p.size for p in _mod._parameters.values() if p is not None))))
                return out
            object.__setattr__(mod, "forward", wrapped)
            hooks.append(mod)
        was_training = self.training
        try:
            self.eval()
            with no_grad():
                self(np.zeros(input_shape, dtype=dtype or self.dtype))
        finally:
            for mod in hooks:
                del mod.__dict__["forward"]
            self.train(was_training)
        total = self.num_parameters()
        trainable = self.num_parameters(trainable_only=True)
        w = max([len(r[0]) + len(r[1]) + 3 for r in rows] + [20])
        print_fn(f"{'layer':<{w}} {'output shape':<22} {'params':>10}")
        print_fn("-" * (w + 34))
        for name, kind, shape, n in rows:
            print_fn(f"{name + ' (' + kind + ')':<{w}} {str(shape):<22} {n:>10,}")
        print_fn("-" * (w + 34))
        print_fn(f"total parameters: {total:,} (trainable {trainable:,})")
        return rows
