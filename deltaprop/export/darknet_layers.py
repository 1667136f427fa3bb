"""A cfg network (``DarknetNet``) as an ONNX graph: one converter per section kind, reading the layer's plan at the
export size (``darknet.plan_network``: shapes, geometry) and its arrays in Darknet's layout
(``get_darknet_array``: the ``.weights`` names), so each node computes what the layer's eval forward computes.

Tensor names: ``input``; each layer's output ``<kind>_<index>`` (``convolutional_0``, ``yolo_16``); its inner
steps ``<kind>_<index>/<step>``. The outputs are Darknet's (``NetworkPlan.output_indices``): the ``[yolo]`` layers'
activated tensors, else the last layer before any ``[cost]``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..darknet import DarknetNet, NetworkPlan, plan_network
from ..darknet.layers.batchnorm import STANDARD_EPS
from ..errors import ConfigError
from ..functional.norm_darknet import EPS_FORWARD as DARKNET_EPS
from . import ops
from .checks import ExportError
from .graph import GraphBuilder


@dataclass
class Layer:
    """What a converter reads: the cfg layer (its arrays), its plan at the export size, the names and (C, H, W)
    shapes of its inputs."""
    module: Any
    spec: Any
    inputs: List[str]
    in_shapes: List[Tuple[int, int, int]]
    fold_bn: bool

    @property
    def where(self) -> str:
        return f"layer {self.spec.index} [{self.spec.type}]"

    @property
    def name(self) -> str:
        return f"{self.spec.type}_{self.spec.index}"

    def array(self, key: str) -> np.ndarray:
        """The layer's ``.weights`` array ``key`` (biases, scales, rolling_mean, rolling_variance, weights)."""
        return np.asarray(self.module.get_darknet_array(key))

    def batchnorm(self) -> Optional[ops.BatchNormStats]:
        """The layer's evaluation batch norm (Darknet's ε outside the root in Darknet numerics), or None."""
        if not self.spec.attrs.get("batch_normalize"):
            return None
        bn = getattr(self.module, "bn", None)
        if bn is not None and hasattr(bn, "eval_eps"):
            eps, outside = bn.eval_eps()          # the numerics' and the fork's place of ε (AlexeyAB: in the root)
        else:
            darknet = getattr(self.module, "numerics", "darknet") == "darknet"
            eps, outside = (DARKNET_EPS, True) if darknet else (STANDARD_EPS, False)
        return ops.BatchNormStats(self.array("scales"), self.array("biases"), self.array("rolling_mean"),
                                  self.array("rolling_variance"), eps, eps_outside_root=outside)


