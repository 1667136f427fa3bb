"""Darknet models in Python: ``.cfg`` networks and ``.weights`` files (docs/darknet.md, docs/equations.md §10).

>>> net = deltaprop.darknet.load("yolov3-tiny.cfg", "yolov3-tiny.weights")   # doctest: +SKIP
>>> outs = net.predict(x)            # the two [yolo] outputs
>>> net.layer_outputs[12].shape      # cfg layer 12's output, Darknet's numbering
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from .. import backend
from ..errors import ConfigError
from ..atomic import atomic_write_bytes
from .cfg import Section, parse_cfg, parse_cfg_text
from .layers import NUMERICS
from .network import (DEFAULT_BUDGET, DarknetNet, NetworkPlan, check_budget, get_memory_budget, parse_net_options,
                      plan_network, set_memory_budget)
from .weights import WeightsReport, load_weights, load_weights_bytes, save_weights, weights_to_bytes

SHIPPED_CFG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfg")


def shipped_names() -> List[str]:
    """The names of the cfgs shipped in ``deltaprop/cfg`` (without ``.cfg``), sorted."""
    return sorted(f[:-4] for f in os.listdir(SHIPPED_CFG_DIR) if f.endswith(".cfg"))


def _shipped_match(name: str) -> Optional[str]:
    """The shipped cfg a name means: its file name without folders or ``.cfg`` (``cfg/yolov3-tiny.cfg``, as
    Darknet's command lines write it), ``_`` and ``-`` alike (``digits_tiny``), case aside; None when none is."""
    base = os.path.basename(os.fspath(name))
    stem = base[:-4] if base.lower().endswith(".cfg") else base
    key = stem.lower().replace("_", "-")
    for have in shipped_names():
        if have.lower().replace("_", "-") == key:
            return os.path.join(SHIPPED_CFG_DIR, have + ".cfg")
    return None


def shipped_cfg(name: str) -> str:
    """Path of a cfg shipped in ``deltaprop/cfg`` (``"yolov3-tiny"``, ``"yolov3-tiny.cfg"``, ``"cfg/yolov3-tiny.cfg"``,
    ``"yolov3_tiny"``); a ConfigError listing the shipped names otherwise."""
    path = _shipped_match(name)
    if path is None:
        raise ConfigError(f"no shipped cfg {name!r} (shipped: {', '.join(shipped_names())})")
    return path


def _resolve(cfg_path) -> str:
    """A cfg path as given when the file exists; else the shipped cfg it names (``shipped_cfg``: a bare name, or
    Darknet's ``cfg/NAME.cfg``); else a ConfigError saying the file does not exist and listing the shipped cfgs."""
    path = os.fspath(cfg_path)
    if os.path.exists(path) or path.endswith(".weights"):
        return path
    folder = os.path.dirname(os.path.normpath(path))
    shipped = _shipped_match(path) if folder in ("", "cfg") else None    # a name, or Darknet's cfg/NAME.cfg
    if shipped is not None:
        return shipped
    raise ConfigError(f"{path}: no such cfg file, and no shipped cfg of that name (shipped: "
                      f"{', '.join(shipped_names())})")


def plan_cfg(cfg_path, width: Optional[int] = None, height: Optional[int] = None,
             channels: Optional[int] = None, batch: Optional[int] = None, fork: Optional[str] = None) -> NetworkPlan:
    """Parse a cfg file and infer every layer's shapes and cost without allocating (``summary``)."""
    return plan_network(parse_cfg(_resolve(cfg_path)), width, height, channels, batch, fork)


def build(sections: List[Section], numerics: str = "darknet", dtype=None, width: Optional[int] = None,
          height: Optional[int] = None, channels: Optional[int] = None, batch: Optional[int] = None,
          budget: Optional[int] = None, fork: Optional[str] = None, sums: str = "pairwise") -> DarknetNet:
    """A network from parsed sections; refused (ConfigError) beyond the memory budget, before allocating."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    plan = plan_network(sections, width, height, channels, batch, fork)
    dt = backend.get_default_dtype() if dtype is None else dtype
    check_budget(plan, budget, np.dtype(dt).itemsize)
    return DarknetNet(plan, numerics, dtype=dt, sums=sums)


def load(cfg_path, weights_path=None, upto: Optional[int] = None, numerics: str = "darknet", dtype=None,
         width: Optional[int] = None, height: Optional[int] = None, channels: Optional[int] = None,
         batch: Optional[int] = None, budget: Optional[int] = None, fork: Optional[str] = None,
         sums: str = "pairwise") -> DarknetNet:
    """Build the network of ``cfg_path`` (a path, or the name of a shipped cfg) and load ``weights_path``.

    A weights file of only the first M whole layers (``yolov3-tiny.conv.15``) loads those and the rest keep
    Darknet's initialisation; ``net.weights_report.message`` then says ``loaded layers 0..M-1 of N from FILE; the
    rest start fresh`` (None for a whole file). ``upto=N`` loads only the first N layers (Darknet's
    ``load_weights_upto``).
    ``numerics``: "darknet" (Darknet's formulas: BN with ε outside the root, ...) or "standard".
    ``fork``: "pjreddie" or "alexeyab", whose Darknet the layers follow (batch norm's ε and rolling rate, the
    [yolo] training); None: AlexeyAB's for a cfg using options only it has (``[route] groups``, ``[yolo]
    scale_x_y``, mish, ...), else pjreddie's. ``sums``: "pairwise" (default: the engine's BLAS sums, the more
    exact) or "darknet" (batch norm summed in Darknet's order, so a training step matches a ``-O2`` Darknet build;
    slower). ``width``/``height``/``channels``/``batch`` override the [net] values; ``budget`` (bytes) overrides
    the memory budget (``set_memory_budget``, default 4 GiB). Without weights, Darknet's random initialisation.
    """
    net = build(parse_cfg(_resolve(cfg_path)), numerics, dtype, width, height, channels, batch, budget, fork, sums)
    if weights_path is not None:
        load_weights(net, weights_path, upto)
    return net


def load_cfg_text(text: str, weights: Optional[bytes] = None, upto: Optional[int] = None,
                  numerics: str = "darknet", dtype=None, name: str = "<text>", **overrides) -> DarknetNet:
    """Like ``load`` from cfg text (and optionally ``.weights`` bytes), e.g. as stored in a checkpoint;
    ``overrides``: width, height, channels, batch, budget, fork, sums."""
    net = build(parse_cfg_text(text, name), numerics, dtype, **overrides)
    if weights is not None:
        load_weights_bytes(net, weights, upto, name)
    return net


def cfg_text(net: DarknetNet) -> str:
    """The cfg text of ``net`` (what ``save_cfg`` writes)."""
    return net.cfg_text()


def save_cfg(net: DarknetNet, path) -> None:
    """Write ``net`` as a Darknet ``.cfg`` (atomically). Reading it back gives the same network, and
    writing that again gives the same text."""
    atomic_write_bytes(path, cfg_text(net).encode("utf-8"))


__all__ = ["load", "load_cfg_text", "save_cfg", "save_weights", "load_weights", "load_weights_bytes",
           "weights_to_bytes", "WeightsReport", "cfg_text", "plan_cfg", "build", "parse_cfg", "parse_cfg_text", "DarknetNet",
           "NetworkPlan", "plan_network", "parse_net_options", "check_budget", "get_memory_budget",
           "set_memory_budget", "DEFAULT_BUDGET", "NUMERICS", "shipped_cfg", "shipped_names", "SHIPPED_CFG_DIR"]
