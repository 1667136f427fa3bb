"""nn.init: PyTorch's formulas for the bounds and spreads of each initialiser (fan in/out of a conv weight count
its receptive field), the gains as torch computes them, in place on an array or a Parameter, and a clear error
for a bad ``mode``."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deltaprop import manual_seed, nn
from deltaprop.nn import init

SHAPE = (64, 32, 3, 3)               # fan_in = 32·9 = 288, fan_out = 64·9 = 576
FAN_IN, FAN_OUT = 288, 576


def _fresh() -> np.ndarray:
    return np.full(SHAPE, np.nan, dtype=np.float64)


@pytest.mark.parametrize("name,kwargs,kind,spread", [
    ("xavier_uniform_", {"gain": 2.0}, "uniform", 2.0 * math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
    ("xavier_normal_", {"gain": 0.5}, "normal", 0.5 * math.sqrt(2.0 / (FAN_IN + FAN_OUT))),
    ("kaiming_uniform_", {"nonlinearity": "relu"}, "uniform", math.sqrt(2.0) * math.sqrt(3.0 / FAN_IN)),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, "uniform", 1.0 / math.sqrt(FAN_IN)),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}, "normal", math.sqrt(2.0) / math.sqrt(FAN_OUT)),
    ("kaiming_normal_", {"nonlinearity": "tanh"}, "normal", (5.0 / 3) / math.sqrt(FAN_IN)),
])
def test_spreads_follow_pytorchs_formulas(name, kwargs, kind, spread):
    manual_seed(0)
    x = _fresh()
    out = getattr(init, name)(x, **kwargs)
    assert out is x and np.isfinite(x).all()
    if kind == "uniform":                 # U(±bound): inside it, reaching close to it, std bound/√3
        assert np.abs(x).max() <= spread
        assert np.abs(x).max() > 0.99 * spread
        assert abs(x.std() / (spread / math.sqrt(3)) - 1) < 0.03
    else:                                 # N(0, std²)
        assert abs(x.std() / spread - 1) < 0.03
        assert abs(x.mean()) < 0.05 * spread


def test_fills_and_parameters():
    p = nn.Parameter(np.zeros((3, 4), np.float32))
    assert init.ones_(p) is p.data and (p.data == 1).all() and p.data.dtype == np.float32
    assert (init.zeros_(p) == 0).all()
    assert (init.constant_(p, 2.5) == 2.5).all()
    manual_seed(1)
    u = init.uniform_(np.empty(10000), -2.0, 3.0)
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.05
    n = init.normal_(np.empty(10000), 1.0, 0.5)
    assert abs(n.mean() - 1.0) < 0.02 and abs(n.std() - 0.5) < 0.02


def test_same_seed_same_weights():
    manual_seed(7)
    a = init.kaiming_uniform_(_fresh())
    manual_seed(7)
    assert np.array_equal(a, init.kaiming_uniform_(_fresh()))


def test_gains_equal_torch(torch_ref):
    for args in (("linear",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",), ("leaky_relu", 0.2),
                 ("conv2d",)):
        assert init.calculate_gain(*args) == pytest.approx(torch_ref.nn.init.calculate_gain(*args), rel=1e-12)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(_fresh(), mode="fan_avg")
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="2 dimensions"):
        init.xavier_uniform_(np.zeros(5))
