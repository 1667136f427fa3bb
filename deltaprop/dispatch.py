"""Reference kernels and their fast variants: one table, consulted when an op is called.

Every op of ``deltaprop.functional`` is written once, as its textbook equation: the *reference*. A *variant* is
another way to compute the same numbers faster (numba kernels, fused passes, the direct 3×3 loops, passes split
over the batch); it lives in ``deltaprop.fast`` and registers here for the op it accelerates. The reference module
never imports it (docs/architecture.md#variants)::

    # deltaprop/functional/conv.py                      # deltaprop/fast/conv.py
    @dispatch.op("conv2d")                              dispatch.register(dispatch.Variant(
    def conv2d_forward(x, w, b=None, ...):                  op="conv2d", name="per-sample products",
        ...  # the equation: im2col, one product            forward=conv2d_forward_per_sample,
        return out, ConvCache(...)                          applies=lambda x, w, *a, **k: ...,
                                                            backward=conv2d_backward_per_sample,
    @dispatch.backward("conv2d")                            caches=(PerSampleCache,), examples=...))
    def conv2d_backward(dout, cache, ...):
        ...  # Conv-1, Conv-2, Conv-3

- **Forward** (``op``): the registered variants of the op are asked in order of ``priority`` (highest first);
  the first whose ``applies(*args, **kwargs)`` is true computes the call, else the reference does. Each variant
  leaves its own cache type.
- **Backward** (``backward``): a cache whose type a variant registered goes to that variant's backward, any other
  to the reference. So a backward always follows the path its forward took, even if variants were switched off
  in between.
- **Products** (``matmul``): the one hook through which the references multiply matrices; ``deltaprop.fast``
  installs the BLAS library the runtime chose (``set_product``), NumPy's ``matmul`` until then.

Another array library (a GPU one) registers variants whose ``applies`` recognise its arrays; nothing in
``functional`` changes. ``tests/test_variants.py`` holds every registered variant equal to its reference on the
variant's own ``examples``: bit for bit when ``exact``, else within its stated ``rtol``/``atol``.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Example", "Variant", "op", "backward", "register", "unregister", "variants", "ops", "reference_of",
           "backward_reference_of", "reference_only", "set_enabled", "enabled", "disabled_variants", "matmul", "set_product", "product"]


@dataclass(frozen=True)
class Example:
    """One call of an op for the variant test: positional and keyword arguments of the forward (fresh arrays each
    time ``examples()`` is called), and keyword arguments of the backward."""
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    backward_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """A faster way to compute an op of ``functional``.

    ``forward`` takes the reference forward's arguments and returns what it returns (for ops with a backward,
    ``(out, cache)`` with a cache of one of the types in ``caches``); ``applies`` says, from the same arguments,
    whether this variant computes the call; ``backward(dout, cache, **kwargs)`` differentiates the caches it made.
    ``exact``: equal to the reference bit for bit; else within ``rtol``/``atol``. ``examples()`` returns calls the
    variant applies to, for the variant test. ``mirrors`` names the reference function (dotted, under
    ``deltaprop.``) whose arithmetic it repeats."""
    op: str
    name: str
    forward: Callable[..., Any]
    applies: Callable[..., bool]
    backward: Optional[Callable[..., Any]] = None
    caches: Tuple[type, ...] = ()
    priority: int = 0
    exact: bool = True
    rtol: float = 0.0
    atol: float = 0.0
    examples: Optional[Callable[[], Sequence[Example]]] = None
    mirrors: str = ""
    doc: str = ""

    @property
    def key(self) -> str:
        """``op/name``: how the variant is named in tests, settings and ``deltaprop info``."""
        return f"{self.op}/{self.name}"


_all: Dict[str, List[Variant]] = {}            # op -> every registered variant, highest priority first
_table: Dict[str, List[Variant]] = {}          # op -> those switched on (the list its forward wrapper reads)
_references: Dict[str, Callable[..., Any]] = {}
_backward_references: Dict[str, Callable[..., Any]] = {}
_by_cache: Dict[type, Variant] = {}
_on = True                                     # variants may take over forwards (``set_enabled``)
_off: set = set()                              # keys of variants switched off one by one


def op(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator of a reference forward: calls go to the first registered variant of ``name`` that applies, else to
    the reference (available as ``.reference``)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _references:
            raise ValueError(f"dispatch: op {name!r} is declared twice ({_references[name].__qualname__}, "
                             f"{fn.__qualname__})")
        _references[name] = fn
        table = _table.setdefault(name, [])

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if _on:
                for v in table:
                    if v.applies(*args, **kwargs):
                        return v.forward(*args, **kwargs)
            return fn(*args, **kwargs)
        call.reference = fn
        call.op = name
        return call
    return deco


def backward(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator of a reference backward ``fn(dout, cache, ...)``: a cache made by a variant of ``name`` goes to
    that variant's backward, any other to ``fn`` (available as ``.reference``)."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(dout: Any, cache: Any, *args: Any, **kwargs: Any) -> Any:
            v = _by_cache.get(type(cache))
            if v is not None:
                return v.backward(dout, cache, *args, **kwargs)
            return fn(dout, cache, *args, **kwargs)
        _backward_references[name] = fn
        call.reference = fn
        call.op = name
        return call
    return deco


def register(variant: Variant) -> Variant:
    """Add ``variant`` to its op's table (the op's module need not be imported yet). Its cache types route their
    backwards to it; a cache type can belong to one variant only."""
    every = _all.setdefault(variant.op, [])
    if any(v.name == variant.name for v in every):
        raise ValueError(f"dispatch: variant {variant.key!r} is registered twice")
    if variant.caches and variant.backward is None:
        raise ValueError(f"dispatch: variant {variant.key!r} names cache types but has no backward")
    for t in variant.caches:
        if t in _by_cache:
            raise ValueError(f"dispatch: cache type {t.__name__} belongs to {_by_cache[t].key!r} already")
    every.append(variant)
    every.sort(key=lambda v: -v.priority)     # stable: equal priorities keep the order of registration
    for t in variant.caches:
        _by_cache[t] = variant
    _sync(variant.op)
    return variant


def unregister(key: str) -> None:
    """Remove the variant ``op/name`` (tests register toy ones)."""
    opname, name = key.split("/", 1)
    every = _all.get(opname, [])
    for v in every:
        if v.name == name:
            every.remove(v)
            for t in v.caches:
                _by_cache.pop(t, None)
            _off.discard(key)
            _sync(opname)
            return
    raise KeyError(f"dispatch: no variant {key!r}")


def _sync(opname: str) -> None:
    """Refill the op's live table (the list its forward wrapper reads) from its variants minus those switched off."""
    _table.setdefault(opname, [])[:] = [v for v in _all.get(opname, []) if v.key not in _off]


