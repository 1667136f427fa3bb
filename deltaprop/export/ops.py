"""ONNX pieces shared by the Darknet section converters and the ``nn`` module converters: the convolution with its
batch norm folded in or kept, the activations by name, pooling with explicit (asymmetric) pads, nearest
upsampling as ``Resize`` (never the deprecated ``Upsample``), softmax along one axis.

Every function appends nodes to a ``GraphBuilder`` and returns the name of the tensor it made; ``where`` names the
layer in a refusal."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..functional.conv_bn import bn_scale_shift
from .checks import ExportError
from .graph import GraphBuilder

#: Activations by Darknet's names (``darknet.activations``) that ONNX expresses; the rest are refused by name.
ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "tanh", "relie", "elu", "selu", "hardtan", "loggy", "ramp")
#: Darknet's leaky and relie slopes (``activations.c``).
DARKNET_SLOPES = {"leaky": 0.1, "relie": 0.01}
#: Darknet's SELU constants (``selu_activate``): a little shorter than the ONNX defaults, so they are written out.
DARKNET_SELU = (1.6732, 1.0507)


def onnx_pads(top: int, bottom: int, left: int, right: int) -> list:
    """ONNX's pads order for a 2-D window: all the begins (top, left), then all the ends (bottom, right)."""
    return [int(top), int(left), int(bottom), int(right)]


# --- batch norm (docs/equations.md §8, eval form) --------------------------------------------------

class BatchNormStats:
    """The evaluation batch norm of one layer: γ, β, running mean and variance, ε, and where ε goes (Darknet's
    forward adds it outside the root: (z − μ)/(√σ² + ε), docs/equations.md#darknet-bn; PyTorch inside:
    (z − μ)/√(σ² + ε), #bn-forward)."""

    def __init__(self, gamma, beta, mean, var, eps: float, eps_outside_root: bool = False) -> None:
        self.gamma, self.beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
        self.mean, self.var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        self.eps, self.eps_outside_root = float(eps), bool(eps_outside_root)

    def scale_shift(self) -> Tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per channel in float64: y = z·scale + shift (``functional.conv_bn.bn_scale_shift``)."""
        return bn_scale_shift(self.gamma, self.beta, self.mean, self.var, self.eps, self.eps_outside_root,
                              dtype=np.float64)


def fold(weight: np.ndarray, bias: Optional[np.ndarray], bn: BatchNormStats) -> Tuple[np.ndarray, np.ndarray]:
    """A convolution or linear layer followed by an evaluation batch norm as one layer: W' = W·scale per output
    channel, b' = b·scale + shift (a bias of shape (F,) or an untied (F, H, W) one)."""
    scale, shift = bn.scale_shift()
    w = np.asarray(weight, np.float64) * scale.reshape((-1,) + (1,) * (np.ndim(weight) - 1))
    if bias is None:
        return w, shift
    b = np.asarray(bias, np.float64)
    return w, b * scale.reshape((-1,) + (1,) * (b.ndim - 1)) + shift.reshape((-1,) + (1,) * (b.ndim - 1))


def batchnorm(b: GraphBuilder, x: str, bn: BatchNormStats, out: str) -> str:
    """``BatchNormalization`` with the running statistics. ONNX divides by √(σ² + ε); Darknet's √σ² + ε is the
    same with ε = 0 and the variance (√σ² + ε)²."""
    var, eps = ((np.sqrt(bn.var) + bn.eps) ** 2, 0.0) if bn.eps_outside_root else (bn.var, bn.eps)
    return b.op("BatchNormalization", [x, b.const(f"{out}/scale", bn.gamma), b.const(f"{out}/bias", bn.beta),
                                       b.const(f"{out}/mean", bn.mean), b.const(f"{out}/var", var)],
                out, epsilon=float(eps))


# --- convolution and dense ----------------------------------------------------------------------------

def conv(b: GraphBuilder, x: str, weight: np.ndarray, bias: Optional[np.ndarray], strides: Sequence[int],
         pads: Sequence[int], dilations: Sequence[int], group: int, out: str) -> str:
    """``Conv`` (cross-correlation, docs/equations.md#conv-forward); ``pads`` in ONNX order. A bias of shape (F,)
    goes into the Conv; an untied one (F, H_out, W_out) is added after it."""
    k = list(np.shape(weight)[2:])
    tied = bias is not None and np.ndim(bias) == 1
    ins = [x, b.const(f"{out}/weight", weight)] + ([b.const(f"{out}/bias", bias)] if tied else [])
    y = b.op("Conv", ins, out if bias is None or tied else f"{out}/conv", kernel_shape=k,
             strides=[int(s) for s in strides], pads=[int(p) for p in pads], dilations=[int(d) for d in dilations],
             group=int(group))
    if bias is None or tied:
        return y
    return b.op("Add", [y, b.const(f"{out}/untied_bias", np.asarray(bias)[None])], out)


def conv_bn(b: GraphBuilder, x: str, weight: np.ndarray, bias: Optional[np.ndarray], bn: Optional[BatchNormStats],
            fold_bn: bool, strides, pads, dilations, group: int, out: str) -> str:
    """A convolution and its batch norm: folded into the weights (``fold_bn``), or a ``BatchNormalization``."""
    if bn is not None and fold_bn:
        weight, bias = fold(weight, bias, bn)
        bn = None
    if bn is None:
        return conv(b, x, weight, bias, strides, pads, dilations, group, out)
    z = conv(b, x, weight, bias, strides, pads, dilations, group, f"{out}/conv")
    return batchnorm(b, z, bn, out)


