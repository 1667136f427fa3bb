"""``[convolutional]``: convolution (Conv-1..3), then its tail: batch norm + activation, or the activation
(Darknet's ``convolutional_layer.c``). ``pad=1`` means padding = size/2, else the ``padding`` key; output
``(h + 2·padding − size)/stride + 1``; weights ``[filters][channels/groups][size][size]``."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from ... import backend
from ...functional import darknet_sums
from ...functional.conv import conv2d_backward, conv2d_forward
from ...functional.conv_bn import TAIL_ACTIVATIONS
from ...nn.parameter import Parameter
from ..activations import ACTIVATIONS
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs, fits, require_unsupported_zero
from .batchnorm import accumulate_weight_bias, activate_in_place, attach_tail, tail, weights_target


def activation_key(sec: Section, default: str) -> str:
    """The section's ``activation=`` (``default`` when absent); a ConfigError for a name Darknet does not have."""
    name = sec.get_str("activation", default)
    if name not in ACTIVATIONS:
        raise sec.error("activation", f"unknown activation {name!r} (Darknet's: {', '.join(ACTIVATIONS)})")
    return name


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [convolutional] layer's spec (§3 geometry: output size, parameter count, FLOPs) from its section."""
    c, h, w = ctx.prev_shape
    filters = sec.get_int("filters", 1, lo=1)
    size = sec.get_int("size", 1, lo=1)
    stride = sec.get_int("stride", 1, lo=1)
    pad = sec.get_int("pad", 0, lo=0)
    padding = size // 2 if pad else sec.get_int("padding", 0, lo=0)
    groups = sec.get_int("groups", 1, lo=1)
    bn = bool(sec.get_int("batch_normalize", 0))
    act = activation_key(sec, "logistic")
    require_unsupported_zero(sec, "binary", "xnor", "flipped")
    sec.get_float("dot", 0.0)
    if c % groups or filters % groups:
        raise sec.error("groups", f"groups={groups} must divide the input channels ({c}) and filters ({filters})")
    fits(sec, "height", h + 2 * padding, size, "size")
    fits(sec, "width", w + 2 * padding, size, "size")
    oh = (h + 2 * padding - size) // stride + 1
    ow = (w + 2 * padding - size) // stride + 1
    cg = c // groups
    n_params = filters * cg * size * size + filters + (3 * filters if bn else 0)
    flops = 2.0 * filters * size * size * cg * oh * ow
    attrs = dict(common_attrs(sec), filters=filters, size=size, stride=stride, padding=padding, groups=groups,
                 batch_normalize=bn, activation=act)
    table = (f"conv  {filters:5d} {size:2d} x{size:2d} /{stride:2d}  {w:4d} x{h:4d} x{c:4d}   ->  "
             f"{ow:4d} x{oh:4d} x{filters:4d}  {flops / 1e9:5.3f} BFLOPs")
    return LayerSpec(ctx.index, "convolutional", sec, (ctx.prev_index,), (c, h, w), (filters, oh, ow), attrs,
                     n_params, flops, max(c * size * size * oh * ow, c * (h + 2 * padding) * (w + 2 * padding)),
                     table)  # workspace: the columns, or the padded copy of the input when that is larger


class ConvolutionalLayer(DarknetLayer):
    """conv → tail: ``bn`` (batch norm + activation, ``batchnorm.DarknetBatchNormAct``) when ``batch_normalize``,
    else ``act`` (the activation). Parameters: ``weight`` (F, C/groups, k, k), ``bias`` (F,) when there is no
    batch norm, else ``bn.weight`` (scales), ``bn.bias`` (Darknet's biases) and ``bn``'s running statistics.
    Darknet's initialisation: weights √(2/(k²·C/groups))·N(0, 1), biases 0."""

    kind = "convolutional"
    #: keep the im2col columns for the backward (else the input, kept by the graph anyway, and build them again)
    keep_columns = False

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        dt = np.dtype(dtype or backend.get_default_dtype())
        a = spec.attrs
        c = spec.in_shape[0]
        super().__init__(spec, numerics)
        self.filters, self.size, self.stride = a["filters"], a["size"], a["stride"]
        self.padding, self.groups = a["padding"], a["groups"]
        self.batch_normalize, self.activation = a["batch_normalize"], a["activation"]
        cg = c // self.groups
        scale = math.sqrt(2.0 / (self.size * self.size * cg))
        self.weight = Parameter((scale * backend.rng().standard_normal(
            (self.filters, cg, self.size, self.size))).astype(dt))
        attach_tail(self, self.filters, self.activation, numerics, dt)

    def _conv(self, x: np.ndarray, keep_cols: bool):
        """The convolution, its products summed pairwise (BLAS) or, with ``sums="darknet"``, in Darknet's order
        (``functional.darknet_sums``)."""
        conv = darknet_sums.conv2d_forward_darknet if self.sums == "darknet" else conv2d_forward
        return conv(x, self.weight.data, None if self.bias is None else self.bias.data, stride=self.stride,
                    padding=self.padding, groups=self.groups, keep_cols=keep_cols)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        self._check_dtype(x, self.weight.data.dtype)
        if not self.training and not self.keeps_cache and self.activation in TAIL_ACTIVATIONS:
            return self._infer(x)
        z, cache = self._conv(x, self.keep_columns)
        self._save(cache)
        return tail(self).forward(z)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Evaluation without a cache: the convolution, then the tail in one in-place pass over its output (the
        batch norm folded into a scale and shift with the activation, ``DarknetBatchNormAct.infer``; or the
        activation alone)."""
        z, _ = self._conv(x, False)
        return self.bn.infer(z) if self.bn is not None else activate_in_place(z, self.activation)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache = self._take()
        dz = tail(self).backward(dout)
        grads = darknet_sums.conv2d_backward_darknet if self.sums == "darknet" else conv2d_backward
        dx, dw, db = grads(dz, cache, need_dx=self.needs_input_grad)
        accumulate_weight_bias(self, dw, db)
        return dx

    # --- .weights: biases, [scales, rolling_mean, rolling_variance], weights ----------------------
    def weight_layout(self, loading: bool = True) -> List[Tuple[str, int]]:
        f = self.filters
        out = [("biases", f)]
        if self.batch_normalize and not (loading and self.dontloadscales):
            out += [("scales", f), ("rolling_mean", f), ("rolling_variance", f)]
        return out + [("weights", self.weight.data.size)]

    def _target(self, name: str):
        return weights_target(self, name)

    def extra_repr(self) -> str:
        return (f"{self.index}: {self.filters} {self.size}x{self.size}/{self.stride} pad {self.padding}"
                f"{' groups ' + str(self.groups) if self.groups > 1 else ''}"
                f"{' bn' if self.batch_normalize else ''} {self.activation}")
