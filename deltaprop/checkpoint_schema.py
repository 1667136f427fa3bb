"""The schema of a checkpoint's ``__meta__`` document, checked before anything is built from it.

A checkpoint's checksum catches random corruption, not a crafted or hand-edited file. Everything read from
``__meta__`` is validated here first: the JSON itself (size, nesting depth), the known top-level keys and
their types and ranges, the ``__array__``/``__tuple__``/``__items__`` markers, the architecture (kind,
known keys, constructor arguments bound to the constructor's signature), the RNG state (against the live
generator's layout), the optimizer state and the scheduler state (against the live scheduler's). Every
failure is a ``CheckpointError`` naming the file and the field (``optimizer.param_groups[0].params[1]``).

**What a model file may name** is held in a registry here, never imported from the file's words. Layer classes:
the public layers of ``deltaprop.nn``, and those registered with :func:`register_layer`; architecture kinds:
``registry`` (``deltaprop.models``), ``sequential``, and those registered with :func:`register_architecture`
(``darknet_cfg``, by ``deltaprop.darknet``). Packages above this one in the layer order register into it when
they are imported; when a file names something not registered yet, the modules of the fixed list
:data:`PROVIDERS` are imported (each once) and the name looked up again: nothing else is ever imported, so a
file naming ``deltaprop.__main__`` or ``subprocess.Popen`` is refused before any import.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

import numpy as np

from .errors import CheckpointError

#: Top-level keys of a version-1 ``__meta__`` document.
META_KEYS = ("format", "version", "architecture", "model_class", "epoch", "step", "history", "extra",
             "optimizer", "scheduler", "rng")
#: Prefixes of the arrays a checkpoint holds beside ``__meta__`` (model state, encoded values).
ARRAY_PREFIXES = ("model/", "optim/", "sched/", "rng/", "hist/", "extra/")
MAX_DEPTH = 32                  # nesting of lists and dicts anywhere in the metadata
MAX_META_BYTES = 64 * 2 ** 20   # the JSON document itself
MAX_COUNTER = 2 ** 63           # epoch, step
MAX_STATE_INT = 2 ** 128        # PCG64's state and increment are 128-bit
MAX_ARG_INT = 2 ** 31           # an integer constructor argument (sizes, counts)
MAX_ITEMS = 100_000             # entries of one list or dict in an architecture or a state
MARKERS = ("__array__", "__tuple__", "__items__")
ARCH_KEYS = {"registry": {"kind", "model", "kwargs", "dtype"},
             "sequential": {"kind", "layers", "name", "dtype"}}
LAYER_KEYS = {"name", "class", "module", "config"}
DTYPES = ("float16", "float32", "float64")
#: The build budget when no package registered one (:func:`memory_budget`).
DEFAULT_BUDGET = 4 * 2 ** 30
#: The only modules a model file can make deltaprop import (see the module docstring); importing each registers
#: what it provides (a module that does not register itself has its own public layer classes registered).
PROVIDERS = ("deltaprop.darknet.model_file", "deltaprop.distributed.sync_batchnorm")


# --- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchitectureKind:
    """An architecture kind a package registers: its known ``keys``; ``check(schema, arch, field)`` validates
    its fields (a CheckpointError through ``schema.error``); ``build(arch, budget, schema, over)`` builds the
    model within ``budget`` bytes of parameters (``over(total)`` is the error to raise beyond it)."""
    keys: FrozenSet[str]
    check: Callable[["Schema", Dict[str, Any], str], None]
    build: Callable[[Dict[str, Any], int, "Schema", Callable[[int], CheckpointError]], Any]


_LAYERS: Dict[str, type] = {}
_KINDS: Dict[str, ArchitectureKind] = {}
_BUDGET: List[Callable[[], int]] = []
_LOCK = threading.RLock()
_providers_loaded = False


def register_layer(cls: type) -> type:
    """Let model files name ``cls`` (an ``nn.Module`` subclass) as a layer of a ``sequential`` architecture, by
    its class name. Usable as a class decorator; registering another class under a taken name is an error."""
    from .nn import Module
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_layer: {cls!r} is not an nn.Module subclass")
    with _LOCK:
        if _LAYERS.get(cls.__name__, cls) is not cls:
            raise ValueError(f"layer class name {cls.__name__!r} is already registered (by "
                             f"{_LAYERS[cls.__name__].__module__})")
        _LAYERS[cls.__name__] = cls
    return cls


def register_architecture(kind: str, keys: Iterable[str], check: Callable, build: Callable) -> None:
    """Let model files describe a model as ``{"kind": kind, ...}`` with ``keys`` (see :class:`ArchitectureKind`)."""
    if kind in ARCH_KEYS:
        raise ValueError(f"architecture kind {kind!r} is built in")
    with _LOCK:
        _KINDS[kind] = ArchitectureKind(frozenset(keys) | {"kind", "dtype"}, check, build)


def register_budget(source: Callable[[], int]) -> None:
    """The function giving the default budget of a rebuilt model's parameters (the Darknet memory budget,
    ``DELTAPROP_DARKNET_BUDGET``); the last one registered wins."""
    with _LOCK:
        _BUDGET[:] = [source]


def _load_providers() -> None:
    """Import the modules of :data:`PROVIDERS` (once): a model file named something not registered yet."""
    global _providers_loaded
    from .nn import Module
    with _LOCK:
        if _providers_loaded:
            return
        _providers_loaded = True
        for name in PROVIDERS:
            try:
                mod = importlib.import_module(name)
            except ImportError:       # a provider that needs a missing optional package provides nothing
                continue
            for obj in list(vars(mod).values()):
                if isinstance(obj, type) and issubclass(obj, Module) and obj.__module__ == name and \
                        not obj.__name__.startswith("_") and obj.__name__ not in _LAYERS:
                    register_layer(obj)


def _nn_layers() -> None:
    """The public layers of ``deltaprop.nn`` (below this module: registered from here, once)."""
    from . import nn
    with _LOCK:
        if "Linear" in _LAYERS:
            return
        for obj in vars(nn).values():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module and \
                    not obj.__name__.startswith("_") and obj.__name__ not in _LAYERS:
                _LAYERS[obj.__name__] = obj


def layer_classes() -> Dict[str, type]:
    """Every registered layer class by name (the providers imported)."""
    _nn_layers()
    _load_providers()
    return dict(_LAYERS)


def registered_layer(name: str) -> Optional[type]:
    """The registered layer class called ``name`` (providers imported when it is not registered yet), or None."""
    _nn_layers()
    if name not in _LAYERS:
        _load_providers()
    return _LAYERS.get(name)


def architecture_kind(kind: str) -> Optional[ArchitectureKind]:
    """The registered architecture kind ``kind`` (providers imported when needed), or None."""
    if kind not in _KINDS:
        _load_providers()
    return _KINDS.get(kind)


def memory_budget() -> int:
    """The default budget of a rebuilt model's parameters: the registered source's (the Darknet memory budget),
    else :data:`DEFAULT_BUDGET`."""
    if not _BUDGET:
        _load_providers()
    return int(_BUDGET[0]()) if _BUDGET else DEFAULT_BUDGET


class Schema:
    """Raises CheckpointError naming ``where`` (the file) and a field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, field: str, msg: str) -> CheckpointError:
        return CheckpointError(f"{self.where}: checkpoint field '{field}': {msg}")

    # --- the document -----------------------------------------------------------------------
    def parse(self, raw: bytes) -> Dict[str, Any]:
        """``__meta__`` bytes -> the top-level dict, its known keys checked (not yet decoded)."""
        if len(raw) > MAX_META_BYTES:
            raise self.error("__meta__", f"{len(raw):,} bytes of metadata, more than {MAX_META_BYTES:,}")
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, or an integer of too many digits
            raise self.error("__meta__", f"corrupt checkpoint metadata ({e})") from None
        except RecursionError:
            raise self.error("__meta__", f"nested deeper than {MAX_DEPTH} levels") from None
        if not isinstance(meta, dict):
            raise self.error("__meta__", f"expected a JSON object, got {_kind(meta)}")
        self.depth(meta, "__meta__")
        unknown = sorted(set(meta) - set(META_KEYS))
        if unknown:
            raise self.error(unknown[0], f"unknown key (a version-1 checkpoint has {', '.join(META_KEYS)})")
        return meta

    def depth(self, obj: Any, field: str) -> None:
        """No list or dict nested deeper than MAX_DEPTH (checked without recursion)."""
        stack: List[Tuple[Any, int]] = [(obj, 0)]
        while stack:
            v, d = stack.pop()
            if isinstance(v, (list, tuple, dict)):
                if d >= MAX_DEPTH:
                    raise self.error(field, f"nested deeper than {MAX_DEPTH} levels")
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))

    def integer(self, v: Any, field: str, lo: int, hi: int) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(field, f"expected an integer, got {show(v)}")
        if not lo <= v < hi:
            raise self.error(field, f"must be in [{lo}, {hi}), got {show(v)}")
        return v

    def number(self, v: Any, field: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(field, f"expected a number, got {show(v)}")
        if isinstance(v, int) and abs(v) >= MAX_STATE_INT or isinstance(v, float) and not math.isfinite(v):
            raise self.error(field, f"expected a finite number, got {show(v)}")
        return v

    def header(self, meta: Dict[str, Any], fmt: str, version: int) -> None:
        if meta.get("format") != fmt:
            raise CheckpointError(f"{self.where}: not a deltaprop checkpoint (format {show(meta.get('format'))})")
        v = meta.get("version")
        self.integer(v, "version", 1, MAX_COUNTER)
        if v > version:
            raise CheckpointError(f"{self.where}: checkpoint format version {v} is newer than this "
                                  f"deltaprop's ({version}); upgrade deltaprop")
        for key in ("epoch", "step"):
            if key in meta:
                self.integer(meta[key], key, 0, MAX_COUNTER)
        mc = meta.get("model_class")
        if mc is not None and not (isinstance(mc, str) and len(mc) <= 256):
            raise self.error("model_class", f"expected a class name, got {show(mc)}")
        if not isinstance(meta.get("history") or [], list):
            raise self.error("history", f"expected a list, got {_kind(meta['history'])}")
        for key in ("extra", "optimizer", "scheduler", "rng"):
            if meta.get(key) is not None and not isinstance(meta[key], dict):
                raise self.error(key, f"expected an object or null, got {_kind(meta[key])}")

    # --- arrays and encoded values -------------------------------------------------------------
    def arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Known entry names; model state numeric (a buffer stored as strings is refused here)."""
        for name, a in arrays.items():
            if not name.startswith(ARRAY_PREFIXES):
                raise self.error(name, f"unknown entry (a checkpoint holds __meta__ and entries under "
                                       f"{', '.join(ARRAY_PREFIXES)})")
            if name.startswith("model/") and a.dtype.kind not in "biuf":
                raise self.error(name, f"model state must be numeric, got dtype {a.dtype}")

    def encoded(self, obj: Any, field: str, arrays: Dict[str, np.ndarray], seen: Dict[str, str]) -> None:
        """A value written by ``io.encode_value``: JSON values and well-formed markers; every ``__array__``
        names an entry of the file, referenced once (no entry is copied many times)."""
        stack: List[Tuple[Any, str]] = [(obj, field)]
        while stack:
            v, path = stack.pop()
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_STATE_INT:
                raise self.error(path, f"integer of {v.bit_length()} bits, more than {MAX_STATE_INT.bit_length() - 1}")
            if isinstance(v, list):
                stack.extend((x, f"{path}[{i}]") for i, x in enumerate(v))
            elif isinstance(v, dict):
                if len(v) == 1 and next(iter(v)) in MARKERS:
                    marker, x = next(iter(v.items()))
                    self._marker(marker, x, path, arrays, seen, stack)
                else:
                    stack.extend((x, f"{path}.{k}") for k, x in v.items())

    def _marker(self, marker: str, x: Any, path: str, arrays, seen, stack) -> None:
        if marker == "__array__":
            if not isinstance(x, str) or x not in arrays or x.startswith("model/"):
                raise self.error(path, f"__array__ must name an entry of the file, got {show(x)}")
            if x in seen:
                raise self.error(path, f"array {x!r} is referenced twice (also at {seen[x]})")
            if arrays[x].dtype.kind in "OV":
                raise self.error(path, f"array {x!r} has dtype {arrays[x].dtype}")
            seen[x] = path
        elif marker == "__tuple__":
            if not isinstance(x, list):
                raise self.error(path, f"__tuple__ must hold a list, got {_kind(x)}")
            stack.extend((y, f"{path}[{i}]") for i, y in enumerate(x))
        else:
            if not isinstance(x, list):
                raise self.error(path, f"__items__ must hold a list of [key, value] pairs, got {_kind(x)}")
            for i, pair in enumerate(x):
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise self.error(f"{path}[{i}]", f"expected a [key, value] pair, got {show(pair)}")
                if not _hashable_key(pair[0]):
                    raise self.error(f"{path}[{i}]", f"a key must be a number, string, null or tuple of "
                                                     f"them, got {show(pair[0])}")
                stack.append((pair[1], f"{path}[{i}]"))

    # --- architecture ------------------------------------------------------------------------
    def architecture(self, arch: Any, field: str = "architecture") -> Optional[Dict[str, Any]]:
        """Checked for what ``build_from_architecture`` does with it; other kinds only as JSON."""
        if arch is None:
            return None
        if not isinstance(arch, dict):
            raise self.error(field, f"expected an object or null, got {_kind(arch)}")
        kind = arch.get("kind")
        if not isinstance(kind, str):
            raise self.error(f"{field}.kind", f"expected a string, got {show(kind)}")
        dtype = arch.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise self.error(f"{field}.dtype", f"expected one of {', '.join(DTYPES)}, got {show(dtype)}")
        if kind in ARCH_KEYS:
            self._known(arch, ARCH_KEYS[kind], field)
            if kind == "registry":
                self._registry(arch, field)
            else:
                self._sequential(arch, field, 0)
            return arch
        registered = architecture_kind(kind) if len(kind) <= 64 else None
        if registered is None:
            return arch  # a model's own description: stored and compared, never built
        self._known(arch, registered.keys, field)
        registered.check(self, arch, field)
        return arch

    def _known(self, obj: Dict[str, Any], known, field: str) -> None:
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise self.error(f"{field}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(known))})")

    def _registry(self, arch: Dict[str, Any], field: str) -> None:
        from . import models
        name = arch.get("model")
        if not isinstance(name, str):
            raise self.error(f"{field}.model", f"expected a model name, got {show(name)}")
        if not models.is_registered(name):
            raise self.error(f"{field}.model", f"{name!r} is not a registered model (available: "
                                               f"{', '.join(models.available())})")
        kwargs = arch.get("kwargs", {})
        self._arguments(kwargs, models.signature(name), f"{field}.kwargs")

    def _sequential(self, spec: Dict[str, Any], field: str, depth: int) -> None:
        layers = spec.get("layers", [])
        if not isinstance(layers, list) or len(layers) > MAX_ITEMS:
            raise self.error(f"{field}.layers", f"expected a list of layers, got {_kind(layers)}")
        names = set()
        for i, item in enumerate(layers):
            f = f"{field}.layers[{i}]"
            if not isinstance(item, dict):
                raise self.error(f, f"expected an object, got {_kind(item)}")
            name = item.get("name")
            if not isinstance(name, str) or not name or name in names:
                raise self.error(f"{f}.name", f"expected a unique non-empty string, got {show(name)}")
            names.add(name)
            if item.get("kind") == "sequential":
                self._known(item, ARCH_KEYS["sequential"], f)
                self._sequential(item, f, depth + 1)
                continue
            self._known(item, LAYER_KEYS, f)
            cls = self.layer_class(item, f)
            self._arguments(item.get("config", {}), inspect.signature(cls), f"{f}.config")

    def layer_class(self, item: Dict[str, Any], field: str):
        """The registered layer class a sequential item names (``class``; its ``module``, when given, must be
        one of deltaprop's): looked up in the registry, never imported from the file's words."""
        name, module = item.get("class"), item.get("module")
        if not isinstance(name, str) or not (module is None or isinstance(module, str)):
            raise self.error(f"{field}.class", f"expected a class name (and module), got {show(name)}")
        cls = None
        if module is None or module == "deltaprop" or module.startswith("deltaprop."):
            cls = registered_layer(name) if len(name) <= 128 else None
        if cls is None:
            raise self.error(f"{field}.class", f"layer class {show(name)} (module {show(module)}) is not a "
                                               f"layer of this version of deltaprop")
        return cls

    def _arguments(self, kwargs: Any, sig: inspect.Signature, field: str) -> None:
        """Constructor arguments: JSON values of bounded size, bound to the signature (no unknown or missing
        argument reaches the constructor)."""
        if not isinstance(kwargs, dict):
            raise self.error(field, f"expected an object of arguments, got {_kind(kwargs)}")
        if "dtype" in kwargs and kwargs["dtype"] not in DTYPES + (None,):
            raise self.error(f"{field}.dtype", f"expected one of {', '.join(DTYPES)}, got {show(kwargs['dtype'])}")
        stack: List[Tuple[Any, str]] = [(v, f"{field}.{k}") for k, v in kwargs.items()]
        while stack:
            v, path = stack.pop()
            if isinstance(v, (list, dict)):
                if len(v) > MAX_ITEMS:
                    raise self.error(path, f"{len(v):,} entries, more than {MAX_ITEMS:,}")
                stack.extend((x, f"{path}[{i}]") for i, x in enumerate(v.values() if isinstance(v, dict) else v))
            elif isinstance(v, bool) or v is None:
                continue
            elif isinstance(v, int):
                if not -MAX_ARG_INT < v < MAX_ARG_INT:
                    raise self.error(path, f"integer argument {show(v)} out of range (|n| < 2³¹)")
            elif isinstance(v, float):
                if not math.isfinite(v):
                    raise self.error(path, f"expected a finite number, got {v}")
            elif isinstance(v, str):
                if len(v) > 4096:
                    raise self.error(path, f"string of {len(v):,} characters")
            else:
                raise self.error(path, f"unexpected {_kind(v)}")
        params = list(sig.parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        try:
            inspect.Signature(params).bind(**kwargs)
        except TypeError as e:
            raise self.error(field, f"does not fit the constructor{sig}: {e}") from None
        for name, v in kwargs.items():  # plain annotations: the value's kind
            ann = sig.parameters[name].annotation if name in sig.parameters else None
            ann = getattr(ann, "__name__", ann)
            if ann == "int" and (isinstance(v, bool) or not isinstance(v, int)) or \
                    ann == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))) or \
                    ann == "bool" and not isinstance(v, bool) or ann == "str" and not isinstance(v, str):
                raise self.error(f"{field}.{name}", f"expected {ann}, got {show(v)}")

    # --- states applied to live objects ------------------------------------------------------
    def rng(self, state: Any, live: Dict[str, Any], field: str = "rng") -> Dict[str, Any]:
        """A generator state with exactly the live generator's layout (same bit generator, same keys,
        unsigned integers of at most 128 bits)."""
        self.like(state, live, field, exact=True)
        return state

    def like(self, saved: Any, tmpl: Any, field: str, exact: bool = False) -> None:
        """``saved`` has the layout of ``tmpl`` (a live object's state): the same keys, the same kinds of
        values, finite numbers. ``exact``: also lists of the same length, the same strings and
        non-negative integers (a generator state)."""
        lo = 0 if exact else -MAX_STATE_INT
        stack: List[Tuple[Any, Any, str]] = [(saved, tmpl, field)]
        while stack:
            s, t, path = stack.pop()
            if isinstance(t, dict):
                if not isinstance(s, dict):
                    raise self.error(path, f"expected an object, got {_kind(s)}")
                if set(s) != set(t):
                    raise self.error(path, f"expected the keys {sorted(map(str, t))}, got {sorted(map(str, s))}")
                stack.extend((s[k], t[k], f"{path}.{k}") for k in t)
            elif isinstance(t, (list, tuple)):
                if not isinstance(s, (list, tuple)):
                    raise self.error(path, f"expected a list, got {_kind(s)}")
                if exact and len(s) != len(t) or len(s) > MAX_ITEMS:
                    raise self.error(path, f"expected {len(t)} entries, got {len(s)}")
                if t and len({type(x) for x in t}) == 1:
                    stack.extend((x, t[0], f"{path}[{i}]") for i, x in enumerate(s))
                else:
                    stack.extend((x, None, f"{path}[{i}]") for i, x in enumerate(s))
            elif isinstance(t, bool):
                if not isinstance(s, bool):
                    raise self.error(path, f"expected true or false, got {show(s)}")
            elif isinstance(t, int):
                self.integer(s, path, lo, MAX_STATE_INT)
            elif isinstance(t, float) or t is None:
                if not (t is None and (s is None or isinstance(s, str))):
                    self.number(s, path)
            elif isinstance(t, str):
                if not isinstance(s, str) or (exact and s != t):
                    raise self.error(path, f"expected {t!r}, got {show(s)}")

    def optimizer(self, state: Any, field: str = "optimizer") -> Dict[str, Any]:
        """``{"param_groups": [{..., "params": [int]}], "state": {int: {name: number | float array}}}``."""
        if not isinstance(state, dict) or set(state) != {"param_groups", "state"}:
            got = sorted(map(str, state)) if isinstance(state, dict) else _kind(state)
            raise self.error(field, f"expected exactly the keys ['param_groups', 'state'], got {got}")
        groups = state["param_groups"]
        if not isinstance(groups, list) or len(groups) > MAX_ITEMS:
            raise self.error(f"{field}.param_groups", f"expected a list, got {_kind(groups)}")
        indices = set()
        for g, group in enumerate(groups):
            f = f"{field}.param_groups[{g}]"
            if not isinstance(group, dict) or not isinstance(group.get("params"), list):
                raise self.error(f, "expected an object with a 'params' list")
            for i, p in enumerate(group["params"]):
                self.integer(p, f"{f}.params[{i}]", 0, MAX_ARG_INT)
                if p in indices:
                    raise self.error(f"{f}.params[{i}]", f"parameter index {p} appears twice")
                indices.add(p)
            for k, v in group.items():
                if k == "params":
                    continue
                if isinstance(v, (list, tuple)):
                    if len(v) > 16:
                        raise self.error(f"{f}.{k}", f"expected a few numbers, got {len(v)}")
                    for i, x in enumerate(v):
                        self.number(x, f"{f}.{k}[{i}]")
                elif not (isinstance(v, (bool, str)) or v is None):
                    self.number(v, f"{f}.{k}")
        entries = state["state"]
        if not isinstance(entries, dict):
            raise self.error(f"{field}.state", f"expected an object, got {_kind(entries)}")
        for idx, entry in entries.items():
            f = f"{field}.state[{idx!r}]"
            if isinstance(idx, str) and idx.isdigit() and len(idx) < 12:
                idx = int(idx)
            if isinstance(idx, bool) or not isinstance(idx, int) or idx not in indices:
                raise self.error(f, "is not the index of a parameter in param_groups")
            if not isinstance(entry, dict):
                raise self.error(f, f"expected an object, got {_kind(entry)}")
            for name, v in entry.items():
                if isinstance(v, np.ndarray):
                    if v.dtype.kind not in "fiu":
                        raise self.error(f"{f}.{name}", f"expected a numeric array, got dtype {v.dtype}")
                else:
                    self.number(v, f"{f}.{name}")
        return state


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def show(v: Any) -> str:
    """A value for a message: short, whatever it is."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an integer of {v.bit_length()} bits"
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _hashable_key(k: Any) -> bool:
    if k is None or isinstance(k, (str, int, float, bool)):
        return True
    return isinstance(k, dict) and set(k) == {"__tuple__"} and isinstance(k["__tuple__"], list) and \
        all(x is None or isinstance(x, (str, int, float, bool)) for x in k["__tuple__"])


def guarded(where: str, field: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (a load_state_dict or a constructor given validated values); any error it still raises
    becomes a CheckpointError naming the field."""
    from .errors import DeltapropError
    try:
        return fn()
    except CheckpointError:
        raise
    except (DeltapropError, KeyError, ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError,
            AttributeError, MemoryError) as e:
        raise CheckpointError(f"{where}: checkpoint field '{field}': {type(e).__name__}: {e}") from None
