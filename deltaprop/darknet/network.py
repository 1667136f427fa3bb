"""A cfg network: plan every layer (shapes, parameters, FLOPs; nothing allocated), check the memory
budget, then build the ``DarknetNet`` graph (``nn.Graph``) whose node i is cfg layer i."""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import backend
from ..runtime.settings import env_int
from ..errors import ConfigError, ShapeError
from ..nn.graph import Graph
from .cfg import Section, cfg_fork, format_sections, unsupported_error
from .layers import LAYER_KINDS, NUMERICS, DarknetLayer, LayerSpec, PlanContext
from . import eval_program
from .activations import DarknetActivation
from .layers.bn_order import FORKS, activation_of, check_fork_sums, install
from .train_loss import NetworkLoss, backpropagate, compute_losses

#: Default memory budget for building a network (parameters + activations + im2col workspace).
DEFAULT_BUDGET = 4 * 2 ** 30
_budget = env_int("DELTAPROP_DARKNET_BUDGET", DEFAULT_BUDGET, minimum=1)

#: The most elements one layer's output (or the input) may have: 2⁴⁸ (a PiB in float32), beyond any memory
#: budget. Checked while planning, so that every size and cost after it stays a finite float.
MAX_ELEMENTS = 2 ** 48

POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "sig", "random")


def get_memory_budget() -> int:
    """Bytes a cfg network may allocate (env ``DELTAPROP_DARKNET_BUDGET``, default 4 GiB)."""
    return _budget


def set_memory_budget(nbytes: int) -> None:
    """Set the bytes a cfg network may allocate before it is built (``load(..., budget=)`` per call)."""
    global _budget
    if int(nbytes) <= 0:
        raise ValueError(f"memory budget must be positive, got {nbytes}")
    _budget = int(nbytes)


# --- [net] ---------------------------------------------------------------------------------------

def parse_net_options(sec: Section, **overrides: Optional[int]) -> "OrderedDict[str, Any]":
    """[net] hyperparameters with Darknet's defaults (parse_net_options), checked. ``overrides``
    (width, height, channels, batch) replace the file's values before the derived defaults are computed."""
    o: "OrderedDict[str, Any]" = OrderedDict()
    o["batch"] = sec.get_int("batch", 1, lo=1)
    o["subdivisions"] = sec.get_int("subdivisions", 1, lo=1)
    o["width"] = sec.get_int("width", 0, lo=0)
    o["height"] = sec.get_int("height", 0, lo=0)
    o["channels"] = sec.get_int("channels", 0, lo=0)
    for key, val in overrides.items():
        if val is not None:
            if int(val) < 1:
                raise ConfigError(f"{key} override must be ≥ 1, got {val}")
            o[key] = int(val)
            if key == "batch" and o["subdivisions"] > o["batch"]:
                o["subdivisions"] = 1
    if o["batch"] < o["subdivisions"]:
        raise sec.error("subdivisions", f"subdivisions={o['subdivisions']} exceeds batch={o['batch']} "
                                        f"(the batch in memory is batch/subdivisions)")
    o["inputs"] = sec.get_int("inputs", o["width"] * o["height"] * o["channels"], lo=0)
    o["learning_rate"] = sec.get_float("learning_rate", 0.001)
    o["momentum"] = sec.get_float("momentum", 0.9)
    o["decay"] = sec.get_float("decay", 0.0001)
    o["burn_in"] = sec.get_int("burn_in", 0, lo=0)
    o["power"] = sec.get_float("power", 4.0)
    o["policy"] = sec.get_str("policy", "constant")
    if o["policy"] not in POLICIES:
        raise sec.error("policy", f"unknown policy {o['policy']!r} (Darknet's: {', '.join(POLICIES)})")
    o["step"] = sec.get_int("step", 1)
    o["scale"] = sec.get_float("scale", 1.0)
    o["gamma"] = sec.get_float("gamma", 1.0)
    o["steps"] = sec.get_int_list("steps", [])
    o["scales"] = sec.get_float_list("scales", [])
    if o["policy"] == "steps" and (not o["steps"] or len(o["steps"]) != len(o["scales"])):
        raise sec.error("steps", f"policy=steps needs as many steps as scales, got {len(o['steps'])} and "
                                 f"{len(o['scales'])}")
    o["max_batches"] = sec.get_int("max_batches", 0, lo=0)
    o["time_steps"] = sec.get_int("time_steps", 1, lo=1)
    o["max_crop"] = sec.get_int("max_crop", o["width"] * 2)
    o["min_crop"] = sec.get_int("min_crop", o["width"])
    for k, d in (("angle", 0.0), ("aspect", 1.0), ("saturation", 1.0), ("exposure", 1.0), ("hue", 0.0),
                 ("jitter", 0.0), ("clip", 0.0), ("B1", 0.9), ("B2", 0.999), ("eps", 1e-7)):
        o[k] = sec.get_float(k, d)
    for k in ("adam", "center", "notruth", "random"):
        o[k] = sec.get_int(k, 0)
    w = o["width"]
    o["max_ratio"] = sec.get_float("max_ratio", o["max_crop"] / w if w else 0.0)
    o["min_ratio"] = sec.get_float("min_ratio", o["min_crop"] / w if w else 0.0)
    return o


