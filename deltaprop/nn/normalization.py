"""Batch normalization layers (docs/equations.md §8, BN 2.1–2.6) with PyTorch's rules and names.

Parameters ``weight`` (γ) and ``bias`` (β); buffers ``running_mean``, ``running_var``, ``num_batches_tracked``,
so state dicts match PyTorch's. ``BatchNormAct2d`` fuses a ReLU / leaky ReLU (numba fuses the passes);
``BatchNormActPool2d`` adds a 2×2 max pooling with stride 2.
Darknet's own batch norm lives in ``functional.norm_darknet``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..functional import norm as F
from ..functional import norm_fused as FF
from .module import Module
from .parameter import Parameter


class _BatchNorm(Module):
    _dims = (2, 3, 4)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=None) -> None:
        super().__init__()
        if int(num_features) <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got {num_features}")
        dt = np.dtype(dtype or backend.get_default_dtype())
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        if self.affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dt))
            self.bias = Parameter(np.zeros(self.num_features, dtype=dt))
        else:
            self.weight = None
            self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dt))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim not in self._dims:
            got = f"{x.ndim}D input" if self._dims != (4,) else f"{x.ndim}D input of shape {x.shape}"
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ShapeError(f"{type(self).__name__}: expected {want} input (got {got}, shape {x.shape})")
        if x.shape[1] != self.num_features:
            raise ShapeError(f"{type(self).__name__}({self.num_features}): input has {x.shape[1]} channels "
                             f"(shape {x.shape}), expected {self.num_features}")
        dtype = self.weight.data.dtype if self.affine else (
            self.running_mean.dtype if self.track_running_stats else x.dtype)
        self._check_dtype(x, dtype)

    def _stats_args(self):
        """(use batch statistics, running mean, running var, momentum) for this forward; counts the batch."""
        use_batch = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked[...] += 1  # in place: plain assignment would unregister the buffer
            if momentum is None:  # cumulative moving average, as PyTorch
                momentum = 1.0 / float(self.num_batches_tracked)
        rm = self.running_mean if self.track_running_stats else None
        rv = self.running_var if self.track_running_stats else None
        return use_batch, rm, rv, (0.0 if momentum is None else momentum)

    def _params(self):
        return (self.weight.data, self.bias.data) if self.affine else (None, None)

    def _begin_forward(self, x: np.ndarray) -> tuple:
        """Check the input; (use the batch statistics?, running mean, running var, momentum, γ, β)."""
        self._check_input(x)
        if self.training and x.size // x.shape[1] < 2:
            raise ShapeError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        return self._stats_args() + self._params()

    def forward(self, x: np.ndarray) -> np.ndarray:
        use_batch, rm, rv, momentum, g, b = self._begin_forward(x)
        y, cache = F.batch_norm_forward(x, g, b, rm, rv,
                                        training=use_batch, momentum=momentum, eps=self.eps)
        self._save(cache)
        return y

    def _accumulate(self, dg, db) -> None:
        if self.affine:
            if self.weight.requires_grad:
                self.weight.accumulate(dg)
            if self.bias.requires_grad:
                self.bias.accumulate(db)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        dx, dg, db = F.batch_norm_backward(dout, self._take(), need_dx=self.needs_input_grad)
        self._accumulate(dg, db)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L): statistics per channel over N (·L) values."""
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): statistics per channel over m = N·H·W values."""
    _dims = (4,)


class BatchNormAct2d(BatchNorm2d):
    """``BatchNorm2d`` followed by an activation, fused: ``activation`` "leaky" (slope ``negative_slope``),
    "relu" or "linear". Same parameters, buffers and state-dict keys as ``BatchNorm2d``; the same numbers as
    ``BatchNorm2d`` then ``LeakyReLU``/``ReLU``, with fewer passes over memory (one fused pass with numba)."""

    def __init__(self, num_features: int, activation: str = "leaky", negative_slope: float = 0.01,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        FF._check_act(activation)
        self.activation = activation
        self.negative_slope = float(negative_slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        use_batch, rm, rv, momentum, g, b = self._begin_forward(x)
        if g is None:
            g = np.ones(self.num_features, dtype=x.dtype)
            b = np.zeros(self.num_features, dtype=x.dtype)
        y, cache = self._forward_kernel(x, g, b, rm, rv, training=use_batch, momentum=momentum, eps=self.eps,
                                        activation=self.activation, negative_slope=self.negative_slope)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        dx, dg, db = self._backward_kernel(dout, self._take(), need_dx=self.needs_input_grad, consume_cache=True)
        self._accumulate(dg, db)
        return dx

    _forward_kernel = staticmethod(FF.batchnorm_act_forward)
    _backward_kernel = staticmethod(FF.batchnorm_act_backward)

    def extra_repr(self) -> str:
        act = self.activation + (f"({self.negative_slope})" if self.activation == "leaky" else "")
        return super().extra_repr() + f", activation={act}"


class BatchNormActPool2d(BatchNormAct2d):
    """``BatchNormAct2d`` followed by 2×2 max pooling with stride 2, fused (§8, §5, §4): the same parameters,
    buffers and state-dict keys as ``BatchNormAct2d`` and the same numbers as ``BatchNormAct2d`` then
    ``MaxPool2d(2)``. With numba (even H and W, pooled width ≥ 16) one pass normalises, activates and pools,
    and the activated map is never stored; its backward routes each window's delta through σ' in one pass."""

    _forward_kernel = staticmethod(FF.batchnorm_act_maxpool2_forward)
    _backward_kernel = staticmethod(FF.batchnorm_act_maxpool2_backward)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", pool=max 2×2 stride 2"
