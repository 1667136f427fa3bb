"""Batch normalization inside a Darknet ``[convolutional]`` or ``[connected]`` layer.

``numerics="darknet"`` uses Darknet's formulas (``functional.norm_darknet``): ẑ = (z − μ)/(√σ² + 1e-6),
unbiased batch variance, rolling statistics ``0.99·r + 0.01·batch``; inference uses the rolling statistics.
``numerics="standard"`` is EQUATIONS.md §8 / PyTorch: ẑ = (z − μ)/√(σ² + ε), ε = 1e-5 (BN 2.1–2.6).
The bias β is Darknet's ``biases`` of the layer (added after normalising); γ is its ``scales``.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ...functional import norm_darknet
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
        if self.numerics == "darknet":
            y, cache, (rm, rv) = norm_darknet.batchnorm_darknet_forward(
                x, self.weight.data, self.bias.data, self.running_mean, self.running_var, training=self.training)
            if self.training:
                object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
                object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
            self._save(("darknet", cache))
            return y
        if self.training:
            return self._standard_train_forward(x)
        # standard inference: an affine map with the running statistics
        t = x.dtype.type
        bs = (1, -1) + (1,) * (x.ndim - 2)
        denom = np.sqrt(self.running_var + t(STANDARD_EPS))
        x_norm = (x - self.running_mean.reshape(bs)) / denom.reshape(bs)
        y = x_norm * self.weight.data.reshape(bs) + self.bias.data.reshape(bs)
        self._save(("eval", (x_norm, denom)))
        return y

    def _standard_train_forward(self, x: np.ndarray) -> np.ndarray:
        """BN forward with batch statistics (EQUATIONS.md §8); running stats as PyTorch (unbiased var)."""
        t = x.dtype.type
        ax = (0,) + tuple(range(2, x.ndim))
        bs = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // x.shape[1]
        mu = x.mean(axis=ax)
        xc = x - mu.reshape(bs)
        var = (xc * xc).mean(axis=ax)
        inv = 1 / np.sqrt(var + t(STANDARD_EPS))
        x_norm = xc * inv.reshape(bs)
        y = x_norm * self.weight.data.reshape(bs) + self.bias.data.reshape(bs)
        mom = t(STANDARD_MOMENTUM)
        unbiased = var * t(m / max(m - 1, 1))
        object.__setattr__(self, "running_mean", (1 - mom) * self.running_mean + mom * mu)
        object.__setattr__(self, "running_var", (1 - mom) * self.running_var + mom * unbiased)
        self._save(("train", (x_norm, inv)))
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        kind, cache = self._take()
        if kind == "darknet":
            dx, dscale, dbias = norm_darknet.batchnorm_darknet_backward(dout, cache)
            self.weight.accumulate(dscale)
            self.bias.accumulate(dbias)
            return dx
        ax = (0,) + tuple(range(2, dout.ndim))
        bs = (1, -1) + (1,) * (dout.ndim - 2)
        x_norm, d = cache
        self.bias.accumulate(dout.sum(axis=ax))                 # BN 2.5
        self.weight.accumulate((dout * x_norm).sum(axis=ax))    # BN 2.6
        dxn = dout * self.weight.data.reshape(bs)
        if kind == "eval":
            return dxn / d.reshape(bs)
        # BN 2.1–2.3 collapsed: dz = (1/σ)(dẑ − mean(dẑ) − ẑ·mean(dẑ·ẑ))
        return d.reshape(bs) * (dxn - dxn.mean(axis=ax, keepdims=True)
                                - x_norm * (dxn * x_norm).mean(axis=ax, keepdims=True))

    def extra_repr(self) -> str:
        return f"{self.channels}, numerics={self.numerics}"
