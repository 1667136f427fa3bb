"""Checkpoints and model files as ``.npz``, never pickle, written atomically.

One file holds: ``model/<key>`` arrays (``model.state_dict()``: parameters and buffers, PyTorch key names),
``optim/...`` and ``sched/...`` arrays of the optimizer and scheduler states, and ``__meta__``, a UTF-8 JSON
document (as uint8 bytes) with everything else: the architecture, the rest of the optimizer and scheduler
states (arrays replaced by ``{"__array__": key}``), the global RNG state, epoch and step counters, the
history and free-form ``extra`` (e.g. the input normalisation).

The architecture makes a file self-describing, so ``load_model(path)`` rebuilds the network:
- ``{"kind": "registry", "model": name, "kwargs": {...}}`` for ``deltaprop.models.build`` models;
- ``{"kind": "sequential", "layers": [{"name", "class", "module", "config"} | nested sequential]}`` for any
  ``nn.Sequential`` of layers whose ``get_config()`` gives their constructor arguments;
- ``{"kind": "darknet_cfg", "cfg": text}``, rebuilt by ``deltaprop.darknet.load_cfg_text(text)``;
- or whatever dict a model carries as ``model._architecture``.

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then ``os.replace``d over the
target: a crash (even ``kill -9``) leaves the old file or the new one, never a half-written one.
"""
from __future__ import annotations

import copy
import importlib
import json
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import backend
from .atomic import atomic_writer
from .errors import CheckpointError, StateDictError

FORMAT = "deltaprop-checkpoint"
VERSION = 1
PathLike = Union[str, os.PathLike]


# --- JSON + arrays encoding ------------------------------------------------------------------

