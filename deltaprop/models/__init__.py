"""Models defined in Python, by name: ``build("mlp")``, ``available()``, and ``@register("name")``.

Every module in this package is imported on first use of the registry, so a new file
``deltaprop/models/<x>.py`` with ``@register("x")`` on a builder function is found without editing this one.
A built model remembers its name and arguments (``model._architecture``), which checkpoints store so
``deltaprop eval`` can rebuild it from the file alone.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable, Dict, List, Tuple

_REGISTRY: Dict[str, Callable[..., Any]] = {}
_discovered = False


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a builder ``fn(**kwargs) -> Module`` under ``name``."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model name {name!r} is already registered (by {_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn
    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> List[str]:
    """Names of the registered models, sorted."""
    _discover()
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    _discover()
    return name in _REGISTRY


def signature(name: str) -> inspect.Signature:
    """The arguments the builder of ``name`` takes (checkpoints validate stored kwargs against it)."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return inspect.signature(_REGISTRY[name])


def build(name: str, **kwargs: Any):
    """Build the registered model ``name`` with ``kwargs``; it records ``{"model": name, "kwargs": kwargs}``."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    model = _REGISTRY[name](**kwargs)
    object.__setattr__(model, "_architecture", {"kind": "registry", "model": name, "kwargs": dict(kwargs)})
    return model


def build_for_input(name: str, shape: Tuple[int, int, int], num_classes: int = 10, **kwargs: Any):
    """Build ``name`` for inputs of ``shape`` (C, H, W) and ``num_classes`` outputs: passes ``in_channels``,
    ``input_size`` (square inputs), ``in_features`` (C·H·W) and ``num_classes`` to the builders that take them,
    so e.g. ``convbn`` (3×64×64 by default) is built for MNIST's 1×28×28 digits. Explicit ``kwargs`` win."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    c, h, w = (int(v) for v in shape)
    fitting = {"in_channels": c, "in_features": c * h * w, "num_classes": int(num_classes)}
    if h == w:
        fitting["input_size"] = h
    takes = inspect.signature(_REGISTRY[name]).parameters
    return build(name, **{**{k: v for k, v in fitting.items() if k in takes}, **kwargs})


def default_model() -> str:
    """The default model of ``deltaprop train``: ``lenet`` when registered, else ``mlp``."""
    return "lenet" if is_registered("lenet") else "mlp"


__all__ = ["register", "build", "build_for_input", "available", "is_registered", "default_model", "signature"]
