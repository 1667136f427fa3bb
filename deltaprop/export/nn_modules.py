"""An ``nn.Sequential`` (the models ``deltaprop train`` and ``deltaprop.io`` save: LeNet, the MLP, conv-BN nets) as
an ONNX graph: one converter per module class. The shapes between layers come from one forward pass of zeros
through the model itself (eval mode, no cache), so each converter knows its input and output sizes and every
size the model refuses is refused here too, naming the layer.

Tensor names: ``input``, ``output``; each layer's output ``<class>_<path>`` (``conv2d_0``, ``linear_7``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import backend, models, nn
from ..errors import DeltapropError
from ..functional.im2col import padding4
from ..functional.pool_geometry import pair2, pool_padding
from . import ops
from .checks import ExportError
from .graph import GraphBuilder

#: Input size of an image model whose file does not say it (the MNIST digits ``deltaprop train`` trains on).
DEFAULT_SIZE = (28, 28)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class Node:
    """One leaf module as a converter sees it: its dotted path, shapes without the batch, its input tensor, the
    name its output must take, and the batch norm folded into it (a conv or linear layer followed by one)."""
    path: str
    module: Any
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    x: str
    out: str
    bn: Optional[ops.BatchNormStats] = None
    folded: bool = False          # a batch norm whose statistics went into the layer before it

    @property
    def where(self) -> str:
        return f"layer {self.path!r} ({type(self.module).__name__})"


def leaves(model, prefix: str = "") -> List[Tuple[str, Any]]:
    """(dotted path, module) of each layer in forward order; nested ``Sequential``s are opened."""
    out = []
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out += leaves(child, f"{path}.")
        else:
            out.append((path, child))
    return out


def built_size(model) -> Optional[int]:
    """The ``input_size`` a registry model was built for (its argument, else its builder's default), or None."""
    arch = model.__dict__.get("_architecture") or {}
    if arch.get("kind") != "registry" or not models.is_registered(str(arch.get("model"))):
        return None
    param = models.signature(arch["model"]).parameters.get("input_size")
    if param is None:
        return None
    return int(arch.get("kwargs", {}).get("input_size", param.default))


def input_shape(model, layers: List[Tuple[str, Any]], size: Optional[Tuple[int, int]]) -> Tuple[int, ...]:
    """The input of one sample: (C, H, W) for a model that starts with a 2-D convolution or flattens an image into
    its first linear layer, (C, L) for a 1-D convolution, (F,) for one whose first linear layer reads vectors.
    Without ``size``: the ``input_size`` the model was built for, else 28×28 (MNIST)."""
    built = built_size(model)
    w, h = size if size is not None else ((built, built) if built else DEFAULT_SIZE)
    flattened = False
    for path, m in layers:
        if isinstance(m, nn.Conv2d):
            if len(m.kernel_size) == 1:
                if size is not None and h != 1:
                    raise ExportError(f"size {w}x{h}: layer {path!r} (Conv1d) reads (C, L) sequences; give --size L 1")
                return (m.in_channels, w)
            return (m.in_channels, h, w)
        if isinstance(m, nn.Flatten):
            flattened = True
        if isinstance(m, nn.Linear):
            if not flattened:
                if size is not None:
                    raise ExportError(f"size {w}x{h}: layer {path!r} (Linear) reads vectors of "
                                      f"{m.in_features}; the model takes no image size")
                return (m.in_features,)
            if m.in_features % (w * h):
                raise ExportError(f"size {w}x{h}: layer {path!r} (Linear) takes {m.in_features} inputs, which no "
                                  f"number of {w}x{h} channels gives (its input size is fixed)")
            return (m.in_features // (w * h), h, w)
    raise ExportError(f"{type(model).__name__}: no convolution or linear layer tells the input size")


def trace_shapes(model, layers: List[Tuple[str, Any]], shape: Tuple[int, ...], sized: bool = False
                 ) -> List[Tuple[int, ...]]:
    """The shape (without the batch) entering each layer and leaving the last, from one eval forward of zeros;
    ``sized``: the size was asked for (the refusal then says the model takes another)."""
    was = model.training
    model.eval()
    x = np.zeros((1,) + tuple(shape), dtype=model.dtype)
    shapes = [tuple(shape)]
    try:
        with backend.no_grad():
            for path, m in layers:
                try:
                    x = m.forward(x)
                except (DeltapropError, ValueError) as e:
                    size = "x".join(str(d) for d in shape[::-1][:2]) if len(shape) >= 2 else str(shape[0])
                    hint = "the model takes another input size" if sized else "give its input size with --size W H"
                    raise ExportError(f"input {size}: layer {path!r} ({type(m).__name__}) cannot take it: {e}; "
                                      f"{hint}") from None
                shapes.append(tuple(x.shape[1:]))
    finally:
        model.train(was)
    return shapes


def bn_stats(m, where: str) -> ops.BatchNormStats:
    """The evaluation statistics of an ``nn`` batch norm (PyTorch's: ε inside the root)."""
    if not m.track_running_stats:
        raise ExportError(f"{where}: without running statistics it normalises with each batch's own, which an "
                          f"inference graph does not compute")
    c = m.num_features
    g = m.weight.data if m.affine else np.ones(c)
    beta = m.bias.data if m.affine else np.zeros(c)
    return ops.BatchNormStats(g, beta, m.running_mean, m.running_var, m.eps)


# --- converters ---------------------------------------------------------------------------------------

def conv_pads(m, nd: int) -> List[int]:
    """ONNX pads of an ``nn.Conv2d``/``Conv1d``: an int, a pair, (top, bottom, left, right), (left, right) or
    "same" (the odd cell at the bottom/right, as PyTorch)."""
    if m.padding == "same":
        tot = [d * (k - 1) for k, d in zip(m.kernel_size, m.dilation)]
        return [t // 2 for t in tot] + [t - t // 2 for t in tot]
    if nd == 1:
        p = m.padding
        lo, hi = (p, p) if isinstance(p, (int, np.integer)) else ((p[0], p[0]) if len(p) == 1 else tuple(p))
        return [int(lo), int(hi)]
    return ops.onnx_pads(*padding4(m.padding))


def conv(b: GraphBuilder, n: Node) -> str:
    """Conv2d/Conv1d: groups, dilation, asymmetric or "same" pads; a true convolution (``mode="convolution"``)
    has its kernel flipped (docs/equations.md#conv-vs-corr); an untied bias (one per output position) is added
    after the Conv for the export size."""
    m = n.module
    nd = len(m.kernel_size)
    w = m.weight.data
    if m.mode == "convolution":
        w = w[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]
    bias = None if m.bias is None else m.bias.data
    return ops.conv_bn(b, n.x, w, bias, n.bn, True, m.stride, conv_pads(m, nd), m.dilation, m.groups, n.out)


def linear(b: GraphBuilder, n: Node) -> str:
    m = n.module
    if len(n.in_shape) != 1:
        raise ExportError(f"{n.where}: reads {n.in_shape} per sample; ONNX's Gemm takes (N, features)")
    w, bias = m.weight.data, None if m.bias is None else m.bias.data
    if n.bn is not None:
        w, bias = ops.fold(w, bias, n.bn)
    return ops.gemm(b, n.x, w, bias, n.out)


def batchnorm(b: GraphBuilder, n: Node) -> str:
    """BatchNorm1d/2d, BatchNormAct2d (+ activation), BatchNormActPool2d (+ 2×2/2 max pooling): the statistics are
    folded into the layer before (``folded``) or kept as ``BatchNormalization``."""
    m = n.module
    act = getattr(m, "activation", "linear")
    pool = isinstance(m, nn.BatchNormActPool2d)
    tail = act != "linear" or pool
    y = n.x
    if not n.folded:
        stats = bn_stats(m, n.where)
        if len(n.in_shape) == 1:          # (N, C): ONNX's BatchNormalization wants (N, C, D...)
            y = ops.batchnorm(b, b.reshape(y, [0, n.in_shape[0], 1], f"{n.out}/ncl"), stats, f"{n.out}/bn")
            y = b.reshape(y, [0, n.in_shape[0]], n.out if not tail else f"{n.out}/nc")
        else:
            y = ops.batchnorm(b, y, stats, n.out if not tail else f"{n.out}/bn")
    if act != "linear":
        y = ops.activation(b, y, act, n.out if not pool else f"{n.out}/act", n.where,
                           slope=m.negative_slope if act == "leaky" else None)
    if pool:
        y = ops.maxpool(b, y, [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], n.out, n.where)
    return y


def elementwise(b: GraphBuilder, n: Node) -> str:
    m = n.module
    if isinstance(m, nn.LeakyReLU):
        return ops.activation(b, n.x, "leaky", n.out, n.where, slope=m.negative_slope)
    if isinstance(m, nn.Sigmoid):
        return b.op("Sigmoid", [b.scale(n.x, m.steepness, f"{n.out}/steep")], n.out)
    return ops.activation(b, n.x, {nn.ReLU: "relu", nn.Tanh: "tanh"}[type(m)], n.out, n.where)


def softmax(b: GraphBuilder, n: Node) -> str:
    return ops.softmax(b, n.x, n.module.dim, len(n.in_shape) + 1, n.out, n.where,
                       log=isinstance(n.module, nn.LogSoftmax))


def _pool_pads(n: Node, k, s, pads4, d=(1, 1)) -> List[int]:
    """ONNX pads that give the traced output size with ONNX's floor rule: ``ceil_mode``'s extra windows become
    extra bottom/right padding (never inside a max, and refused for averages where it would change a divisor)."""
    top, bottom, left, right = pads4
    ends = []
    for n_in, n_out, kk, ss, dd, lo, hi in zip(n.in_shape[-2:], n.out_shape[-2:], k, s, d, (top, left),
                                              (bottom, right)):
        need = (n_out - 1) * ss + dd * (kk - 1) + 1 - (n_in + lo)
        ends.append(max(hi, need))
    return [top, left, ends[0], ends[1]]


def maxpool(b: GraphBuilder, n: Node) -> str:
    m = n.module
    k, s, d = pair2(m.kernel_size, "kernel_size"), pair2(m.stride, "stride"), pair2(m.dilation, "dilation")
    return ops.maxpool(b, n.x, k, s, _pool_pads(n, k, s, pool_padding(m.padding), d), d, n.out, n.where)


def _same_as_floor(n: Node, pads: Sequence[int], pads4: Sequence[int]) -> None:
    """ExportError when ``ceil_mode`` needed padding beyond the layer's own (``pads4``): a partial window."""
    if (pads[2], pads[3]) != (pads4[1], pads4[3]):
        raise ExportError(f"{n.where}: ceil_mode adds a partial window at this size, whose divisor ONNX's "
                          f"AveragePool/LpPool counts differently; export a size where ceil_mode changes nothing")


def avgpool(b: GraphBuilder, n: Node) -> str:
    m = n.module
    k, s = pair2(m.kernel_size, "kernel_size"), pair2(m.stride, "stride")
    pads4 = pool_padding(m.padding)
    pads = _pool_pads(n, k, s, pads4)
    _same_as_floor(n, pads, pads4)
    return ops.avgpool(b, n.x, k, s, pads, m.count_include_pad, n.out)


def lppool(b: GraphBuilder, n: Node) -> str:
    """(Σ|x|^p)^{1/p} per window (docs/equations.md#lppool): ``LpPool`` for an integer p, the max of |x| for p = ∞."""
    m = n.module
    k, s = pair2(m.kernel_size, "kernel_size"), pair2(m.stride, "stride")
    pads = _pool_pads(n, k, s, (0, 0, 0, 0))
    _same_as_floor(n, pads, (0, 0, 0, 0))
    if m.norm_type == float("inf"):
        return ops.maxpool(b, b.op("Abs", [n.x], f"{n.out}/abs"), k, s, pads, [1, 1], n.out, n.where)
    if m.norm_type != int(m.norm_type):
        raise ExportError(f"{n.where}: norm_type={m.norm_type:g}; ONNX's LpPool takes an integer p")
    return b.op("LpPool", [n.x], n.out, kernel_shape=list(k), strides=list(s), pads=pads, p=int(m.norm_type))


def adaptive_avgpool(b: GraphBuilder, n: Node) -> str:
    """Global average (output 1×1), or equal windows where the output size divides the input size."""
    (h, w), (oh, ow) = n.in_shape[-2:], n.out_shape[-2:]
    if (oh, ow) == (1, 1):
        return b.op("GlobalAveragePool", [n.x], n.out)
    if (h, w) == (oh, ow):
        return passthrough(b, n)
    if h % oh or w % ow:
        raise ExportError(f"{n.where}: {h}x{w} -> {oh}x{ow} needs windows of unequal sizes, which ONNX's "
                          f"AveragePool has not (export a size divisible by the output)")
    return ops.avgpool(b, n.x, (h // oh, w // ow), (h // oh, w // ow), [0, 0, 0, 0], True, n.out)


def flatten(b: GraphBuilder, n: Node) -> str:
    m = n.module
    rank = len(n.in_shape) + 1
    start, end = m.start_dim % rank, m.end_dim % rank
    if start == 0:
        raise ExportError(f"{n.where}: start_dim=0 merges the batch into the features; ONNX keeps the batch")
    if end == rank - 1 and start == 1:
        return b.op("Flatten", [n.x], n.out, axis=1)
    return b.reshape(n.x, [0] + list(n.out_shape), n.out)


def upsample(b: GraphBuilder, n: Node) -> str:
    sf = n.module.scale_factor
    sh, sw = (sf, sf) if isinstance(sf, (int, np.integer)) else sf
    return ops.resize_nearest(b, n.x, sh, sw, n.out, n.where)


def passthrough(b: GraphBuilder, n: Node) -> str:
    """Dropout (the identity in inference) and Identity: no node."""
    return n.x


#: module class -> converter; a subclass without an entry of its own is refused (its forward may differ)
CONVERTERS: Dict[type, Callable[[GraphBuilder, Node], str]] = {
    nn.Conv2d: conv, nn.Conv1d: conv, nn.Linear: linear,
    nn.BatchNorm1d: batchnorm, nn.BatchNorm2d: batchnorm, nn.BatchNormAct2d: batchnorm,
    nn.BatchNormActPool2d: batchnorm,
    nn.ReLU: elementwise, nn.LeakyReLU: elementwise, nn.Sigmoid: elementwise, nn.Tanh: elementwise,
    nn.Softmax: softmax, nn.LogSoftmax: softmax,
    nn.MaxPool2d: maxpool, nn.AvgPool2d: avgpool, nn.LPPool2d: lppool, nn.AdaptiveAvgPool2d: adaptive_avgpool,
    nn.Flatten: flatten, nn.Dropout: passthrough, nn.Identity: passthrough, nn.Upsample: upsample,
}


def _foldable(layer, nxt) -> bool:
    """A conv/linear layer directly followed by a batch norm with running statistics (folded by default)."""
    return type(layer) in (nn.Conv2d, nn.Conv1d, nn.Linear) and isinstance(nxt, BATCHNORMS) and nxt.track_running_stats


def build_sequential(b: GraphBuilder, model, size: Optional[Tuple[int, int]], fold_bn: bool
                     ) -> Tuple[Tuple[int, ...], List[Tuple[str, Tuple[int, ...]]], Dict[str, Any]]:
    """Convert an ``nn.Sequential``: (input shape, [("output", shape)], metadata)."""
    if type(model) is not nn.Sequential:
        raise ExportError(f"{type(model).__name__}: deltaprop exports nn.Sequential models and Darknet cfg networks")
    layers = leaves(model)
    if not layers:
        raise ExportError("an empty Sequential has nothing to export")
    for path, m in layers:
        if type(m) not in CONVERTERS:
            raise ExportError(f"layer {path!r} ({type(m).__name__}): no ONNX converter for this module (exported: "
                              f"{', '.join(sorted(c.__name__ for c in CONVERTERS))})")
    shape = input_shape(model, layers, size)
    shapes = trace_shapes(model, layers, shape, size is not None)
    b.fresh("input")
    x, folded_next = "input", False
    for i, (path, m) in enumerate(layers):
        last = i == len(layers) - 1
        n = Node(path, m, shapes[i], shapes[i + 1], x, "output" if last else f"{type(m).__name__.lower()}_{path}",
                 folded=folded_next)
        folded_next = False
        if fold_bn and not last and _foldable(m, layers[i + 1][1]):
            n.bn = bn_stats(layers[i + 1][1], f"layer {layers[i + 1][0]!r} ({type(layers[i + 1][1]).__name__})")
            folded_next = True
        x = CONVERTERS[type(m)](b, n)
    if x != "output":            # the last layer passed its input through (Dropout, Identity)
        x = b.op("Identity", [x], "output")
    meta = {"deltaprop.model": "sequential", "deltaprop.input": {"name": "input", "shape": list(shape)}}
    return shape, [(x, shapes[-1])], meta


__all__ = ["CONVERTERS", "Node", "build_sequential", "leaves", "input_shape", "trace_shapes"]