def _encode(obj: Any, prefix: str, arrays: Dict[str, np.ndarray]) -> Any:
    """JSON-able form of ``obj``; arrays are moved to ``arrays`` under keys starting with ``prefix``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OV":
            raise CheckpointError(f"cannot store an array of dtype {obj.dtype} at {prefix} without pickle")
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
        return {"__items__": [[_encode(k, f"{prefix}/k{i}", arrays), _encode(v, f"{prefix}/{i}", arrays)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} at {prefix} in a checkpoint "
                          f"(JSON values and numpy arrays only)")


def _decode(obj: Any, arrays) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise CheckpointError(f"checkpoint refers to array {key!r}, which the file does not hold")
            return np.array(arrays[key])
        if set(obj) == {"__tuple__"}:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {_decode(k, arrays): _decode(v, arrays) for k, v in obj["__items__"]}
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


# --- architecture ----------------------------------------------------------------------------

def _sequential_spec(seq) -> Dict[str, Any]:
    from .nn import Sequential
    layers = []
    for name, layer in seq.named_children():
        if isinstance(layer, Sequential) and type(layer) is Sequential:
            sub = _sequential_spec(layer)
            sub["name"] = name
            layers.append(sub)
            continue
        try:
            cfg = layer.get_config()
        except NotImplementedError as e:
            raise CheckpointError(f"cannot describe layer {name!r} ({type(layer).__name__}) as JSON: {e}") from None
        layers.append({"name": name, "class": type(layer).__name__, "module": type(layer).__module__,
                       "config": cfg})
    return {"kind": "sequential", "layers": layers}


def architecture_of(model) -> Optional[Dict[str, Any]]:
    """The JSON description of ``model`` (see the module docstring), or None if it has none."""
    from .nn import Sequential
    arch = model.__dict__.get("_architecture")
    if arch is not None:
        arch = copy.deepcopy(arch)
    elif isinstance(model, Sequential) and type(model) is Sequential:
        try:
            arch = _sequential_spec(model)
        except CheckpointError:
            return None
    else:
        return None
    arch["dtype"] = str(model.dtype)
    return arch


def _resolve_class(name: str, module: Optional[str]):
    from . import nn
    from .nn import Module
    cls = getattr(nn, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Module)) and module and \
            (module == "deltaprop" or module.startswith("deltaprop.")):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise CheckpointError(f"checkpoint names layer class {name!r} (module {module}), which this version of "
                              f"deltaprop does not have")
    return cls


def _build_sequential(spec: Dict[str, Any]):
    from .nn import Sequential
    layers = OrderedDict()
    for item in spec.get("layers", []):
        if item.get("kind") == "sequential":
            layers[item["name"]] = _build_sequential(item)
            continue
        cls = _resolve_class(item["class"], item.get("module"))
        try:
            layers[item["name"]] = cls(**item.get("config", {}))
        except TypeError as e:
            raise CheckpointError(f"cannot rebuild layer {item['name']!r} ({item['class']}) from config "
                                  f"{item.get('config')}: {e}") from None
    return Sequential(layers)


def build_from_architecture(arch: Dict[str, Any]):
    """Rebuild a model (fresh weights) from a JSON description written by ``architecture_of``."""
    if not isinstance(arch, dict) or "kind" not in arch:
        raise CheckpointError(f"not an architecture description: {str(arch)[:200]}")
    kind = arch["kind"]
    if kind == "registry":
        from . import models
        if not models.is_registered(arch["model"]):
            raise CheckpointError(f"checkpoint model {arch['model']!r} is not a registered model "
                                  f"(available: {', '.join(models.available())})")
        model = models.build(arch["model"], **arch.get("kwargs", {}))
    elif kind == "sequential":
        model = _build_sequential(arch)
    elif kind == "darknet_cfg":
        try:
            from .darknet import load_cfg_text
        except ImportError as e:
            raise CheckpointError(f"this checkpoint holds a Darknet cfg model, but deltaprop.darknet.load_cfg_text "
                                  f"is not available ({e})") from None
        options = {k: v for k, v in arch.items() if k not in ("kind", "cfg", "dtype")}  # e.g. numerics
        model = load_cfg_text(arch["cfg"], **options)
        if model.__dict__.get("_architecture") is None:
            object.__setattr__(model, "_architecture", {k: v for k, v in arch.items() if k != "dtype"})
    else:
        raise CheckpointError(f"unknown architecture kind {kind!r}")
    if arch.get("dtype") in ("float32", "float64"):
        model.to(arch["dtype"])
    return model


def describe_architecture(arch: Optional[Dict[str, Any]]) -> str:
    """A few words naming an architecture description."""
    if not arch:
        return "no stored architecture"
    kind = arch.get("kind")
    if kind == "registry":
        kw = ", ".join(f"{k}={v}" for k, v in arch.get("kwargs", {}).items())
        return f"model {arch.get('model')}({kw})"
    if kind == "sequential":
        return "Sequential(" + ", ".join(l.get("class", "Sequential") for l in arch.get("layers", [])) + ")"
    if kind == "darknet_cfg":
        return "Darknet cfg model"
    return f"architecture of kind {kind}"


def _first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{path}.{k}: {'missing in the model' if k not in b else 'missing in the checkpoint'}"
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} entries in the checkpoint, {len(b)} in the model"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: checkpoint has {a!r}, model has {b!r}"


# --- writing ---------------------------------------------------------------------------------

def atomic_write_npz(path: PathLike, arrays: Dict[str, np.ndarray]) -> Path:
    """``np.savez`` into a temporary file beside ``path``, fsync, then ``os.replace`` (atomic)."""
    with atomic_writer(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def save_checkpoint(path: PathLike, model, optimizer=None, scheduler=None, *, epoch: int = 0, step: int = 0,
                    history: Optional[List[Dict[str, Any]]] = None, rng_state: Union[bool, dict] = True,
                    extra: Optional[Dict[str, Any]] = None, architecture: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``model`` (parameters and buffers) and the training state to ``path`` (.npz, atomically).

    ``rng_state=True`` stores ``backend.get_rng_state()``; pass a dict to store that one, False for none.
    ``architecture`` overrides ``architecture_of(model)``."""
    arrays: Dict[str, np.ndarray] = {}
    for k, v in model.state_dict().items():
        arrays[f"model/{k}"] = np.asarray(v)
    meta: Dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "architecture": architecture if architecture is not None else architecture_of(model),
        "model_class": type(model).__name__,
        "epoch": int(epoch), "step": int(step),
        "history": _encode(history or [], "hist", arrays),
        "extra": _encode(extra or {}, "extra", arrays),
        "optimizer": None, "scheduler": None, "rng": None,
    }
    if optimizer is not None:
        meta["optimizer"] = _encode(optimizer.state_dict(), "optim", arrays)
    if scheduler is not None:
        meta["scheduler"] = _encode(scheduler.state_dict(), "sched", arrays)
    if rng_state is True:
        meta["rng"] = _encode(backend.get_rng_state(), "rng", arrays)
    elif isinstance(rng_state, dict):
        meta["rng"] = _encode(rng_state, "rng", arrays)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return atomic_write_npz(path, arrays)


