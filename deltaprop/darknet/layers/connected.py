"""``[connected]``: fully connected (FC-1..3), then its tail: batch norm + activation, or the activation
(``connected_layer.c``).
The input is flattened in C, H, W order; weights ``[outputs][inputs]``; output (N, outputs, 1, 1)."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from ... import backend
from ...functional.dense import linear_backward, linear_forward
from ...nn.parameter import Parameter
from ...errors import ConfigError
from ..cfg import Section
from .base import DarknetLayer, LayerSpec, PlanContext, common_attrs
from .batchnorm import accumulate_weight_bias, attach_tail, tail, weights_target
from .convolutional import activation_key


def plan(sec: Section, ctx: PlanContext) -> LayerSpec:
    """The [connected] section checked, with its shapes, parameter count and summary line."""
    c, h, w = ctx.prev_shape
    inputs = c * h * w
    outputs = sec.get_int("output", 1, lo=1)
    bn = bool(sec.get_int("batch_normalize", 0))
    act = activation_key(sec, "logistic")
    attrs = dict(common_attrs(sec), outputs=outputs, batch_normalize=bn, activation=act)
    n_params = inputs * outputs + outputs + (3 * outputs if bn else 0)
    flops = 2.0 * inputs * outputs
    table = f"connected                            {inputs:4d}  ->  {outputs:4d}"
    return LayerSpec(ctx.index, "connected", sec, (ctx.prev_index,), (c, h, w), (outputs, 1, 1), attrs,
                     n_params, flops, 0, table)


class ConnectedLayer(DarknetLayer):
    """``y = act(BN(x Wᵀ))`` (the tail ``bn``, ``batchnorm.DarknetBatchNormAct``) or ``act(x Wᵀ + b)`` (the tail
    ``act``); ``weight`` (outputs, inputs). Darknet's initialisation: weights U(±√(2/inputs)), biases 0."""

    kind = "connected"

    def __init__(self, spec: LayerSpec, numerics: str = "darknet", dtype=None) -> None:
        dt = np.dtype(dtype or backend.get_default_dtype())
        super().__init__(spec, numerics)
        c, h, w = spec.in_shape
        self.in_features = c * h * w
        self.out_features = spec.attrs["outputs"]
        self.batch_normalize, self.activation = spec.attrs["batch_normalize"], spec.attrs["activation"]
        scale = math.sqrt(2.0 / self.in_features)
        self.weight = Parameter(backend.rng().uniform(-scale, scale, (self.out_features, self.in_features)).astype(dt))
        attach_tail(self, self.out_features, self.activation, numerics, dt)

    def resize(self, spec: LayerSpec) -> None:
        c, h, w = spec.in_shape
        if c * h * w != self.in_features:
            raise ConfigError(f"layer {self.index} [connected]: its {self.in_features} inputs are fixed; a network "
                              f"input that gives it {c * h * w} cannot be trained (Darknet cannot resize it either)")
        super().resize(spec)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        self._check_dtype(x, self.weight.data.dtype)
        n = x.shape[0]
        z, cache = linear_forward(x.reshape(n, -1), self.weight.data,
                                  None if self.bias is None else self.bias.data)
        self._save((cache, x.shape))
        return tail(self).forward(z).reshape(n, self.out_features, 1, 1)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache, shape = self._take()
        dz = tail(self).backward(dout.reshape(shape[0], -1))
        dx, dw, db = linear_backward(dz, cache, need_dx=self.needs_input_grad)
        accumulate_weight_bias(self, dw, db)
        return None if dx is None else dx.reshape(shape)

    # --- .weights: biases, weights, [scales, rolling_mean, rolling_variance] ----------------------
    def weight_layout(self, loading: bool = True) -> List[Tuple[str, int]]:
        f = self.out_features
        out = [("biases", f), ("weights", self.weight.data.size)]
        if self.batch_normalize and not (loading and self.dontloadscales):
            out += [("scales", f), ("rolling_mean", f), ("rolling_variance", f)]
        return out

    def _target(self, name: str):
        return weights_target(self, name)

    def extra_repr(self) -> str:
        return (f"{self.index}: {self.in_features} -> {self.out_features}"
                f"{' bn' if self.batch_normalize else ''} {self.activation}")
