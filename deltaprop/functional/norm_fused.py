"""Batch norm + activation (+ 2×2 max pooling) as one op, standard convention (docs/equations.md §8, §5, §4):
the op of the layers that join them (``nn.BatchNormAct2d``, ``nn.BatchNormActPool2d``, a Darknet
``[convolutional]`` layer's batch norm in the standard numerics).

The reference is the parts in turn: ``norm.batch_norm_forward`` (BN forward), then the activation σ (ReLU, leaky
ReLU or linear; P2 in the backward), then ``pool.max_pool2d_forward`` with a 2×2 window and stride 2; each cache
holds the parts' caches. ``deltaprop.fast`` computes the same numbers with fewer passes over memory (z − μ kept
instead of ẑ, σ' recomputed or read from the pooled output, one numba loop per pass).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

from .. import dispatch
from . import activation as A
from .norm import AllSum, BNCache, batch_norm_backward, batch_norm_forward
from .pool import MaxPoolCache, max_pool2d_backward, max_pool2d_forward
from .pool_geometry import pool_geometry

ACTIVATIONS = ("linear", "relu", "leaky")
ActCache = Union[A.ReluCache, A.LeakyReluCache]               # the activation's backward cache (None: linear)
Grads = Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]  # (dx, dγ, dβ)


class BNActCache(NamedTuple):
    """``batchnorm_act_forward``'s: ``batch_norm_forward``'s cache, then the activation's name and cache."""
    bn: BNCache
    activation: str
    act: Optional[ActCache]


class BNActPoolCache(NamedTuple):
    """``batchnorm_act_maxpool2_forward``'s: the cache of ``batchnorm_act_forward`` (of whichever path computed
    it), then ``max_pool2d_forward``'s."""
    bn_act: object
    pool: MaxPoolCache


def check_activation(activation: str) -> str:
    """``activation`` when it is one of ``ACTIVATIONS``, else a ValueError naming them."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"batchnorm_act: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def activation_forward(y: np.ndarray, activation: str, negative_slope: float) -> Tuple[np.ndarray, Optional[ActCache]]:
    """σ(y) by ``functional.activation`` (§5): ReLU, leaky ReLU with ``negative_slope``, or linear (y itself,
    no cache)."""
    if activation == "relu":
        return A.relu_forward(y)
    if activation == "leaky":
        return A.leaky_relu_forward(y, negative_slope)
    return y, None


def activation_backward(dout: np.ndarray, cache: Optional[ActCache], activation: str) -> np.ndarray:
    """δ = dout ⊙ σ'(y) (P2 of §2) by ``functional.activation``; dout itself for linear."""
    if activation == "relu":
        return A.relu_backward(dout, cache)
    if activation == "leaky":
        return A.leaky_relu_backward(dout, cache)
    return dout


@dispatch.op("batchnorm_act")
def batchnorm_act_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                          running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None,
                          training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
                          activation: str = "leaky", negative_slope: float = 0.01,
                          allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, object]:
    """a = σ(BN(z)) (BN forward, §5): ``batch_norm_forward`` (its arguments and ``allsum``), then σ, one of
    ``ACTIVATIONS`` (leaky with ``negative_slope``)."""
    check_activation(activation)
    y, bn = batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, allsum)
    a, act = activation_forward(y, activation, negative_slope)
    return a, BNActCache(bn, activation, act)


@dispatch.backward("batchnorm_act")
def batchnorm_act_backward(dout: np.ndarray, cache: BNActCache, need_dx: bool = True,
                           consume_cache: bool = False) -> Grads:
    """Returns (dx, dγ, dβ): δ = dout ⊙ σ'(y) (P2), then ``batch_norm_backward`` (BN 2.5, 2.6, BN 2.1–2.3).
    ``consume_cache`` (the cache is dropped after this call) lets a fast path reuse its arrays; same numbers."""
    bn, activation, act = cache
    return batch_norm_backward(activation_backward(dout, act, activation), bn, need_dx)


@dispatch.op("batchnorm_act_maxpool2")
def batchnorm_act_maxpool2_forward(x: np.ndarray, gamma: Optional[np.ndarray], beta: Optional[np.ndarray],
                                   running_mean: Optional[np.ndarray] = None,
                                   running_var: Optional[np.ndarray] = None, training: bool = True,
                                   momentum: float = 0.1, eps: float = 1e-5, activation: str = "leaky",
                                   negative_slope: float = 0.01,
                                   allsum: Optional[AllSum] = None) -> Tuple[np.ndarray, object]:
    """p = maxpool₂ₓ₂(σ(BN(z))): ``batchnorm_act_forward`` (BN forward, §5), then max pooling with a 2×2 window
    and stride 2 (§4). x (N, C, H, W); the geometry is checked before anything moves."""
    pool_geometry(x.shape, 2, name="batchnorm_act_maxpool2")
    a, bn_act = batchnorm_act_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                      activation, negative_slope, allsum)
    out, pool = max_pool2d_forward(a, 2)
    return out, BNActPoolCache(bn_act, pool)


@dispatch.backward("batchnorm_act_maxpool2")
def batchnorm_act_maxpool2_backward(dout: np.ndarray, cache: BNActPoolCache, need_dx: bool = True,
                                    consume_cache: bool = False) -> Grads:
    """Returns (dx, dγ, dβ): each window's delta to its arg-max (§4), then ``batchnorm_act_backward``."""
    return batchnorm_act_backward(max_pool2d_backward(dout, cache.pool), cache.bn_act, need_dx, consume_cache)
