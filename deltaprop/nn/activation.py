"""Activation layers: thin wrappers around ``functional.activation`` (docs/equations.md §5)."""
from __future__ import annotations

import numpy as np

from ..functional import activation as F
from .module import Module


class _Elementwise(Module):
    _fwd = None
    _bwd = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, cache = type(self)._fwd(x, *self._args())
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return type(self)._bwd(dout, self._take())

    def _args(self) -> tuple:
        return ()


class Sigmoid(_Elementwise):
    """Logistic σ(λz) = 1/(1 + e^{−λz}); ``steepness`` λ as seed 004 (default 1); σ' = λσ(1 − σ)."""
    _fwd = staticmethod(F.sigmoid_forward)
    _bwd = staticmethod(F.sigmoid_backward)

    def __init__(self, steepness: float = 1.0) -> None:
        super().__init__()
        self.steepness = float(steepness)

    def _args(self) -> tuple:
        return (self.steepness,)

    def extra_repr(self) -> str:
        return "" if self.steepness == 1.0 else f"steepness={self.steepness}"


class ReLU(_Elementwise):
    """max(0, z); f' = 1[z > 0]."""
    _fwd = staticmethod(F.relu_forward)
    _bwd = staticmethod(F.relu_backward)


class LeakyReLU(_Elementwise):
    """z > 0 ? z : slope·z; PyTorch's default slope 0.01 (Darknet's ``leaky`` is 0.1)."""
    _fwd = staticmethod(F.leaky_relu_forward)
    _bwd = staticmethod(F.leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def _args(self) -> tuple:
        return (self.negative_slope,)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Tanh(_Elementwise):
    """tanh; f' = 1 − tanh²."""
    _fwd = staticmethod(F.tanh_forward)
    _bwd = staticmethod(F.tanh_backward)


class Identity(Module):
    """Linear activation: f(z) = z, f' = 1."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout


class _AlongDim(_Elementwise):
    """An activation normalised along one dimension (``dim``)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = int(dim)

    def _args(self) -> tuple:
        return (self.dim,)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """Softmax along ``dim`` as a layer; backward is the vector–Jacobian product (§5)."""
    _fwd = staticmethod(F.softmax_forward)
    _bwd = staticmethod(F.softmax_backward)


class LogSoftmax(_AlongDim):
    """log softmax along ``dim`` (pairs with ``NLLLoss``)."""
    _fwd = staticmethod(F.log_softmax_forward)
    _bwd = staticmethod(F.log_softmax_backward)