def convolutional(b: GraphBuilder, L: Layer) -> str:
    """conv (Darknet's ``padding`` on every side) → batch norm → activation (``convolutional_layer.c``)."""
    a = L.spec.attrs
    c = L.spec.in_shape[0]
    w = L.array("weights").reshape(a["filters"], c // a["groups"], a["size"], a["size"])
    bn = L.batchnorm()
    bias = None if bn is not None else L.array("biases")
    p = a["padding"]
    z = ops.conv_bn(b, L.inputs[0], w, bias, bn, L.fold_bn, [a["stride"]] * 2, [p] * 4, [1, 1], a["groups"],
                    L.name if a["activation"] == "linear" else f"{L.name}/conv")
    return ops.activation(b, z, a["activation"], L.name, L.where)


def connected(b: GraphBuilder, L: Layer) -> str:
    """flatten (C, H, W order) → x Wᵀ + b → batch norm → activation, output (N, outputs, 1, 1)."""
    a = L.spec.attrs
    n_in = int(np.prod(L.spec.in_shape))
    w = L.array("weights")
    if w.size != n_in * a["outputs"]:
        raise ExportError(f"{L.where}: its weights take {w.size // a['outputs']} inputs, the export size gives it "
                          f"{n_in} (a [connected] layer's input size is fixed)")
    w = w.reshape(a["outputs"], n_in)
    bn = L.batchnorm()
    bias = None if bn is not None else L.array("biases")
    if bn is not None and L.fold_bn:
        w, bias = ops.fold(w, bias, bn)
        bn = None
    flat = b.op("Flatten", [L.inputs[0]], f"{L.name}/flatten", axis=1)
    z = b.reshape(ops.gemm(b, flat, w, bias, f"{L.name}/gemm"), [0, a["outputs"], 1, 1], f"{L.name}/nchw")
    if bn is not None:
        z = ops.batchnorm(b, z, bn, f"{L.name}/bn")
    return ops.activation(b, z, a["activation"], L.name, L.where)


def maxpool(b: GraphBuilder, L: Layer) -> str:
    """Darknet's window geometry (``maxpool_layer.c``, docs/equations.md#darknet-maxpool): windows start at
    −⌊padding/2⌋ and the bottom/right pads reach the last window, so the 2×2 stride-1 pool of yolov3-tiny gets
    pads (0, 0, 1, 1) and keeps 13×13 (symmetric pads, or none, would give 14×14 or 12×12)."""
    a = L.spec.attrs
    top, bottom, left, right = a["pads"]
    return ops.maxpool(b, L.inputs[0], [a["size"]] * 2, [a["stride"]] * 2, ops.onnx_pads(top, bottom, left, right),
                       [1, 1], L.name, L.where)


def avgpool(b: GraphBuilder, L: Layer) -> str:
    """The global average of each channel: (N, C, H, W) → (N, C, 1, 1)."""
    return b.op("GlobalAveragePool", [L.inputs[0]], L.name)


def route(b: GraphBuilder, L: Layer) -> str:
    """The listed outputs joined along the channels; with ``groups``/``group_id`` (AlexeyAB's route) the
    ``group_id``-th of ``groups`` equal channel slices of each input, joined."""
    groups, gid = int(L.spec.attrs.get("groups", 1)), int(L.spec.attrs.get("group_id", 0))
    parts = list(L.inputs)
    if groups > 1:
        parts = []
        for i, (name, shape) in enumerate(zip(L.inputs, L.in_shapes)):
            step = shape[0] // groups
            parts.append(b.slice(name, 1, gid * step, (gid + 1) * step, f"{L.name}/part{i}"))
    if len(parts) == 1:
        return parts[0]
    return b.op("Concat", parts, L.name, axis=1)


def shortcut(b: GraphBuilder, L: Layer) -> str:
    """act(α·previous + β·from) (``shortcut_layer.c``)."""
    a = L.spec.attrs
    prev = b.scale(L.inputs[0], a["alpha"], f"{L.name}/alpha")
    other = b.scale(L.inputs[1], a["beta"], f"{L.name}/beta")
    z = b.op("Add", [prev, other], L.name if a["activation"] == "linear" else f"{L.name}/sum")
    return ops.activation(b, z, a["activation"], L.name, L.where)


def upsample(b: GraphBuilder, L: Layer) -> str:
    """Nearest upsampling by ``stride`` as ``Resize`` (``ops.resize_nearest``), times ``scale``."""
    s, scale = L.spec.attrs["stride"], L.spec.attrs["scale"]
    y = ops.resize_nearest(b, L.inputs[0], s, s, L.name if scale == 1.0 else f"{L.name}/resize", L.where)
    return b.scale(y, scale, L.name)


def logistic(b: GraphBuilder, L: Layer) -> str:
    return b.op("Sigmoid", [L.inputs[0]], L.name)


def softmax(b: GraphBuilder, L: Layer) -> str:
    """Softmax of x/temperature over each of ``groups`` slices of a sample, or over the channels at each pixel
    (``spatial``), returned in the input's (N, C, H, W) shape."""
    a = L.spec.attrs
    c, h, w = L.spec.in_shape
    x = L.inputs[0]
    if a["temperature"] != 1.0:
        x = b.op("Div", [x, b.const(f"{L.name}/temperature", np.float32(a["temperature"]))], f"{L.name}/scaled")
    if a["spatial"]:
        z = ops.softmax(b, b.reshape(x, [0, c, h * w], f"{L.name}/pixels"), 1, 3, f"{L.name}/softmax", L.where)
    else:
        g = a["groups"]
        z = ops.softmax(b, b.reshape(x, [0, g, c * h * w // g], f"{L.name}/groups"), 2, 3, f"{L.name}/softmax",
                        L.where)
    return b.reshape(z, [0, c, h, w], L.name)


def yolo(b: GraphBuilder, L: Layer) -> str:
    """The ``[yolo]`` head's activated tensor (``yolo_layer.c``, docs/equations.md#yolo-decode): per anchor the
    planes [x, y, w, h, objectness, classes...]; the logistic on x, y, objectness and the classes, not on w, h
    (the decode takes e^w, e^h). With ``scale_x_y`` s (yolov4), x, y become σ·s − (s − 1)/2. Channel slices of
    the 4-D map (no 5-D reshape), which every runtime runs."""
    m = L.module
    if getattr(m, "new_coords", 0):
        raise ExportError(f"{L.where}: new_coords=1 heads are not exported (deltaprop does not run them)")
    k = int(L.spec.attrs["classes"]) + 5
    n_anchors = len(L.spec.attrs["mask"])
    s = float(getattr(m, "scale_x_y", L.spec.attrs.get("scale_x_y", 1.0)))
    parts = []
    for i in range(n_anchors):
        base = i * k
        xy = b.op("Sigmoid", [b.slice(L.inputs[0], 1, base, base + 2, f"{L.name}/a{i}/xy_raw")], f"{L.name}/a{i}/xy")
        if s != 1.0:
            xy = b.op("Sub", [b.scale(xy, s, f"{L.name}/a{i}/xy_scaled"),
                              b.const(f"{L.name}/a{i}/xy_shift", np.float32(0.5 * (s - 1.0)))], f"{L.name}/a{i}/xy_s")
        wh = b.slice(L.inputs[0], 1, base + 2, base + 4, f"{L.name}/a{i}/wh")
        rest = b.op("Sigmoid", [b.slice(L.inputs[0], 1, base + 4, base + k, f"{L.name}/a{i}/obj_cls_raw")],
                    f"{L.name}/a{i}/obj_cls")
        parts += [xy, wh, rest]
    return b.op("Concat", parts, L.name, axis=1)


def passthrough(b: GraphBuilder, L: Layer) -> str:
    """[dropout] (the identity in inference) and [cost] (its forward is the identity): no node."""
    return L.inputs[0]


#: section kind -> converter(builder, layer) -> the name of the layer's output tensor
CONVERTERS: Dict[str, Callable[[GraphBuilder, Layer], str]] = {
    "convolutional": convolutional, "connected": connected, "maxpool": maxpool, "avgpool": avgpool,
    "route": route, "shortcut": shortcut, "upsample": upsample, "logistic": logistic, "softmax": softmax,
    "yolo": yolo, "dropout": passthrough, "cost": passthrough,
}


def plan_at(net: DarknetNet, size: Optional[Tuple[int, int]]) -> NetworkPlan:
    """The network's plan at ``size`` (width, height) (the same as ``DarknetNet.resize`` plans, without touching
    ``net``); ExportError where a layer cannot take that size."""
    c, h, w = net.input_shape
    if size is None or tuple(size) == (w, h):
        return net.plan
    sections = [net.plan.net_section] + [s.section for s in net.plan.specs]
    try:
        return plan_network(sections, size[0], size[1], None, None)
    except ConfigError as e:
        raise ExportError(f"size {size[0]}x{size[1]}: {e}") from None


def needed_layers(plan: NetworkPlan) -> List[int]:
    """The layers the outputs depend on, in order (a [cost] layer or a head nothing reads is left out)."""
    need = set()
    todo = list(plan.output_indices())
    while todo:
        i = todo.pop()
        if i >= 0 and i not in need:
            need.add(i)
            todo.extend(plan.specs[i].inputs)
    return sorted(need)


def build_darknet(b: GraphBuilder, net: DarknetNet, size: Optional[Tuple[int, int]], fold_bn: bool
                  ) -> Tuple[Tuple[int, ...], List[Tuple[str, Tuple[int, ...]]], Dict[str, Any]]:
    """Convert ``net`` at ``size``: (input shape, [(output name, shape)], metadata)."""
    plan = plan_at(net, size)
    names: Dict[int, str] = {-1: "input"}
    b.fresh("input")
    shapes = {-1: plan.input_shape, **{s.index: s.out_shape for s in plan.specs}}
    for i in needed_layers(plan):
        spec = plan.specs[i]
        if spec.type not in CONVERTERS:
            raise ExportError(f"layer {i} [{spec.type}]: no ONNX converter for this section kind")
        L = Layer(net.layers[i], spec, [names[j] for j in spec.inputs], [shapes[j] for j in spec.inputs], fold_bn)
        names[i] = CONVERTERS[spec.type](b, L)
    outputs = []
    for i in plan.output_indices():
        spec = plan.specs[i]
        want = f"{spec.type}_{i}"
        if names[i] != want:      # an output that is another layer's tensor (after dropout, route of one input)
            names[i] = b.op("Identity", [names[i]], want)
        outputs.append((names[i], spec.out_shape))
    yolos = [{"output": names[s.index], "layer": s.index, "classes": s.attrs["classes"],
              "anchors": [list(net.layers[s.index].anchors[m]) for m in s.attrs["mask"]]}
             for s in plan.specs if s.type == "yolo" and s.index in plan.output_indices()]
    meta: Dict[str, Any] = {"deltaprop.model": "darknet", "deltaprop.numerics": net.numerics,
                            "deltaprop.input": {"name": "input", "shape": list(plan.input_shape),
                                                "pixels": "RGB scaled to [0, 1]"}}
    if yolos:
        meta["deltaprop.yolo"] = yolos
    return plan.input_shape, outputs, meta


__all__ = ["CONVERTERS", "Layer", "build_darknet", "plan_at", "needed_layers"]
