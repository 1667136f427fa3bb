"""Batch norm of a cfg layer as a given Darknet fork computes it, optionally with Darknet's summation order
(``functional.darknet_sums``; docs/darknet.md "Summation order and forks").

``OrderedDarknetBatchNorm`` is a ``DarknetBatchNorm`` with two settings, ``fork`` ("pjreddie" or "alexeyab": where
the fork puts ε and how its rolling statistics move) and ``sums`` ("pairwise": the engine's BLAS sums, or
"darknet": the C loops' order). In Darknet numerics with the defaults (pjreddie, pairwise) it is the plain
``DarknetBatchNorm`` (same kernels, same numbers); otherwise ``functional.darknet_sums.batchnorm_forward`` and
``batchnorm_backward``. The standard numerics are the plain module's. ``DarknetNet`` installs it in the layers
that need it (``install``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...functional import darknet_sums
from ...nn.module import Module
from .batchnorm import DarknetBatchNorm

FORKS = tuple(darknet_sums.FORKS)
SUMS = darknet_sums.ORDERS


def check_fork_sums(fork: str, sums: str) -> None:
    """A ValueError naming the setting when ``fork`` or ``sums`` is not one of the known values."""
    if fork not in FORKS:
        raise ValueError(f"fork must be one of {FORKS}, got {fork!r}")
    if sums not in SUMS:
        raise ValueError(f"sums must be one of {SUMS}, got {sums!r}")


class OrderedDarknetBatchNorm(DarknetBatchNorm):
    """``DarknetBatchNorm`` computing Darknet numerics as ``fork``'s C code does, with ``sums`` ("pairwise" or
    "darknet") per-channel sums."""

    fork = "pjreddie"
    sums = "pairwise"

    @classmethod
    def adopt(cls, bn: DarknetBatchNorm, fork: str, sums: str) -> "OrderedDarknetBatchNorm":
        """A module sharing ``bn``'s parameters and running statistics (the same objects) with these settings."""
        check_fork_sums(fork, sums)
        new = cls(bn.channels, bn.numerics, dtype=bn.weight.data.dtype)
        new.weight, new.bias = bn.weight, bn.bias
        object.__setattr__(new, "running_mean", bn.running_mean)
        object.__setattr__(new, "running_var", bn.running_var)
        new.train(bn.training)
        object.__setattr__(new, "fork", fork)
        object.__setattr__(new, "sums", sums)
        return new

    @property
    def plain(self) -> bool:
        """Whether the plain ``DarknetBatchNorm`` computes this module's numbers (pjreddie, pairwise, or standard)."""
        return self.numerics != "darknet" or (self.fork == "pjreddie" and self.sums == "pairwise")

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.plain:
            return super().forward(x)
        y, cache, (rm, rv) = darknet_sums.batchnorm_forward(
            x, self.weight.data, self.bias.data, self.running_mean, self.running_var, training=self.training,
            fork=self.fork, order=self.sums)
        if self.training:
            object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
            object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if not isinstance(self._cache, darknet_sums.OrderedBNCache):
            return super().backward(dout)
        dx, dscale, dbias = darknet_sums.batchnorm_backward(dout, self._take())
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fork={self.fork}, sums={self.sums}"


def install(layer: Module, fork: str, sums: str) -> Optional[OrderedDarknetBatchNorm]:
    """Give ``layer`` (a [convolutional] or [connected] layer) an ``OrderedDarknetBatchNorm`` with these settings
    when it has a batch norm and the settings differ from the plain one's; returns the module in use (None
    without batch norm)."""
    bn = getattr(layer, "bn", None)
    if bn is None:
        return None
    if isinstance(bn, OrderedDarknetBatchNorm):
        check_fork_sums(fork, sums)
        object.__setattr__(bn, "fork", fork)
        object.__setattr__(bn, "sums", sums)
        return bn
    if fork == "pjreddie" and sums == "pairwise":
        return bn
    layer.bn = OrderedDarknetBatchNorm.adopt(bn, fork, sums)
    return layer.bn
