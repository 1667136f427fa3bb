"""Darknet's activation functions (``activations.c``), as a module usable after any cfg layer.

Forward is Darknet's formula; backward multiplies by the derivative written, as Darknet does, in terms of
the activated output y (leaky ``y > 0 ? 1 : 0.1``, logistic ``(1 − y)·y``, ...; docs/equations.md §5 and §10).
AlexeyAB's swish, mish and hard_mish take theirs from the input z, as that fork does (``INPUT_ACTIVATIONS``,
``functional.activation_smooth``).
Leaky, relie, relu, logistic and tanh use the engine's own kernels (``functional.activation``: one home per
equation; ``y > 0`` is the same test as ``z > 0``). Away from the kinks it is the exact derivative, so the
gradient checks hold.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

from ..functional import activation_smooth as smooth
from ..functional.activation import (leaky_relu_derivative, leaky_relu_into, relu_forward, sigmoid_derivative,
                                     sigmoid_forward, tanh_derivative)
from ..nn.module import Module


def _t(y: np.ndarray, v: float):
    return y.dtype.type(v)


def _logistic(x):
    return sigmoid_forward(x)[0]


def _loggy(x):
    return (2 * sigmoid_forward(x)[0] - 1).astype(x.dtype, copy=False)


def _elu(x):
    return np.where(x >= 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _selu(x):
    a, s = 1.6732, 1.0507
    return np.where(x >= 0, _t(x, s) * x, _t(x, s * a) * np.expm1(np.minimum(x, 0))).astype(x.dtype, copy=False)


def _plse(x):
    out = np.where(x < -4, _t(x, .01) * (x + 4), _t(x, .125) * x + _t(x, .5))
    return np.where(x > 4, _t(x, .01) * (x - 4) + 1, out).astype(x.dtype, copy=False)


def _lhtan(x):
    out = np.where(x < 0, _t(x, .001) * x, x)
    return np.where(x > 1, _t(x, .001) * (x - 1) + 1, out).astype(x.dtype, copy=False)


LEAKY_SLOPE = 0.1   # Darknet's leaky (activations.c): 0.1·x for x ≤ 0


# name -> (forward f(x), gradient g(y) from the OUTPUT y, as Darknet's *_gradient functions)
OUTPUT_ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {
    "linear": (lambda x: x, None),
    "leaky": (lambda x: leaky_relu_into(x, LEAKY_SLOPE, np.empty_like(x)),
              lambda y: leaky_relu_derivative(y > 0, LEAKY_SLOPE, y.dtype)),
    "relu": (lambda x: relu_forward(x)[0], lambda y: (y > 0).astype(y.dtype)),
    "logistic": (_logistic, sigmoid_derivative),
    "loggy": (_loggy, lambda y: 2 * (1 - (y + 1) / 2) * ((y + 1) / 2)),
    "tanh": (np.tanh, tanh_derivative),
    "elu": (_elu, lambda y: np.where(y >= 0, _t(y, 1), y + 1)),
    "selu": (_selu, lambda y: np.where(y >= 0, _t(y, 1.0507), y + _t(y, 1.0507 * 1.6732))),
    "relie": (lambda x: leaky_relu_into(x, .01, np.empty_like(x)),
              lambda y: leaky_relu_derivative(y > 0, .01, y.dtype)),
    "ramp": (lambda x: x * (x > 0) + _t(x, .1) * x, lambda y: (y > 0).astype(y.dtype) + _t(y, .1)),
    "hardtan": (lambda x: np.clip(x, -1, 1), lambda y: ((y > -1) & (y < 1)).astype(y.dtype)),
    "lhtan": (_lhtan, lambda y: np.where((y > 0) & (y < 1), _t(y, 1), _t(y, .001))),
    "plse": (_plse, lambda y: np.where((y < 0) | (y > 1), _t(y, .01), _t(y, .125))),
}

# name -> (forward f(z), derivative f'(z) from the INPUT z): AlexeyAB's (its activation_input / output_sigmoid)
INPUT_ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {
    "swish": (smooth.swish_forward, smooth.swish_derivative),
    "mish": (smooth.mish_forward, smooth.mish_derivative),
    "hard_mish": (smooth.hard_mish_forward, smooth.hard_mish_derivative),
}

#: Every activation a cfg may name: name -> (forward, derivative); the derivative takes the output for
#: ``OUTPUT_ACTIVATIONS`` and the input for ``INPUT_ACTIVATIONS``.
ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {**OUTPUT_ACTIVATIONS, **INPUT_ACTIVATIONS}


def activate(x: np.ndarray, name: str) -> np.ndarray:
    """Darknet's ``activate_array`` (a new array)."""
    return ACTIVATIONS[name][0](x)


def gradient(v: np.ndarray, name: str) -> np.ndarray:
    """Darknet's ``gradient_array`` factor: from the activated output for ``OUTPUT_ACTIVATIONS``, from the input
    for ``INPUT_ACTIVATIONS`` (swish, mish, hard_mish)."""
    g = ACTIVATIONS[name][1]
    return np.ones_like(v) if g is None else g(v)


def leaky_c(x: np.ndarray) -> np.ndarray:
    """Leaky as both Darknets' CPU code computes it (pjreddie's ``leaky_activate``, AlexeyAB's
    ``activate_array_cpu_custom``: ``.1*x`` with a DOUBLE 0.1, rounded to the dtype): the same function as
    ``leaky_relu_into`` with slope 0.1, another rounding of the negative side."""
    return np.where(x > 0, x, (np.float64(LEAKY_SLOPE) * x.astype(np.float64)).astype(x.dtype))


class DarknetActivation(Module):
    """An activation by Darknet's name; ``linear`` is the identity (no cache, no copy). ``c_rounding``: repeat
    the C code's roundings where they differ from the engine's (``leaky_c``); the network sets it with
    ``sums="darknet"`` (``DarknetNet.set_sums``)."""

    c_rounding = False

    def __init__(self, name: str = "logistic") -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown Darknet activation {name!r} (known: {', '.join(ACTIVATIONS)})")
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.name == "linear":
            self._save(True)
            return x
        if self.name == "leaky" and self.c_rounding:
            y = leaky_c(x)
            self._save(y)
            return y
        y = ACTIVATIONS[self.name][0](x)
        self._save(x if self.name in INPUT_ACTIVATIONS else y)   # what its derivative is written in
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        v = self._take()
        if self.name == "linear":
            return dout
        return dout * ACTIVATIONS[self.name][1](v)

    def get_config(self):
        """The activation's settings (its Darknet name), for saving a model."""
        return {"name": self.name}

    def extra_repr(self) -> str:
        return self.name