def input_shape_of(sec: Section, opts: Dict[str, Any]) -> Tuple[int, int, int]:
    """(C, H, W) of the network input from [net]'s channels, height and width (or its ``inputs`` count)."""
    c, h, w = opts["channels"], opts["height"], opts["width"]
    if c and h and w:
        return c, h, w
    if opts["inputs"]:
        return opts["inputs"], 1, 1
    raise sec.error(None, "no input size: give width, height and channels (or inputs)")


# --- plan ------------------------------------------------------------------------------------------

@dataclass
class NetworkPlan:
    """Everything known about a cfg network before allocating it."""
    net_section: Section
    net_options: "OrderedDict[str, Any]"
    input_shape: Tuple[int, int, int]
    specs: List[LayerSpec]
    fork: str = "pjreddie"      # whose Darknet the layers follow: "pjreddie" or "alexeyab" (``cfg.cfg_fork``)

    @property
    def n_params(self) -> int:
        """Trainable parameters of every layer."""
        return sum(s.n_params for s in self.specs)

    @property
    def bflops(self) -> float:
        """Billions of floating-point operations of one forward pass (Darknet's BFLOPs)."""
        return sum(s.flops for s in self.specs) / 1e9

    def memory_bytes(self, batch: int = 1, itemsize: int = 4) -> int:
        """Parameters + every layer's output (kept for ``layer_outputs``) + the largest workspace."""
        acts = sum(s.out_size for s in self.specs) + math.prod(self.input_shape)  # Python ints: no wrap-around
        work = max([s.workspace for s in self.specs] + [0])
        return itemsize * (self.n_params + batch * (acts + work))

    def output_indices(self) -> List[int]:
        """The layers whose outputs are the network's: the detection heads ([yolo]), else the last layer that
        Darknet's ``get_network_output`` does not skip (it skips [cost])."""
        classes = [LAYER_KINDS[s.type][1] for s in self.specs]
        heads = [s.index for s, cls in zip(self.specs, classes) if cls.detection_head]
        if heads:
            return heads
        for s, cls in zip(reversed(self.specs), reversed(classes)):
            if cls.network_output:
                return [s.index]
        return [len(self.specs) - 1]

    def table(self) -> List[str]:
        """Darknet's layer table (``parse_network_cfg``'s printout) with a total BFLOPs line."""
        lines = ["layer     filters    size              input                output"]
        lines += [f"{s.index:5d} {s.table}" for s in self.specs]
        lines.append(f"total {self.bflops:.3f} BFLOPs, {self.n_params:,} parameters")
        return lines