def variants(opname: Optional[str] = None) -> List[Variant]:
    """Every registered variant (of ``opname``, or of all ops), switched off or not, in the order they are asked."""
    names = [opname] if opname is not None else sorted(_all)
    return [v for n in names for v in _all.get(n, [])]


def ops() -> List[str]:
    """The names of the ops declared by references (``op``) or named by a variant."""
    return sorted(set(_references) | set(_all))


def reference_of(opname: str) -> Callable[..., Any]:
    """The reference forward of ``opname`` (importing its module is the caller's business)."""
    try:
        return _references[opname]
    except KeyError:
        raise KeyError(f"dispatch: no reference declared for op {opname!r} (is its module imported?)") from None


def backward_reference_of(opname: str) -> Optional[Callable[..., Any]]:
    """The reference backward of ``opname``, or None for a forward-only op."""
    return _backward_references.get(opname)


def set_enabled(flag: bool, key: Optional[str] = None) -> None:
    """Let variants take over forwards (True, the default) or run every forward by its reference (False); with
    ``key`` ("op/name"), switch that one variant only. Backwards always follow their caches."""
    global _on
    if key is None:
        _on = bool(flag)
        return
    opname = key.split("/", 1)[0]
    if not any(v.key == key for v in variants(opname)):
        raise KeyError(f"dispatch: no variant {key!r}")
    (_off.discard if flag else _off.add)(key)
    _sync(opname)


def enabled(key: Optional[str] = None) -> bool:
    """Whether variants may run (``key``: whether that one may)."""
    return _on and (key is None or key not in _off)


def disabled_variants() -> List[str]:
    """Keys of the variants switched off one by one."""
    return sorted(_off)


@contextlib.contextmanager
def reference_only(flag: bool = True) -> Iterator[None]:
    """Inside this block every forward runs its reference (``flag=False``: no change)."""
    global _on
    before = _on
    _on = before and not flag
    try:
        yield
    finally:
        _on = before


# --- the product hook -------------------------------------------------------------------------------------------

_product: Callable[..., np.ndarray] = np.matmul


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``a @ b`` (``np.matmul``'s semantics, ``out`` included) through the installed product: every matrix product
    of the references goes through here."""
    return _product(a, b, out=out)


def set_product(fn: Optional[Callable[..., np.ndarray]]) -> None:
    """Install ``fn(a, b, out=None)`` as the product (None: NumPy's ``matmul``)."""
    global _product
    _product = np.matmul if fn is None else fn


def product() -> Callable[..., np.ndarray]:
    """The installed product function."""
    return _product