def save_model(path: PathLike, model, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write the model alone (architecture + parameters + buffers)."""
    return save_checkpoint(path, model, rng_state=False, extra=extra)


# --- reading ---------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What a checkpoint file holds, decoded."""
    path: str
    model_state: "OrderedDict[str, np.ndarray]"
    architecture: Optional[Dict[str, Any]] = None
    optimizer_state: Optional[Dict[str, Any]] = None
    scheduler_state: Optional[Dict[str, Any]] = None
    rng_state: Optional[Dict[str, Any]] = None
    epoch: int = 0
    step: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    model: Any = None


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read and check a checkpoint file (every member's CRC); a corrupt or truncated file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise CheckpointError(f"{path}: corrupt checkpoint (bad CRC in member {bad})")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as e:  # BadZipFile, EOFError, ValueError (pickled/malformed member), OSError...
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a deltaprop checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deltaprop checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta['version']} is newer than this "
                              f"deltaprop's ({VERSION}); upgrade deltaprop")
    state = OrderedDict((k[len("model/"):], v) for k, v in arrays.items() if k.startswith("model/"))
    return Checkpoint(
        path=str(path), model_state=state, architecture=meta.get("architecture"),
        optimizer_state=_decode(meta.get("optimizer"), arrays),
        scheduler_state=_decode(meta.get("scheduler"), arrays),
        rng_state=_decode(meta.get("rng"), arrays),
        epoch=int(meta.get("epoch", 0)), step=int(meta.get("step", 0)),
        history=_decode(meta.get("history") or [], arrays), extra=_decode(meta.get("extra") or {}, arrays))


def load_checkpoint(path: PathLike, model=None, optimizer=None, scheduler=None, restore_rng: bool = False,
                    strict: bool = True) -> Checkpoint:
    """Read ``path`` and load it into ``model`` (rebuilt from the stored architecture when None), and into
    ``optimizer``/``scheduler`` when given; ``restore_rng`` restores the global generator.

    A model of another architecture raises CheckpointError naming the first difference."""
    ck = read_checkpoint(path)
    if model is None:
        if ck.architecture is None:
            raise CheckpointError(f"{path}: the checkpoint stores no architecture; build the model yourself and "
                                  f"pass it as load_checkpoint(path, model)")
        model = build_from_architecture(ck.architecture)
    else:
        mine = architecture_of(model)
        if mine is not None and ck.architecture is not None and mine.get("kind") == ck.architecture.get("kind"):
            a = {k: v for k, v in ck.architecture.items() if k != "dtype"}
            b = {k: v for k, v in mine.items() if k != "dtype"}
            diff = _first_difference(a, b, "architecture")
            if diff:
                raise CheckpointError(f"{path}: checkpoint is of another architecture than the model: {diff}")
    try:
        model.load_state_dict(ck.model_state, strict=strict)
    except StateDictError as e:
        raise CheckpointError(f"{path}: checkpoint ({describe_architecture(ck.architecture)}) does not fit the model "
                              f"({type(model).__name__}): {e}") from None
    ck.model = model
    if optimizer is not None:
        if ck.optimizer_state is None:
            raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
        try:
            optimizer.load_state_dict(ck.optimizer_state)
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit the optimizer: {e}") from None
    if scheduler is not None and ck.scheduler_state is not None:
        scheduler.load_state_dict(ck.scheduler_state)
    if restore_rng and ck.rng_state is not None:
        backend.set_rng_state(ck.rng_state)
    return ck


def load_model(path: PathLike, model=None):
    """The model stored in ``path`` (rebuilt from its architecture unless ``model`` is given), weights loaded."""
    return load_checkpoint(path, model=model).model


__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "save_model", "load_model", "Checkpoint",
           "architecture_of", "build_from_architecture", "atomic_write_npz"]
