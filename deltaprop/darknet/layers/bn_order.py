"""Batch norm of a cfg layer as a given Darknet fork computes it, optionally with Darknet's summation order
(``functional.darknet_sums``; docs/darknet.md "Forks and summation order").

``install(layer, fork, sums)`` gives a [convolutional] or [connected] layer's batch norm two settings, ``fork``
("pjreddie" or "alexeyab": where the fork puts ε and how its rolling statistics move) and ``sums`` ("pairwise": the
engine's BLAS sums, or "darknet": the C loops' order). With the defaults (pjreddie, pairwise) the layer keeps its
own module (same kernels, same numbers); otherwise its module becomes an ``OrderedBatchNorm`` of the same class
(the same parameters, buffers and activation), whose Darknet numerics are ``functional.darknet_sums``'s
``batchnorm_forward``/``batchnorm_backward`` and whose evaluation uses the fork's ε. The standard numerics stay
the module's own.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ...functional import darknet_sums
from ...nn.module import Module

FORKS = tuple(darknet_sums.FORKS)
SUMS = darknet_sums.ORDERS


def check_fork_sums(fork: str, sums: str) -> None:
    """A ValueError naming the setting when ``fork`` or ``sums`` is not one of the known values."""
    if fork not in FORKS:
        raise ValueError(f"fork must be one of {FORKS}, got {fork!r}")
    if sums not in SUMS:
        raise ValueError(f"sums must be one of {SUMS}, got {sums!r}")


class OrderedBatchNorm:
    """Mixed into the class of a layer's batch-norm module (``install``): its Darknet numerics follow ``fork``'s
    formulas with ``sums`` per-channel sums. A module whose class splits its forward into ``_normalize`` and
    ``_normalize_backward`` (the batch norm, then its activation) is hooked there; one whose ``forward`` is the batch
    norm alone is hooked in ``forward``/``backward``."""

    fork = "pjreddie"
    sums = "pairwise"

    @property
    def plain(self) -> bool:
        """Whether the module's own class computes these numbers (pjreddie, pairwise, or the standard numerics)."""
        return self.numerics != "darknet" or (self.fork == "pjreddie" and self.sums == "pairwise")

    def _ordered(self, x: np.ndarray):
        """(y, cache) of ``darknet_sums.batchnorm_forward``, the rolling statistics replaced in training."""
        y, cache, (rm, rv) = darknet_sums.batchnorm_forward(
            x, self.weight.data, self.bias.data, self.running_mean, self.running_var, training=self.training,
            fork=self.fork, order=self.sums)
        if self.training:
            object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
            object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
        return y, cache

    def _ordered_backward(self, dout: np.ndarray, cache) -> np.ndarray:
        dx, dscale, dbias = darknet_sums.batchnorm_backward(dout, cache)
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dx


class _HookNormalize(OrderedBatchNorm):
    def _normalize(self, x: np.ndarray):
        return super()._normalize(x) if self.plain else self._ordered(x)

    def _normalize_backward(self, dout: np.ndarray, cache) -> np.ndarray:
        if isinstance(cache, darknet_sums.OrderedBNCache):
            return self._ordered_backward(dout, cache)
        return super()._normalize_backward(dout, cache)

    def eval_eps(self):
        """(ε, outside the root) of the fork's evaluation in Darknet numerics (AlexeyAB: √(σ² + 1e-5))."""
        if self.numerics != "darknet":
            return super().eval_eps()
        f = darknet_sums.FORKS[self.fork]
        return f.eps_forward, not f.forward_eps_in_root

    def infer(self, z: np.ndarray) -> np.ndarray:
        """Evaluation without a cache with the fork's ε (AlexeyAB's under the root): folded into a scale and shift
        (``eval_eps``) with the engine's sums, or the C code's operations in Darknet's order."""
        if self.numerics != "darknet" or self.sums == "pairwise":
            return super().infer(z)
        return self.act.forward(darknet_sums.batchnorm_forward(
            z, self.weight.data, self.bias.data, self.running_mean, self.running_var, training=False,
            fork=self.fork, order=self.sums)[0])


class _HookForward(OrderedBatchNorm):
    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.plain:
            return super().forward(x)
        y, cache = self._ordered(x)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if not isinstance(self._cache, darknet_sums.OrderedBNCache):
            return super().backward(dout)
        return self._ordered_backward(dout, self._take())


_classes: Dict[type, type] = {}


def ordered_class(base: type) -> type:
    """``base`` (a batch-norm module class) with ``OrderedBatchNorm`` mixed in, made once per class."""
    if base not in _classes:
        hook = _HookNormalize if hasattr(base, "_normalize") else _HookForward
        _classes[base] = type(f"Ordered{base.__name__}", (hook, base), {"__module__": __name__})
    return _classes[base]


def install(layer: Module, fork: str, sums: str) -> Optional[Module]:
    """Give ``layer`` (a [convolutional] or [connected] layer) a batch norm computing ``fork``'s numerics with
    ``sums`` when it has one and the settings are not the plain module's; returns the module in use (None without
    batch norm). The new module shares the old one's parameters, buffers and children."""
    check_fork_sums(fork, sums)
    bn = getattr(layer, "bn", None)
    if bn is None:
        return None
    if not isinstance(bn, OrderedBatchNorm):
        if fork == "pjreddie" and sums == "pairwise":
            return bn
        cls = ordered_class(type(bn))
        new = cls.__new__(cls)
        new.__dict__.update(bn.__dict__)          # the same Parameters, buffers and activation, not copies
        layer.bn = bn = new
    object.__setattr__(bn, "fork", fork)
    object.__setattr__(bn, "sums", sums)
    return bn


def activation_of(layer: Module):
    """The layer's Darknet activation module: its own ``act``, or its batch norm's (batch norm + activation)."""
    act = getattr(layer, "act", None)
    if act is None and getattr(layer, "bn", None) is not None:
        act = getattr(layer.bn, "act", None)
    return act
