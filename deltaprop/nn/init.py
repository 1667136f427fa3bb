"""Weight initialisation, PyTorch's names and formulas (``nn.init``). Each fills ``param.data`` in place
from the global generator (``deltaprop.manual_seed``) and returns the array."""
from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np

from .. import backend
from .parameter import Parameter

ArrayLike = Union[np.ndarray, Parameter]


def _arr(t: ArrayLike) -> np.ndarray:
    return t.data if isinstance(t, Parameter) else t


def _fans(a: np.ndarray) -> Tuple[int, int]:
    if a.ndim < 2:
        raise ValueError(f"fan in/out need at least 2 dimensions, got shape {a.shape}")
    receptive = int(np.prod(a.shape[2:])) if a.ndim > 2 else 1
    return a.shape[1] * receptive, a.shape[0] * receptive


def _fan(a: np.ndarray, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(a)
    return fan_in if mode == "fan_in" else fan_out


def calculate_gain(nonlinearity: str, param: float = None) -> float:
    """PyTorch's recommended gains: linear/sigmoid 1, tanh 5/3, relu √2, leaky_relu √(2/(1+slope²))."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def uniform_(t: ArrayLike, a: float = 0.0, b: float = 1.0) -> np.ndarray:
    """Fill with U(a, b)."""
    x = _arr(t)
    x[...] = backend.rng().uniform(a, b, size=x.shape)
    return x


def normal_(t: ArrayLike, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Fill with N(mean, std²)."""
    x = _arr(t)
    x[...] = backend.rng().normal(mean, std, size=x.shape)
    return x


def constant_(t: ArrayLike, val: float) -> np.ndarray:
    """Fill with ``val``."""
    x = _arr(t)
    x[...] = val
    return x


def zeros_(t: ArrayLike) -> np.ndarray:
    """Fill with 0."""
    return constant_(t, 0.0)


def ones_(t: ArrayLike) -> np.ndarray:
    """Fill with 1."""
    return constant_(t, 1.0)


def xavier_uniform_(t: ArrayLike, gain: float = 1.0) -> np.ndarray:
    """Glorot: U(±gain·√(6/(fan_in + fan_out)))."""
    fan_in, fan_out = _fans(_arr(t))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def xavier_normal_(t: ArrayLike, gain: float = 1.0) -> np.ndarray:
    """Glorot: N(0, (gain·√(2/(fan_in + fan_out)))²)."""
    fan_in, fan_out = _fans(_arr(t))
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(t: ArrayLike, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> np.ndarray:
    """He: U(±gain·√(3/fan)), gain = ``calculate_gain(nonlinearity, a)``, fan = fan_in or fan_out (``mode``)."""
    fan = _fan(_arr(t), mode)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(t, -bound, bound)


def kaiming_normal_(t: ArrayLike, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> np.ndarray:
    """He: N(0, (gain/√fan)²), gain = ``calculate_gain(nonlinearity, a)``, fan = fan_in or fan_out (``mode``)."""
    fan = _fan(_arr(t), mode)
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def default_layer_init_(weight: ArrayLike, bias: ArrayLike = None) -> None:
    """PyTorch's default for Linear and Conv: kaiming_uniform(a=√5) on the weight, i.e. U(±1/√fan_in),
    and the bias U(±1/√fan_in)."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _fans(_arr(weight))
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
