"""The batch norm + activation of a Darknet ``[convolutional]`` or ``[connected]`` layer (``batch_normalize=1``).

A layer is its product (convolution or fully connected) followed by its tail: ``DarknetBatchNormAct`` (batch
norm, then the activation) when it normalises, else the activation alone. The layer calls its tail's
``forward``/``backward`` (and ``infer`` in evaluation), so a wrapper of the tail (the synchronised batch norm,
hooks) sees every call. The batch norm is ``nn.normalization.DarknetBatchNorm``: Darknet's numerics (§10, "Darknet
batch norm") or the standard ones (§8); β is Darknet's ``biases`` of the layer (added after normalising), γ its
``scales``.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from ...functional.conv_bn import TAIL_ACTIVATIONS, affine_act_, bn_scale_shift
from ...functional.norm_darknet import EPS_FORWARD as DARKNET_EPS
from ...functional.norm_fused import batchnorm_act_backward, batchnorm_act_forward
from ...nn.module import Module
from ...nn.normalization import STANDARD_EPS, STANDARD_MOMENTUM, DarknetBatchNorm
from ...nn.parameter import Parameter
from ..activations import LEAKY_SLOPE, DarknetActivation

__all__ = ["DarknetBatchNorm", "DarknetBatchNormAct", "STANDARD_EPS", "STANDARD_MOMENTUM", "attach_tail", "tail",
           "accumulate_weight_bias", "weights_target", "activate_in_place"]


class OneOpCache(NamedTuple):
    """``DarknetBatchNormAct``'s cache on its one-op path: ``batchnorm_act_forward``'s, of whichever variant
    computed it (the other path leaves the batch norm's own cache)."""
    cache: object


class DarknetBatchNormAct(DarknetBatchNorm):
    """``DarknetBatchNorm`` then the layer's Darknet activation (its child ``act``): the same parameters, buffers
    and state-dict keys as ``DarknetBatchNorm``.

    In the standard numerics, a feature map (N, C, H, W) and a linear, ReLU or leaky activation make one op,
    ``functional.norm_fused.batchnorm_act_forward`` (its fast variants fuse the passes); otherwise the batch norm
    and the activation run in turn. ``infer`` is evaluation without a cache: the batch norm folded into a scale
    and shift per channel and the activation, in one in-place pass (``functional.conv_bn``)."""

    def __init__(self, channels: int, activation: str, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(channels, numerics, dtype)
        self.act = DarknetActivation(activation)

    def _one_op(self, z: np.ndarray) -> bool:
        return self.numerics == "standard" and z.ndim == 4 and self.act.name in TAIL_ACTIVATIONS

    def forward(self, z: np.ndarray) -> np.ndarray:
        """σ(BN(z)): one op (``_one_op``), or ``DarknetBatchNorm``'s forward then the activation's."""
        if not self._one_op(z):
            return self.act.forward(super().forward(z))
        rm, rv = self.running_stats(z.dtype)
        y, cache = batchnorm_act_forward(z, self.weight.data, self.bias.data, rm, rv, training=self.training,
                                         momentum=STANDARD_MOMENTUM, eps=STANDARD_EPS, activation=self.act.name,
                                         negative_slope=LEAKY_SLOPE, allsum=self._batch_allsum())
        self._save(OneOpCache(cache))
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """σ' (P2) then BN 2.1–2.6, by the path the forward took; accumulates dγ, dβ and returns ∂C/∂z."""
        if not isinstance(self._cache, OneOpCache):       # σ' first: the batch norm's cache is taken after it
            return super().backward(self.act.backward(dout))
        dz, dscale, dbias = batchnorm_act_backward(dout, self._take().cache, consume_cache=True)
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dz

    def eval_eps(self) -> Tuple[float, bool]:
        """(ε, whether it is added outside the root) of evaluation: Darknet's (pjreddie) √σ² + 1e-6 in Darknet
        numerics, the textbook's √(σ² + 1e-5) in the standard ones (a fork's batch norm overrides it)."""
        darknet = self.numerics == "darknet"
        return (DARKNET_EPS, True) if darknet else (STANDARD_EPS, False)

    def infer(self, z: np.ndarray) -> np.ndarray:
        """Evaluation without a cache, in place on z (C-contiguous, the activation one of ``TAIL_ACTIVATIONS``):
        the rolling statistics folded into a scale and shift per channel (``conv_bn.bn_scale_shift``, ε as
        ``eval_eps`` places it), then the affine map and σ in one pass (``conv_bn.affine_act_``)."""
        eps, outside = self.eval_eps()
        scale, shift = bn_scale_shift(self.weight.data, self.bias.data, self.running_mean, self.running_var, eps,
                                      eps_outside_root=outside, dtype=z.dtype)
        return affine_act_(z, scale, shift, self.act.name, LEAKY_SLOPE)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.act.name}"


def attach_tail(layer: Module, n: int, activation: str, numerics: str, dtype) -> None:
    """Darknet's rule for [convolutional] and [connected]: with ``batch_normalize`` the layer gets ``bn``, a
    ``DarknetBatchNormAct`` (whose β is the layer's biases), and no bias of its own; otherwise a zero ``bias`` and
    ``act``, the activation alone."""
    if layer.batch_normalize:
        layer.bias = None
        layer.bn = DarknetBatchNormAct(n, activation, numerics, dtype=dtype)
        layer.act = None
    else:
        layer.bias = Parameter(np.zeros(n, dtype=dtype))
        layer.bn = None
        layer.act = DarknetActivation(activation)


def tail(layer: Module) -> Module:
    """The module after the layer's product: its ``DarknetBatchNormAct``, or its activation."""
    return layer.bn if layer.bn is not None else layer.act


def activate_in_place(z: np.ndarray, activation: str) -> np.ndarray:
    """σ(z) in place for a layer without batch norm in evaluation (σ one of ``TAIL_ACTIVATIONS``): ``affine_act_``
    with scale 1 and shift 0."""
    if activation == "linear":
        return z
    c = z.shape[1]
    return affine_act_(z, np.ones(c, z.dtype), np.zeros(c, z.dtype), activation, LEAKY_SLOPE)


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
