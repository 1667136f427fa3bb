"""deltaprop.gradcheck itself: it catches a wrong backward, skips kinks, and FAILS (saying so) a tensor of which
every coordinate or every direction was a kink: an error of 0 over nothing checked proves nothing."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop import nn
from deltaprop.gradcheck import check_function, check_loss, check_module


class WrongAtZeroReLU(nn.ReLU):
    """A ReLU whose backward is 123× too big where the input is exactly 0 (right elsewhere)."""

    def forward(self, x):
        self._x = x
        return super().forward(x)

    def backward(self, dout):
        dx = super().backward(dout)
        return np.where(self._x == 0, 123.0 * dout, dx)


def test_wrong_relu_at_zero_fails_when_every_coordinate_is_a_kink():
    x = np.zeros((2, 3))
    res = check_module(WrongAtZeroReLU(), x)
    assert not res.ok(1e-6)
    assert res.unchecked == ["input"] and res.skipped["input"] == 6
    assert "input: NOTHING CHECKED (all 6 skipped as kinks" in str(res)


def test_wrong_relu_at_zero_fails_when_every_direction_is_a_kink():
    res = check_module(WrongAtZeroReLU(), np.zeros((4, 5)), directional=True, n_directions=4)
    assert not res.ok(1e-6) and res.unchecked == ["input"] and res.skipped["input"] == 4
    assert "NOTHING CHECKED (all 4 skipped" in str(res)


def test_partly_kinked_tensor_is_checked_on_the_rest(rng):
    x = rng.standard_normal((3, 4))
    x[0, :2] = 0.0                                   # two kinks, ten coordinates still compared
    ok = check_module(nn.ReLU(), x)
    assert ok.ok(1e-6) and ok.skipped["input"] == 2 and ok.unchecked == []
    x[1, 1] = 0.0
    res = check_module(WrongAtZeroReLU(), x)         # wrong only at the kinks: skipped, passes (documented)
    assert res.ok(1e-6) and res.skipped["input"] == 3


def test_wrong_backward_away_from_kinks_fails(rng):
    class Doubled(nn.Tanh):
        def backward(self, dout):
            return 2.0 * super().backward(dout)
    res = check_module(Doubled(), rng.standard_normal((2, 3)))
    assert not res.ok(1e-3) and res.unchecked == []


def test_check_function_and_loss_report_unchecked(rng):
    res = check_function(lambda a: float(np.abs(a).sum()), lambda a: [np.full_like(a, 123.0)], [np.zeros(5)],
                         names=["a"])
    assert res.unchecked == ["a"] and res.max_error == float("inf")

    class L1:
        def __call__(self, pred, target):
            self.pred = pred
            return float(np.abs(pred - target).sum())

        def backward(self):
            return np.zeros_like(self.pred)
    res = check_loss(L1(), np.ones(4), np.ones(4))
    assert res.unchecked == ["pred"] and not res.ok()


@pytest.mark.parametrize("shape", [(0, 3)])
def test_empty_tensor_has_nothing_to_check_and_is_not_a_failure(shape):
    res = check_module(nn.ReLU(), np.zeros(shape))
    assert res.ok() and res.unchecked == []
