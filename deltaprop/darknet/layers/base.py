"""What every cfg layer shares: its plan (shapes, parameter count, FLOPs, worked out before any array is
allocated), the ``DarknetLayer`` module base (cfg options, numerics, the ``.weights`` layout, the roles a
network asks about) and the ``LossLayer`` base of the layers that train against a truth."""
from __future__ import annotations

import abc
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...errors import ShapeError, ValueRangeError
from ...nn.module import Module
from ...nn.parameter import Parameter
from ..cfg import Section

Shape = Tuple[int, int, int]  # (channels, height, width) of one sample
NUMERICS = ("darknet", "standard")


@dataclass
class LayerSpec:
    """One cfg layer, planned: inputs (absolute indices, −1 = the network input), shapes, cost, attributes."""
    index: int
    type: str
    section: Section
    inputs: Tuple[int, ...]
    in_shape: Shape
    out_shape: Shape
    attrs: Dict[str, Any] = field(default_factory=dict)
    n_params: int = 0
    flops: float = 0.0          # multiply-adds × 2 per sample
    workspace: int = 0          # elements of temporary buffers per sample (im2col columns)
    table: str = ""             # Darknet's layer-table row, after the index

    @property
    def out_size(self) -> int:
        """Values per sample of the output: C·H·W."""
        c, h, w = self.out_shape
        return c * h * w


@dataclass
class PlanContext:
    """What a section's planner may look at: its index, the shapes so far, the [net] options."""
    index: int
    input_shape: Shape
    shapes: List[Shape]
    net: Dict[str, Any]
    fork: str = "pjreddie"      # the Darknet whose defaults and formulas the layer follows ("alexeyab")

    @property
    def prev_shape(self) -> Shape:
        """(C, H, W) of the previous layer's output (the network input for layer 0)."""
        return self.shapes[-1] if self.shapes else self.input_shape

    @property
    def prev_index(self) -> int:
        """Index of the previous layer, −1 for the network input."""
        return self.index - 1  # −1 for layer 0: the network input


@dataclass
class LossResult:
    """What a loss layer's ``loss`` returns for one forward pass: the layer's index, its ``cost`` (what
    Darknet sums into the reported loss), ``grad_output`` = ∂loss/∂(its output) and ``grad_input`` = the
    gradient it sends to the layer below, both in the engine's sign (−Darknet's delta; in Darknet numerics
    the same array where Darknet passes its delta down without a Jacobian), and ``assignment``: the
    decisions the loss took from the truth (``[yolo]``'s targets and masks), which a later call holds fixed
    when given back as ``fixed``; None for a loss that decides nothing."""
    layer: int
    cost: float
    grad_output: Optional[np.ndarray]
    grad_input: Optional[np.ndarray]
    assignment: Optional[Any] = None


def common_attrs(sec: Section) -> Dict[str, Any]:
    """The keys Darknet reads for every layer (parse_network_cfg), checked."""
    for key in ("numload", "truth"):
        if sec.get_int(key, 0) != 0:
            raise sec.error(key, "is not supported by deltaprop (only 0)")
    return {
        "learning_rate_scale": sec.get_float("learning_rate", 1.0),
        "stop_backward": bool(sec.get_int("stopbackward", 0)),
        "onlyforward": bool(sec.get_int("onlyforward", 0)),
        "dontsave": bool(sec.get_int("dontsave", 0)),
        "dontload": bool(sec.get_int("dontload", 0)),
        "dontloadscales": bool(sec.get_int("dontloadscales", 0)),
        "smooth": sec.get_float("smooth", 0.0),
    }


def require_unsupported_zero(sec: Section, *keys: str) -> None:
    """A ConfigError naming the first of ``keys`` set to anything but 0 (a Darknet option deltaprop lacks)."""
    for key in keys:
        if sec.get_float(key, 0.0) != 0.0:
            raise sec.error(key, "is not supported by deltaprop (only 0)")


def fits(sec: Section, what: str, n: int, need: int, key: str) -> None:
    """A ConfigError naming ``key`` when a window of ``need`` cells does not fit an input of ``n``."""
    if n < need:
        raise sec.error(key, f"{what}: a window of {need} does not fit an input of {n}")