def plan_network(sections: Sequence[Section], width: Optional[int] = None, height: Optional[int] = None,
                 channels: Optional[int] = None, batch: Optional[int] = None,
                 fork: Optional[str] = None) -> NetworkPlan:
    """Shape inference for parsed sections; ``width``/``height``/``channels``/``batch`` override [net]'s.
    ``fork``: "pjreddie" or "alexeyab" (the Darknet whose defaults and formulas the layers follow); None: the
    cfg's own (``cfg.cfg_fork``: AlexeyAB's when it uses options only that fork has)."""
    if not sections or sections[0].type != "net":
        raise ConfigError("a cfg starts with a [net] section")
    if fork is None:
        fork = cfg_fork(sections)
    elif fork not in FORKS:
        raise ValueError(f"fork must be one of {FORKS}, got {fork!r}")
    net_sec = sections[0]
    opts = parse_net_options(net_sec, width=width, height=height, channels=channels, batch=batch)
    shape = input_shape_of(net_sec, opts)
    if math.prod(shape) > MAX_ELEMENTS:
        c, h, w = shape
        raise net_sec.error(None, f"the input {w}×{h}×{c} has {math.prod(shape):,} elements, more than the "
                                  f"{MAX_ELEMENTS:,} any network may hold")
    if len(sections) < 2:
        raise ConfigError(f"{net_sec.file}: the cfg has no layers after [net]")
    specs: List[LayerSpec] = []
    shapes: List[Tuple[int, int, int]] = []
    for i, sec in enumerate(sections[1:]):
        if sec.type == "net":
            raise ConfigError(f"{sec.file}:{sec.line}: [net] must be the first section and appear once")
        if sec.type not in LAYER_KINDS:
            raise unsupported_error(sec)
        planner = LAYER_KINDS[sec.type][0]
        spec = planner(sec, PlanContext(i, shape, shapes, opts, fork))
        if spec.out_size > MAX_ELEMENTS or spec.workspace > MAX_ELEMENTS:
            c, h, w = spec.out_shape
            raise sec.error(None, f"layer {i} would output {w}×{h}×{c} = {spec.out_size:,} elements (workspace "
                                  f"{spec.workspace:,}), more than the {MAX_ELEMENTS:,} any network may hold")
        specs.append(spec)
        shapes.append(spec.out_shape)
    return NetworkPlan(net_sec, opts, shape, specs, fork)


def mib(nbytes: int) -> str:
    """``nbytes`` in MiB with one decimal, computed in integers (no float overflow for any size)."""
    tenths = (int(nbytes) * 10 + 2 ** 19) // 2 ** 20
    return f"{tenths // 10:,}.{tenths % 10}"


def check_budget(plan: NetworkPlan, budget: Optional[int] = None, itemsize: int = 4, where: str = "") -> None:
    """ConfigError if building ``plan`` would need more than ``budget`` bytes."""
    budget = get_memory_budget() if budget is None else int(budget)
    need = plan.memory_bytes(1, itemsize)
    if need > budget:
        c, h, w = plan.input_shape
        raise ConfigError(f"{where or plan.net_section.file}: this network needs about {mib(need)} MiB "
                          f"({plan.n_params:,} parameters and the activations of one {w}×{h}×{c} input), "
                          f"more than the memory budget of {mib(budget)} MiB "
                          f"(raise it with budget= or DELTAPROP_DARKNET_BUDGET)")


# --- the network ---------------------------------------------------------------------------------

