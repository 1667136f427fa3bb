"""Choices made per machine beyond the BLAS library, registered by the code they tune (the direct convolution
loops' largest tap count, ``deltaprop/fast/tune_conv_direct.py``), so that the runtime runs them without importing
that code.

A tunable is ``choose(measure)`` and ``forget()``:

- ``choose(measure)`` puts this machine's choice in use and returns its record (a dict with at least
  ``"reason"``): the cached choice when there is one; else, with ``measure`` (``deltaprop.tune()``, the CLI,
  ``deltaprop info``), a fresh measurement, cached; else (the first product of a process that did not tune) a
  documented default, without measuring;
- ``forget()`` removes its cache and its in-process choice; True when there was a cache file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional


@dataclass(frozen=True)
class Tunable:
    name: str
    choose: Callable[[bool], Dict[str, object]]
    forget: Callable[[], bool]


_registered: Dict[str, Tunable] = {}


def register_tunable(name: str, choose: Callable[[bool], Dict[str, object]], forget: Callable[[], bool]) -> Tunable:
    """Register (or replace, on a module's re-import) the tunable ``name``; they run in registration order."""
    t = Tunable(name, choose, forget)
    _registered[name] = t
    return t


def registered() -> List[Tunable]:
    return list(_registered.values())


def choose(name: str, measure: bool = False) -> Optional[Dict[str, object]]:
    """The tunable ``name``'s ``choose(measure)`` (its user asks on first need: without ``measure``, the cached
    choice or the default); None when no such tunable is registered."""
    t = _registered.get(name)
    return None if t is None else t.choose(measure)


def choose_all(measure: bool) -> Dict[str, Dict[str, object]]:
    """Every tunable's ``choose(measure)``: {name: record}."""
    return {t.name: t.choose(measure) for t in registered()}


def forget_all() -> bool:
    """Every tunable's ``forget()``; True when any had a cache file."""
    found = [t.forget() for t in registered()]
    return any(found)