class DarknetLayer(Module):
    """Base of the cfg layer modules. ``numerics`` is "darknet" (Darknet's formulas) or "standard"
    (the textbook/PyTorch ones); ``options`` are the cfg section's options, written back by ``save_cfg``.

    Class attributes say what role a layer plays, so that the network asks them instead of comparing section
    names: ``kind`` is the section name (for messages and ``save_cfg``); ``detection_head`` marks a layer
    whose output is decoded into boxes (``[yolo]``: a network with such heads outputs them all);
    ``network_output`` is False for a layer that Darknet's ``get_network_output`` skips (``[cost]``)."""

    kind = ""
    detection_head = False
    network_output = True
    #: the summation order of the layer's products ("pairwise": the engine's BLAS; "darknet": ``functional.darknet_sums``),
    #: set by the network (``DarknetNet.set_sums``)
    sums = "pairwise"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        super().__init__()
        self.index = spec.index
        self.fork = spec.attrs.get("fork", "pjreddie")
        self.options: "OrderedDict[str, str]" = spec.section.values()
        self.in_shape = spec.in_shape
        self.out_shape = spec.out_shape
        self.inputs = spec.inputs
        self.cfg_line = spec.section.line
        for k in ("learning_rate_scale", "stop_backward", "onlyforward", "dontsave", "dontload",
                  "dontloadscales", "smooth"):
            object.__setattr__(self, k, spec.attrs.get(k))
        self.numerics = "darknet"
        self.set_numerics(numerics)

    def set_numerics(self, numerics: str) -> None:
        """Switch between Darknet's formulas and the standard ones (batch norm; loss deltas)."""
        if numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
        for m in self.modules():
            if "numerics" in m.__dict__:
                object.__setattr__(m, "numerics", numerics)

    def resize(self, spec: LayerSpec) -> None:
        """Take the shapes of ``spec``, this layer planned for a new network input size
        (``DarknetNet.resize``, Darknet's ``resize_network``); parameters are kept."""
        self.in_shape, self.out_shape = spec.in_shape, spec.out_shape
        object.__setattr__(self, "_cache", None)

    # --- .weights layout: names and float counts in file order --------------------------------
    def weight_layout(self, loading: bool = True) -> List[Tuple[str, int]]:
        """(name, count) of the float32 arrays this layer keeps in a ``.weights`` file, in file order."""
        return []

    def _target(self, name: str):
        """(module, attribute) holding the Darknet array ``name``."""
        raise KeyError(f"layer {self.index} [{self.kind}] has no weights array {name!r}")

    def get_darknet_array(self, name: str) -> np.ndarray:
        """The array ``name`` flattened in Darknet's memory order (a view)."""
        mod, attr = self._target(name)
        val = getattr(mod, attr)
        return (val.data if isinstance(val, Parameter) else val).reshape(-1)

    def set_darknet_array(self, name: str, flat: np.ndarray) -> None:
        """Replace the array ``name`` from a flat float array (converted to the layer's dtype)."""
        mod, attr = self._target(name)
        val = getattr(mod, attr)
        if isinstance(val, Parameter):
            val.data = flat.astype(val.data.dtype).reshape(val.data.shape)
        else:
            object.__setattr__(mod, attr, flat.astype(val.dtype).reshape(val.shape))

    def _check_shape(self, x: np.ndarray) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.in_shape):
            c, h, w = self.in_shape
            raise ShapeError(f"layer {self.index} [{self.kind}] expects input (N, {c}, {h}, {w}), "
                             f"got shape {x.shape}")

    def extra_repr(self) -> str:
        return f"{self.index}: [{self.kind}] {self.in_shape} -> {self.out_shape}"



class LossLayer(DarknetLayer, abc.ABC):
    """A layer that trains against a truth (``[softmax]``, ``[cost]``, ``[logistic]``, ``[yolo]``): after the
    forward pass, ``loss`` computes its cost and gradients (``darknet.train_loss.compute_losses`` calls it for
    every such layer, from the last back). Only loss layers may read a loss layer's output in a trainable cfg."""

    @abc.abstractmethod
    def loss(self, x: np.ndarray, out: np.ndarray, truth: Any, g_out: Optional[np.ndarray] = None,
             fixed: Optional[Any] = None) -> LossResult:
        """The loss of this forward pass against ``truth``: ``x`` the layer's input, ``out`` its output,
        ``g_out`` what later loss layers sent to its output (None when nothing), ``fixed`` the ``assignment``
        of an earlier result to hold (None: decide it from this truth). Returns a ``LossResult``."""

    def _no_decisions(self, fixed: Optional[Any]) -> None:
        """A ValueRangeError when an assignment is given to a loss that takes no decisions to hold fixed."""
        if fixed is not None:
            raise ValueRangeError(f"layer {self.index} [{self.kind}]: its loss takes no decisions from the truth, "
                             f"so there is no assignment to hold fixed (got a {type(fixed).__name__})")