def gemm(b: GraphBuilder, x: str, weight: np.ndarray, bias: Optional[np.ndarray], out: str) -> str:
    """y = x Wᵀ + b on (N, in) (docs/equations.md#fc-forward): ``Gemm`` with transB."""
    bias = np.zeros(np.shape(weight)[0]) if bias is None else bias
    return b.op("Gemm", [x, b.const(f"{out}/weight", weight), b.const(f"{out}/bias", bias)], out, transB=1)


# --- activations (docs/equations.md §5) -----------------------------------------------------------------

def activation(b: GraphBuilder, x: str, name: str, out: str, where: str, slope: Optional[float] = None) -> str:
    """The activation ``name`` (Darknet's names; ``slope`` overrides leaky's) applied to ``x``."""
    if name == "linear":
        return x
    if name in ("leaky", "relie"):
        return b.op("LeakyRelu", [x], out, alpha=float(DARKNET_SLOPES[name] if slope is None else slope))
    if name == "relu":
        return b.op("Relu", [x], out)
    if name == "logistic":
        return b.op("Sigmoid", [x], out)
    if name == "tanh":
        return b.op("Tanh", [x], out)
    if name == "elu":
        return b.op("Elu", [x], out, alpha=1.0)
    if name == "selu":
        return b.op("Selu", [x], out, alpha=DARKNET_SELU[0], gamma=DARKNET_SELU[1])
    if name == "hardtan":
        return b.clip(x, -1.0, 1.0, out)
    if name == "loggy":       # 2σ(x) − 1
        s = b.op("Sigmoid", [x], f"{out}/sigmoid")
        return b.op("Sub", [b.scale(s, 2.0, f"{out}/twice"), b.const(f"{out}/one", np.float32(1.0))], out)
    if name == "ramp":        # x·1[x > 0] + 0.1·x
        return b.op("Add", [b.op("Relu", [x], f"{out}/relu"), b.scale(x, 0.1, f"{out}/tenth")], out)
    raise ExportError(f"{where}: activation {name!r} has no ONNX form in deltaprop's export (exported: "
                      f"{', '.join(ACTIVATIONS)}; {name}'s piecewise-linear pieces would need a chain of Where "
                      f"nodes no runtime optimises)")


def softmax(b: GraphBuilder, x: str, axis: int, rank: int, out: str, where: str, log: bool = False) -> str:
    """Softmax (or log-softmax) along ``axis`` of a rank-``rank`` tensor. Before opset 13 ONNX's Softmax flattens
    everything from ``axis`` on, which is the same only when ``axis`` is the last."""
    axis = axis % rank
    if axis != rank - 1:
        b.require(13, where, f"{'Log' if log else ''}Softmax along axis {axis} of {rank} (not the last)")
    return b.op("LogSoftmax" if log else "Softmax", [x], out, axis=axis)


# --- pooling and resizing (docs/equations.md §4) ---------------------------------------------------------

def maxpool(b: GraphBuilder, x: str, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
            dilations: Sequence[int], out: str, where: str) -> str:
    """``MaxPool`` with ``pads`` in ONNX order (cells outside the input never win: −∞, as deltaprop's)."""
    attrs = dict(kernel_shape=[int(k) for k in kernel], strides=[int(s) for s in strides], pads=[int(p) for p in pads])
    if any(int(d) != 1 for d in dilations):
        b.require(10, where, "a dilated max pooling")
        attrs["dilations"] = [int(d) for d in dilations]
    return b.op("MaxPool", [x], out, **attrs)


def avgpool(b: GraphBuilder, x: str, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
            count_include_pad: bool, out: str) -> str:
    """``AveragePool`` (``count_include_pad``: padded zeros count in the divisor, PyTorch's default)."""
    return b.op("AveragePool", [x], out, kernel_shape=[int(k) for k in kernel], strides=[int(s) for s in strides],
                pads=[int(p) for p in pads], count_include_pad=int(bool(count_include_pad)))


def resize_nearest(b: GraphBuilder, x: str, scale_h: int, scale_w: int, out: str, where: str) -> str:
    """Nearest-neighbour upsampling by integer factors: ``Resize`` (``Upsample`` is deprecated since opset 10 and
    fails the checker), ``asymmetric`` coordinates with ``floor`` rounding, so output (i, j) reads input
    (⌊i/s⌋, ⌊j/s⌋): each input cell copied into an s×s block, as deltaprop's. The empty ``roi`` is an input
    Resize-11 requires."""
    b.require(11, where, "Resize with 'asymmetric' coordinates and 'floor' rounding (nearest upsampling)")
    roi = b.const(f"{out}/roi", np.zeros(0, np.float32))
    scales = b.const(f"{out}/scales", np.array([1, 1, scale_h, scale_w], np.float32))
    return b.op("Resize", [x, roi, scales], out, mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")


__all__ = ["ACTIVATIONS", "BatchNormStats", "fold", "batchnorm", "conv", "conv_bn", "gemm", "activation", "softmax",
           "maxpool", "avgpool", "resize_nearest", "onnx_pads"]
