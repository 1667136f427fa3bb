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
- ``{"kind": "darknet_cfg", "cfg": text}``, rebuilt by ``deltaprop.darknet.load_cfg_text(text)`` (a kind
  ``deltaprop.darknet`` registers into ``checkpoint_schema``: this module never imports the packages above it);
- or whatever dict a model carries as ``model._architecture``.

Values beside arrays (optimizer states, ``extra``) are encoded as JSON with arrays set apart
(:func:`encode_value`, :func:`decode_value`); the ranks of a distributed run exchange objects the same way.

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then ``os.replace``d over the
target: a crash (even ``kill -9``) leaves the old file or the new one, never a half-written one.
"""
from __future__ import annotations

import copy
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
from .checkpoint_schema import Schema, architecture_kind, guarded, memory_budget
from .errors import CheckpointError, StateDictError
from .nn.parameter import allocation_limit
from .safetensors_io import load_safetensors, save_safetensors  # deltaprop.io.save_safetensors, as the docs say

FORMAT = "deltaprop-checkpoint"
VERSION = 1
#: Default cap on the uncompressed bytes a checkpoint's entries may declare (``read_checkpoint(max_bytes=)``).
MAX_BYTES = 4 * 2 ** 30
PathLike = Union[str, os.PathLike]


# --- JSON + arrays encoding ------------------------------------------------------------------

def encode_value(obj: Any, prefix: str, arrays: Dict[str, np.ndarray]) -> Any:
    """JSON-able form of ``obj`` (JSON values, tuples, dicts with other keys, NumPy arrays and scalars); arrays
    are moved to ``arrays`` under keys starting with ``prefix`` and replaced by ``{"__array__": key}``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OV":
            raise CheckpointError(f"cannot store an array of dtype {obj.dtype} at {prefix} (numbers only)")
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_value(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
        return {"__items__": [[encode_value(k, f"{prefix}/k{i}", arrays), encode_value(v, f"{prefix}/{i}", arrays)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_value(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_value(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} at {prefix} in a checkpoint "
                          f"(JSON values and numpy arrays only)")


def decode_value(obj: Any, arrays) -> Any:
    """The value :func:`encode_value` encoded, its arrays taken from ``arrays`` (copies)."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            key = obj["__array__"]
            if key not in arrays:
                raise CheckpointError(f"checkpoint refers to array {key!r}, which the file does not hold")
            return np.array(arrays[key])
        if set(obj) == {"__tuple__"}:
            return tuple(decode_value(v, arrays) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {decode_value(k, arrays): decode_value(v, arrays) for k, v in obj["__items__"]}
        return {k: decode_value(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_value(v, arrays) for v in obj]
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


def _build_sequential(spec: Dict[str, Any], schema: Schema, field: str):
    from .nn import Sequential
    layers = OrderedDict()
    for i, item in enumerate(spec.get("layers", [])):
        f = f"{field}.layers[{i}]"
        if item.get("kind") == "sequential":
            layers[item["name"]] = _build_sequential(item, schema, f)
            continue
        cls = schema.layer_class(item, f)
        layers[item["name"]] = guarded(schema.where, f"{f}.config", lambda: cls(**item.get("config", {})))
    return Sequential(layers)


def build_from_architecture(arch: Dict[str, Any], budget: Optional[int] = None, where: str = "checkpoint"):
    """Rebuild a model (fresh weights) from a JSON description written by ``architecture_of``.

    The description is validated first (``checkpoint_schema``: known kinds and keys, arguments bound to the
    constructor's signature); the parameters created may total at most ``budget`` bytes (default:
    ``checkpoint_schema.memory_budget()``, the Darknet memory budget, 4 GiB), checked as each is created,
    before it is initialised. Every failure is a CheckpointError naming the field."""
    schema = Schema(where)
    if arch is None:
        raise CheckpointError(f"{where}: not an architecture description: None")
    schema.architecture(arch)
    kind = arch["kind"]
    budget = memory_budget() if budget is None else int(budget)

    def over(total: int) -> CheckpointError:
        return schema.error("architecture", f"the model it describes has more than {total:,} bytes of "
                                            f"parameters, beyond the {budget:,} this file can justify")
    registered = architecture_kind(kind) if kind not in ("registry", "sequential") and len(kind) <= 64 else None
    if registered is not None:
        model = registered.build(arch, budget, schema, over)
    elif kind not in ("registry", "sequential"):
        raise schema.error("architecture.kind", f"unknown architecture kind {kind[:64]!r}")
    else:
        with allocation_limit(budget, over):
            if kind == "registry":
                from . import models
                model = guarded(where, "architecture.kwargs",
                                lambda: models.build(arch["model"], **arch.get("kwargs", {})))
            else:
                model = _build_sequential(arch, schema, "architecture")
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
        "history": encode_value(history or [], "hist", arrays),
        "extra": encode_value(extra or {}, "extra", arrays),
        "optimizer": None, "scheduler": None, "rng": None,
    }
    if optimizer is not None:
        meta["optimizer"] = encode_value(optimizer.state_dict(), "optim", arrays)
    if scheduler is not None:
        meta["scheduler"] = encode_value(scheduler.state_dict(), "sched", arrays)
    if rng_state is True:
        meta["rng"] = encode_value(backend.get_rng_state(), "rng", arrays)
    elif isinstance(rng_state, dict):
        meta["rng"] = encode_value(rng_state, "rng", arrays)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return atomic_write_npz(path, arrays)


def save_model(path: PathLike, model, extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write the model alone (architecture + parameters + buffers)."""
    return save_checkpoint(path, model, rng_state=False, extra=extra)


# --- reading ---------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """What a checkpoint file holds, decoded. ``model_bytes``: the bytes of the stored model state (what
    a model rebuilt from the architecture may allocate, doubled for a change of dtype)."""
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
    model_bytes: int = 0

    @property
    def build_budget(self) -> int:
        """Bytes of parameters a model rebuilt from this file may create: twice the stored state (float32
        stored, float64 built) and a MiB."""
        return 2 * self.model_bytes + 2 ** 20


def _read_arrays(path: Path, max_bytes: int) -> Dict[str, np.ndarray]:
    """Every entry of the ``.npz``, CRCs checked; the sizes the zip declares are checked against
    ``max_bytes`` before anything is decompressed."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(info.file_size for info in zf.infolist())
            if declared > max_bytes:
                raise CheckpointError(f"{path}: checkpoint entries declare {declared:,} bytes, more than the limit "
                                      f"of {max_bytes:,} (read_checkpoint(..., max_bytes=) raises it)")
            bad = zf.testzip()
        if bad is not None:
            raise CheckpointError(f"{path}: corrupt checkpoint (bad CRC in member {bad})")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except Exception as e:  # BadZipFile, EOFError, ValueError (pickled/malformed member), OSError...
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from None


def read_checkpoint(path: PathLike, max_bytes: int = MAX_BYTES) -> Checkpoint:
    """Read and check a checkpoint file: every member's CRC (a corrupt or truncated file raises
    CheckpointError), then the metadata against its schema (``checkpoint_schema``) before anything is
    decoded: a crafted file raises CheckpointError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    arrays = _read_arrays(path, max_bytes)
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a deltaprop checkpoint (no __meta__ entry)")
    schema = Schema(str(path))
    raw = arrays.pop("__meta__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise schema.error("__meta__", f"expected UTF-8 bytes (uint8, 1-D), got {raw.dtype} {raw.shape}")
    meta = schema.parse(raw.tobytes())
    schema.header(meta, FORMAT, VERSION)
    schema.arrays(arrays)
    seen: Dict[str, str] = {}
    for key in ("history", "extra", "optimizer", "scheduler", "rng"):
        schema.encoded(meta.get(key), key, arrays, seen)
    architecture = schema.architecture(meta.get("architecture"))
    decoded = {key: decode_value(meta.get(key), arrays) for key in ("optimizer", "scheduler", "rng")}
    for key in ("scheduler", "rng"):
        if decoded[key] is not None and not isinstance(decoded[key], dict):
            raise schema.error(key, f"expected an object or null, got {type(decoded[key]).__name__}")
    if decoded["rng"] is not None:
        schema.rng(decoded["rng"], backend.get_rng_state())
    if decoded["optimizer"] is not None:
        schema.optimizer(decoded["optimizer"])
    extra = decode_value(meta.get("extra") or {}, arrays)
    if not isinstance(extra, dict):
        raise schema.error("extra", f"expected an object, got {type(extra).__name__}")
    state = OrderedDict((k[len("model/"):], v) for k, v in arrays.items() if k.startswith("model/"))
    return Checkpoint(
        path=str(path), model_state=state, architecture=architecture,
        optimizer_state=decoded["optimizer"], scheduler_state=decoded["scheduler"], rng_state=decoded["rng"],
        epoch=meta.get("epoch", 0), step=meta.get("step", 0),
        history=decode_value(meta.get("history") or [], arrays), extra=extra,
        model_bytes=sum(int(a.nbytes) for a in state.values()))


def load_checkpoint(path: PathLike, model=None, optimizer=None, scheduler=None, restore_rng: bool = False,
                    strict: bool = True) -> Checkpoint:
    """Read ``path`` and load it into ``model`` (rebuilt from the stored architecture when None, with
    parameters of at most ``Checkpoint.build_budget`` bytes), and into ``optimizer``/``scheduler`` when
    given; ``restore_rng`` restores the global generator. Each state is validated before it is applied.

    A model of another architecture raises CheckpointError naming the first difference."""
    ck = read_checkpoint(path)
    where = str(path)
    if model is None:
        if ck.architecture is None:
            raise CheckpointError(f"{path}: the checkpoint stores no architecture; build the model yourself and "
                                  f"pass it as load_checkpoint(path, model)")
        model = build_from_architecture(ck.architecture, budget=ck.build_budget, where=where)
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
        Schema(where).like(ck.optimizer_state["param_groups"], optimizer.state_dict()["param_groups"],
                           "optimizer.param_groups")
        guarded(where, "optimizer", lambda: optimizer.load_state_dict(ck.optimizer_state))
    if scheduler is not None and ck.scheduler_state is not None:
        Schema(where).like(ck.scheduler_state, scheduler.state_dict(), "scheduler")
        guarded(where, "scheduler", lambda: scheduler.load_state_dict(ck.scheduler_state))
    if restore_rng and ck.rng_state is not None:
        guarded(where, "rng", lambda: backend.set_rng_state(ck.rng_state))
    return ck


def load_model(path: PathLike, model=None):
    """The model stored in ``path`` (rebuilt from its architecture unless ``model`` is given), weights loaded."""
    return load_checkpoint(path, model=model).model


__all__ = ["save_safetensors", "load_safetensors", "save_checkpoint", "load_checkpoint", "read_checkpoint", "save_model", "load_model", "Checkpoint",
           "architecture_of", "build_from_architecture", "atomic_write_npz", "encode_value", "decode_value"]