class DarknetNet(Graph):
    """A network built from a Darknet cfg. Node i is cfg layer i (``layers[i]``, ``layer_outputs[i]``).

    ``net_options``: the [net] hyperparameters (batch, subdivisions, width, height, channels,
    learning_rate, momentum, decay, burn_in, policy, steps, scales, max_batches, power, ...).
    ``seen``: images trained on (from/to the ``.weights`` header). ``numerics``: "darknet" or "standard".
    Forward returns the [yolo] outputs (a list) when there are any, else the last non-[cost] output.
    ``fork``: whose Darknet the numbers follow ("pjreddie" or "alexeyab": batch norm's ε and rolling rate, the
    [yolo] training); ``sums``: "pairwise" (the engine's BLAS sums, default) or "darknet" (batch norm summed in
    Darknet's order, as a ``-O2`` build: ``set_sums``; docs/darknet.md, "Summation order and forks").

    Training (any cfg with loss layers: [yolo], [softmax], [cost], [logistic]): ``net.train(); net(x);
    loss = net.loss(targets); net.backward()``; then ``net.layer_grads[i]`` is ∂loss/∂(output of layer i)
    (engine sign: −Darknet's delta) and ``net.last_loss`` the ``train_loss.NetworkLoss`` of that pass (each
    loss layer's result, the [yolo] heads' assignments and statistics).
    """

    last_loss: Optional[NetworkLoss]        # the last ``loss``'s result (None before any)

    def __init__(self, plan: NetworkPlan, numerics: str = "darknet", dtype=None, sums: str = "pairwise") -> None:
        super().__init__()
        if numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
        check_fork_sums(plan.fork, sums)
        dt = np.dtype(dtype or backend.get_default_dtype())
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "net_options", plan.net_options)
        object.__setattr__(self, "_net_keys", list(plan.net_section.options))
        object.__setattr__(self, "_net_parsed", dict(plan.net_options))
        object.__setattr__(self, "input_shape", plan.input_shape)
        object.__setattr__(self, "numerics", numerics)
        object.__setattr__(self, "fork", plan.fork)
        object.__setattr__(self, "sums", sums)
        object.__setattr__(self, "seen", 0)
        object.__setattr__(self, "weights_version", (0, 2, 0))
        object.__setattr__(self, "weights_report", None)    # what the last .weights load read (WeightsReport)
        object.__setattr__(self, "source", plan.net_section.file)
        object.__setattr__(self, "_last_input", None)
        object.__setattr__(self, "_pending_loss", None)
        object.__setattr__(self, "layer_grads", [])
        object.__setattr__(self, "keep_layer_grads", True)     # backward() copies ∂/∂(every layer's output)
        object.__setattr__(self, "last_loss", None)
        for spec in plan.specs:
            cls = LAYER_KINDS[spec.type][1]
            self.add(cls(spec, numerics, dtype=dt), spec.inputs)
        self.set_outputs(plan.output_indices())
        self._install_batchnorm()
        # what deltaprop.io stores so that a checkpoint rebuilds this network (load_cfg_text)
        object.__setattr__(self, "_architecture", {"kind": "darknet_cfg", "cfg": self.cfg_text(),
                                                   "numerics": numerics})

    @property
    def layers(self) -> List[DarknetLayer]:
        """The layers in cfg order."""
        return self.nodes  # type: ignore[return-value]

    def set_sums(self, sums: str) -> "DarknetNet":
        """Sum batch norm's statistics and deltas in Darknet's order ("darknet": ``functional.darknet_sums``, what
        a ``-O2`` Darknet computes, slower) or with the engine's BLAS sums ("pairwise", the default)."""
        check_fork_sums(self.fork, sums)
        object.__setattr__(self, "sums", sums)
        self._install_batchnorm()
        return self

    def _install_batchnorm(self) -> None:
        """Give every batch norm the module that computes this net's fork and summation order
        (``layers.bn_order.install``; the plain module for pjreddie's fork with pairwise sums); with Darknet's
        sums, every activation repeats the C code's roundings too (``DarknetActivation.c_rounding``)."""
        for layer in self.layers:
            install(layer, self.fork, self.sums)
            object.__setattr__(layer, "sums", self.sums)      # [convolutional]: its product's summation order
            act = activation_of(layer)
            if isinstance(act, DarknetActivation):
                object.__setattr__(act, "c_rounding", self.sums == "darknet")

    def set_numerics(self, numerics: str) -> "DarknetNet":
        """Switch every layer between Darknet's formulas and the standard ones."""
        for layer in self.layers:
            layer.set_numerics(numerics)
        object.__setattr__(self, "numerics", numerics)
        return self

    def forward(self, x: np.ndarray):
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            c, h, w = self.input_shape
            raise ShapeError(f"{os.path.basename(self.source)}: expected input (N, {c}, {h}, {w}), got shape "
                             f"{getattr(x, 'shape', None)}")
        object.__setattr__(self, "_last_input", x if self.training else None)
        object.__setattr__(self, "_pending_loss", None)
        if not self.training and not backend.is_grad_enabled():
            return eval_program.planned_forward(self, x)     # inference: docs/inference.md
        if self.keeps_cache:
            eval_program.refold(self)                        # the weights may change after this forward
        return super().forward(x)

    # --- training: loss layers -----------------------------------------------------------------
    @property
    def detection_heads(self) -> List[DarknetLayer]:
        """The layers whose outputs are decoded into boxes (the [yolo] layers), in cfg order."""
        return [layer for layer in self.layers if layer.detection_head]

    def loss(self, targets, numerics: Optional[str] = None, assignments: Optional[Dict[int, Any]] = None) -> float:
        """After ``net(x)`` in train mode: every loss layer's cost against ``targets`` (classifier truths
        (N, ...); for [yolo] one (k, 5) array of ``[class, x, y, w, h]`` rows per image, normalised).
        Returns the loss Darknet reports, ``Σ costs / number of loss layers / N``; ``last_loss`` holds the
        whole ``NetworkLoss`` (``costs``, ``total``: what ``backward`` differentiates, ``yolo_stats``,
        ``assignments``, each layer's result). ``assignments`` ({layer: YoloAssignment}, e.g. an earlier
        ``last_loss.assignments``) holds the [yolo] targets and masks fixed."""
        if self._last_input is None:
            raise ShapeError("net.loss: run net(x) in train mode (net.train()) first")
        nl = compute_losses(self, self._last_input, targets, numerics, assignments)
        object.__setattr__(self, "_pending_loss", nl)
        object.__setattr__(self, "last_loss", nl)
        return nl.reported

    # The last loss's parts under their earlier names (read by the trainers and tests).
    @property
    def loss_costs(self) -> Dict[int, float]:
        """Each loss layer's cost in the last ``loss`` ({} before any)."""
        return self.last_loss.costs if self.last_loss is not None else {}

    @property
    def loss_total(self) -> float:
        """Σ costs of the last ``loss``: the function ``backward`` differentiates."""
        return self.last_loss.total if self.last_loss is not None else 0.0

    @property
    def yolo_stats(self) -> List[Dict[str, float]]:
        """Per [yolo] head, Darknet's statistics of the last ``loss`` (``NetworkLoss.yolo_stats``)."""
        return self.last_loss.yolo_stats if self.last_loss is not None else []

    @property
    def yolo_assignments(self) -> Dict[int, Any]:
        """{layer: YoloAssignment} of the last ``loss``, to hold fixed in a later one."""
        return self.last_loss.assignments if self.last_loss is not None else {}

    def backward(self, dout=None, keep_grads: Optional[bool] = None) -> Optional[np.ndarray]:  # type: ignore[override]
        """Without ``dout``: back-propagate the last ``loss`` (parameter gradients ADDED into ``.grad``) and,
        with ``keep_grads`` (default: the ``keep_layer_grads`` attribute, True), set ``layer_grads`` (a copy
        of every layer's output gradient: as much memory again as the activations). With ``dout``: the
        graph's backward from the outputs. Returns ∂/∂input (None when the input gradient is off)."""
        if keep_grads is None:
            keep_grads = bool(self.keep_layer_grads)
        if dout is not None:
            keep: Optional[List[Optional[np.ndarray]]] = [None] * len(self) if keep_grads else None
            g = self.graph_backward(dout, keep=keep)
            object.__setattr__(self, "layer_grads", keep or [])
            return g
        nl = self._pending_loss
        if nl is None:
            raise ShapeError("net.backward(): call net.loss(targets) after the forward pass first")
        object.__setattr__(self, "_pending_loss", None)
        d_input, grads = backpropagate(self, nl, keep=keep_grads)
        object.__setattr__(self, "layer_grads", grads if keep_grads else [])
        return d_input

    def overwriting_layers(self) -> List[int]:
        """The layers whose backward REPLACES their input's gradient instead of adding to it: in Darknet numerics,
        every [convolutional] layer of AlexeyAB's fork. Its ``col2im_cpu_ext`` (and the GPU's ``col2im_gpu_ext``)
        zeroes the input layer's delta before writing the convolution's, so whatever later layers had added there
        (a [route] reading the same output: in yolov4-tiny the CSP blocks' routes and the second head's route to
        layer 27) is lost. pjreddie's ``col2im_cpu`` adds."""
        if self.fork != "alexeyab" or self.numerics != "darknet":
            return []
        return [i for i, layer in enumerate(self.layers) if layer.kind == "convolutional"]

    def graph_backward(self, dout, keep=None) -> Optional[np.ndarray]:
        """``Graph.backward``: gradients of the forward's outputs back through every layer; for AlexeyAB's fork
        in Darknet numerics, the same walk with ``overwriting_layers`` replacing their input's gradient."""
        overwrite = set(self.overwriting_layers())
        if not overwrite:
            return Graph.backward(self, dout, keep=keep)
        sel = list(self.output_indices)
        douts = [dout] if isinstance(dout, np.ndarray) else list(dout)
        if len(douts) != len(sel):
            raise ShapeError(f"graph_backward: {len(sel)} output(s) but {len(douts)} gradient(s) given")
        grads: List[Optional[np.ndarray]] = [None] * len(self.nodes)
        grad_in: Optional[np.ndarray] = None

        def acc(j: int, g: Optional[np.ndarray]) -> None:
            nonlocal grad_in
            if g is None:
                return
            if j < 0:
                grad_in = g if grad_in is None else grad_in + g
            else:
                grads[j] = g if grads[j] is None else grads[j] + g

        for i, g in zip(sel, douts):
            acc(i, g)
        for i in range(len(self.nodes) - 1, -1, -1):
            g, grads[i] = grads[i], None
            if g is None:
                continue
            if keep is not None:
                keep[i] = g.copy()
            mod, ins = self.nodes[i], self.node_inputs(i)
            if getattr(mod, "stop_backward", False):
                break
            if -1 in ins:
                object.__setattr__(mod, "needs_input_grad", self.needs_input_grad)
            if getattr(mod, "multi_input", False):
                for j, d in zip(ins, mod.backward(g)):
                    acc(j, d)
                continue
            d = mod.backward(g)
            if i in overwrite and ins[0] >= 0:
                grads[ins[0]] = None              # AlexeyAB's col2im_cpu_ext: the input's delta is zeroed first
            acc(ins[0], d)
        return grad_in

    def resize(self, width: int, height: int) -> "DarknetNet":
        """Darknet's ``resize_network``: the same layers and parameters at a new input size (multi-scale
        training); ConfigError where a layer cannot take it (a [connected] layer's input size is fixed)."""
        sections = [self.plan.net_section] + [s.section for s in self.plan.specs]
        plan = plan_network(sections, width, height, None, None, self.fork)
        check_budget(plan, None, np.dtype(self.dtype).itemsize)
        for layer, spec in zip(self.layers, plan.specs):
            layer.resize(spec)
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "input_shape", plan.input_shape)
        object.__setattr__(self, "_last_input", None)
        return self

    def predict(self, x: np.ndarray):
        """Inference (eval mode, no caches kept); outputs of (N, C, 1, 1) are returned as (N, C)."""
        was = self.training
        self.eval()
        try:
            with backend.no_grad():
                out = self(x)
        finally:
            self.train(was)
        if isinstance(out, np.ndarray) and out.ndim == 4 and out.shape[2:] == (1, 1):
            return out.reshape(out.shape[0], -1)
        return out

    def summary(self, input_shape=None, dtype=None, print_fn=print) -> List[str]:  # type: ignore[override]
        """Print and return Darknet's layer table (layer, filters, size/stride, input → output, BFLOPs).
        ``input_shape``/``dtype`` are accepted for ``Module.summary`` compatibility and ignored: a cfg
        network's input size is fixed by its [net] section (or the overrides given to ``load``)."""
        lines = self.plan.table()
        for line in lines:
            print_fn(line)
        return lines

    def cfg_blocks(self) -> List[tuple]:
        """(section type, [(key, value), ...]) of the [net] section and every layer, for ``save_cfg``."""
        opts = self.net_options
        parsed = self._net_parsed
        keys = list(self._net_keys) + [k for k in opts if k not in self._net_keys and opts[k] != parsed.get(k)]
        net_items = [(k, opts[k]) for k in keys if k in opts]
        blocks = [("net", net_items)]
        for layer in self.layers:
            blocks.append((layer.kind, list(layer.options.items())))
        return blocks

    def cfg_text(self) -> str:
        """The network as Darknet cfg text (what ``save_cfg`` writes)."""
        return format_sections(self.cfg_blocks(), ["written by deltaprop (Darknet cfg format)"])

    def extra_repr(self) -> str:
        c, h, w = self.input_shape
        return (f"{len(self)} layers, input {w}x{h}x{c}, numerics={self.numerics}, fork={self.fork}, "
                f"sums={self.sums}")
