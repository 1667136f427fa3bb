"""Batch normalization layers (docs/equations.md §8, BN forward and BN 2.1–2.6).

``BatchNorm1d``/``BatchNorm2d`` follow PyTorch's rules and names: parameters ``weight`` (γ) and ``bias`` (β);
buffers ``running_mean``, ``running_var``, ``num_batches_tracked``, so state dicts match PyTorch's.
``BatchNormAct2d`` adds a ReLU / leaky ReLU and ``BatchNormActPool2d`` a 2×2 max pooling with stride 2, each one
op (``functional.norm_fused``) whose fast variants fuse the passes. ``DarknetBatchNorm`` is the batch norm of a
Darknet ``[convolutional]`` or ``[connected]`` layer, in Darknet's numerics (§10) or the standard ones.

Every batch-norm module is a ``BatchNormBase``: its ``allsum`` (set by ``distributed.convert_sync_batchnorm``)
makes its training statistics those of the batch shared by several processes.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..functional import norm as F
from ..functional import norm_darknet as ND
from ..functional import norm_fused as FF
from .module import Module
from .parameter import Parameter

#: the standard numerics of a Darknet layer's batch norm (PyTorch's defaults)
STANDARD_EPS = 1e-5
STANDARD_MOMENTUM = 0.1


class BatchNormBase(Module):
    """What the batch-norm modules share. ``allsum``: None (this process's batch is the whole batch), or a function
    that sums a float64 vector over the processes that share the batch (``distributed.convert_sync_batchnorm``
    sets it): the training forward then normalises with the global batch's statistics and the backward takes the
    global sums of BN 2.1–2.3 (the kernels' ``allsum``). Parameters ``weight`` (γ) and ``bias`` (β)."""

    allsum: Optional[F.AllSum] = None

    def _batch_allsum(self) -> Optional[F.AllSum]:
        """``allsum`` for a training forward; None in evaluation (the running statistics normalise, and a rank may
        evaluate alone)."""
        return self.allsum if self.training else None

    def _accumulate(self, dg: Optional[np.ndarray], db: Optional[np.ndarray]) -> None:
        if self.weight is not None:
            if self.weight.requires_grad:
                self.weight.accumulate(dg)
            if self.bias.requires_grad:
                self.bias.accumulate(db)


class _BatchNorm(BatchNormBase):
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
        if self.training and self.allsum is None and x.size // x.shape[1] < 2:   # synchronised: the kernel counts
            raise ShapeError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        return self._stats_args() + self._params()

    def forward(self, x: np.ndarray) -> np.ndarray:
        use_batch, rm, rv, momentum, g, b = self._begin_forward(x)
        y, cache = F.batch_norm_forward(x, g, b, rm, rv, training=use_batch, momentum=momentum, eps=self.eps,
                                        allsum=self._batch_allsum())
        self._save(cache)
        return y

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
    """``BatchNorm2d`` followed by an activation, one op (``functional.norm_fused.batchnorm_act_forward``):
    ``activation`` "leaky" (slope ``negative_slope``), "relu" or "linear". Same parameters, buffers and state-dict
    keys as ``BatchNorm2d``; the same numbers as ``BatchNorm2d`` then ``LeakyReLU``/``ReLU`` to float rounding,
    with fewer passes over memory (one fused pass with numba)."""

    def __init__(self, num_features: int, activation: str = "leaky", negative_slope: float = 0.01,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.activation = FF.check_activation(activation)
        self.negative_slope = float(negative_slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        use_batch, rm, rv, momentum, g, b = self._begin_forward(x)
        if g is None:
            g = np.ones(self.num_features, dtype=x.dtype)
            b = np.zeros(self.num_features, dtype=x.dtype)
        y, cache = self._forward_kernel(x, g, b, rm, rv, training=use_batch, momentum=momentum, eps=self.eps,
                                        activation=self.activation, negative_slope=self.negative_slope,
                                        allsum=self._batch_allsum())
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
    """``BatchNormAct2d`` followed by 2×2 max pooling with stride 2, one op
    (``functional.norm_fused.batchnorm_act_maxpool2_forward``, §8, §5, §4): the same parameters, buffers and
    state-dict keys as ``BatchNormAct2d`` and the same numbers as ``BatchNormAct2d`` then ``MaxPool2d(2)``. With
    numba (even H and W, pooled width ≥ 16) one pass normalises, activates and pools, and the activated map is
    never stored; its backward routes each window's delta through σ' in one pass."""

    _forward_kernel = staticmethod(FF.batchnorm_act_maxpool2_forward)
    _backward_kernel = staticmethod(FF.batchnorm_act_maxpool2_backward)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", pool=max 2×2 stride 2"


class DarknetBatchNorm(BatchNormBase):
    """The batch norm of a Darknet ``[convolutional]`` or ``[connected]`` layer, per channel over (N, C) or
    (N, C, H, W); ``weight`` = scales γ, ``bias`` = β (the layer's biases), ``running_mean``/``running_var`` = the
    rolling statistics.

    ``numerics="darknet"``: Darknet's formulas (``functional.norm_darknet``, §10 "Darknet batch norm"): unbiased
    batch variance, ẑ = (z − μ)/(√σ² + 1e-6), rolling statistics ``0.99·r + 0.01·batch``; the rolling variance
    starts at 0 (Darknet's ``calloc``). ``numerics="standard"``: §8 / PyTorch (``functional.norm``, BN forward and
    BN 2.1–2.6) with ε = 1e-5 and momentum 0.1; the running variance starts at 1. Evaluation normalises with the
    rolling statistics."""

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
        y, cache = self._normalize(x)
        self._save(cache)
        return y

    def _normalize(self, x: np.ndarray) -> Tuple[np.ndarray, object]:
        """(ẑ·γ + β, the kernel's cache): ``norm_darknet.batchnorm_darknet_forward`` (rolling statistics replaced by
        new arrays) or ``norm.batch_norm_forward`` (running statistics updated in place)."""
        if self.numerics == "darknet":
            y, cache, (rm, rv) = ND.batchnorm_darknet_forward(x, self.weight.data, self.bias.data, self.running_mean,
                                                              self.running_var, self.training, self._batch_allsum())
            if self.training:
                object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
                object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
            return y, cache
        rm, rv = self.running_stats(x.dtype)
        return F.batch_norm_forward(x, self.weight.data, self.bias.data, rm, rv, training=self.training,
                                    momentum=STANDARD_MOMENTUM, eps=STANDARD_EPS, allsum=self._batch_allsum())

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
        return self._normalize_backward(dout, self._take())

    def _normalize_backward(self, dout: np.ndarray, cache) -> np.ndarray:
        if isinstance(cache, ND.DarknetBNCache):
            dx, dscale, dbias = ND.batchnorm_darknet_backward(dout, cache)
        else:
            dx, dscale, dbias = F.batch_norm_backward(dout, cache)
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dx

    def extra_repr(self) -> str:
        return f"{self.channels}, numerics={self.numerics}"
