"""Batch normalization inside a Darknet ``[convolutional]`` or ``[connected]`` layer.

``numerics="darknet"`` uses Darknet's formulas (``functional.norm_darknet``): ẑ = (z − μ)/(√σ² + 1e-6),
unbiased batch variance, rolling statistics ``0.99·r + 0.01·batch``; inference uses the rolling statistics.
``numerics="standard"`` is docs/equations.md §8 / PyTorch: ẑ = (z − μ)/√(σ² + ε), ε = 1e-5 (BN 2.1–2.6).
The bias β is Darknet's ``biases`` of the layer (added after normalising); γ is its ``scales``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ... import backend
from ...functional import norm, norm_darknet
from ...nn.module import Module
from ...nn.parameter import Parameter

STANDARD_EPS = 1e-5
STANDARD_MOMENTUM = 0.1


class DarknetBatchNorm(Module):
    """Per-channel batch norm over (N, C) or (N, C, H, W); ``weight`` = scales γ, ``bias`` = β.

    Darknet starts the rolling variance at 0 (its ``calloc``); the standard numerics start it at 1.
    """

    def __init__(self, channels: int, numerics: str = "darknet", dtype=None) -> None:
        super().__init__()
        dt = np.dtype(dtype or backend.get_default_dtype())
        self.channels = int(channels)
        self.numerics = numerics
        self.weight = Parameter(np.ones(channels, dtype=dt))
        self.bias = Parameter(np.zeros(channels, dtype=dt))
        self.register_buffer("running_mean", np.zeros(channels, dtype=dt))
        self.register_buffer("running_var", (np.zeros if numerics == "darknet" else np.ones)(channels, dtype=dt))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """ẑ·γ + β with the numerics' statistics (Darknet's §10 or §8); the cache's type names the kernel
        (``DarknetBNCache`` or ``BNCache``) so the backward follows the same path."""
        if self.numerics == "darknet":
            y, cache, (rm, rv) = norm_darknet.batchnorm_darknet_forward(
                x, self.weight.data, self.bias.data, self.running_mean, self.running_var, training=self.training)
            if self.training:
                object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
                object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
            self._save(cache)
            return y
        # standard: the kernels of functional.norm (running statistics updated in place in training)
        rm, rv = self.running_stats(x.dtype)
        y, cache = norm.batch_norm_forward(x, self.weight.data, self.bias.data, rm, rv, training=self.training,
                                           momentum=STANDARD_MOMENTUM, eps=STANDARD_EPS)
        self._save(cache)
        return y

    def running_stats(self, dtype) -> Tuple[np.ndarray, np.ndarray]:
        """The running mean and variance, first made writable arrays of ``dtype`` in training (the standard
        kernels update them in place)."""
        rm, rv = self.running_mean, self.running_var
        if self.training and (rm.dtype != dtype or not rm.flags.writeable):
            rm, rv = rm.astype(dtype), rv.astype(dtype)
            object.__setattr__(self, "running_mean", rm)
            object.__setattr__(self, "running_var", rv)
        return rm, rv

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """BN 2.1–2.6 by the kernel whose cache the forward left; accumulates dγ, dβ and returns ∂C/∂z."""
        cache = self._take()    # its type names the forward that made it
        if isinstance(cache, norm_darknet.DarknetBNCache):
            dx, dscale, dbias = norm_darknet.batchnorm_darknet_backward(dout, cache)
        else:
            dx, dscale, dbias = norm.batch_norm_backward(dout, cache)
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return f"{self.channels}, numerics={self.numerics}"


def attach_bias_or_batchnorm(layer: Module, n: int, numerics: str, dtype) -> None:
    """Darknet's rule for [convolutional] and [connected]: with ``batch_normalize`` the layer gets a
    ``DarknetBatchNorm`` (whose β is the layer's biases) and no bias of its own; otherwise a zero bias."""
    if layer.batch_normalize:
        layer.bias = None
        layer.bn = DarknetBatchNorm(n, numerics, dtype=dtype)
    else:
        layer.bias = Parameter(np.zeros(n, dtype=dtype))
        layer.bn = None


def normalize_activate(layer: Module, z: np.ndarray) -> np.ndarray:
    """The forward tail of [convolutional] and [connected]: batch norm (when attached), then the activation."""
    if layer.bn is not None:
        z = layer.bn.forward(z)
    return layer.act.forward(z)


def activation_bn_backward(layer: Module, dout: np.ndarray) -> np.ndarray:
    """The backward of ``normalize_activate``: σ' (P2 of §2), then the batch-norm backward (BN 2.1–2.6)."""
    dz = layer.act.backward(dout)
    return layer.bn.backward(dz) if layer.bn is not None else dz


def accumulate_weight_bias(layer: Module, dw: np.ndarray, db: Optional[np.ndarray]) -> None:
    """Add the product's weight gradient, and its bias gradient when the layer has its own bias."""
    layer.weight.accumulate(dw)
    if layer.bias is not None:
        layer.bias.accumulate(db)


def weights_target(layer: Module, name: str) -> Tuple[Module, str]:
    """(module, attribute) that holds a ``.weights`` array of [convolutional] or [connected]: the biases are
    the batch norm's β when it is attached, scales and rolling statistics belong to the batch norm."""
    if name == "biases":
        return (layer.bn, "bias") if layer.bn is not None else (layer, "bias")
    if name == "weights":
        return layer, "weight"
    return {"scales": (layer.bn, "weight"), "rolling_mean": (layer.bn, "running_mean"),
            "rolling_variance": (layer.bn, "running_var")}[name]
