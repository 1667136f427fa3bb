"""Darknet's learning-rate policies and burn-in (optim/darknet_policy.py) over 1000 batches, against a
plain float64 re-derivation from docs/equations.md §10 / get_current_rate."""
import math

import numpy as np
import pytest

from deltaprop.errors import ConfigError
from deltaprop.optim.darknet_policy import DarknetLR, darknet_learning_rate, darknet_rates

N = np.arange(0, 1000)


def expected(n, lr, policy, burn_in=0, power=4.0, step=1, scale=1.0, steps=(), scales=(), gamma=1.0,
             max_batches=0):
    if n < burn_in:
        return lr * (n / burn_in) ** power
    if policy == "constant":
        return lr
    if policy == "step":
        return lr * scale ** (n // step)
    if policy == "steps":
        r = lr
        for s, c in zip(steps, scales):
            if n >= s:
                r *= c
            else:
                break
        return r
    if policy == "exp":
        return lr * gamma ** n
    if policy == "poly":
        return lr * (1 - n / max_batches) ** power
    if policy == "sigmoid":
        return lr / (1 + math.exp(gamma * (n - step)))
    raise AssertionError(policy)


CASES = [
    dict(policy="constant"),
    dict(policy="constant", burn_in=100),
    dict(policy="constant", burn_in=250, power=2.0),
    dict(policy="step", step=100, scale=0.5),
    dict(policy="step", step=37, scale=0.9, burn_in=50),
    dict(policy="steps", steps=[100, 400, 400, 800], scales=[0.1, 0.5, 2.0, 0.1]),
    dict(policy="steps", steps=[300, 600], scales=[0.1, 0.1], burn_in=200),
    dict(policy="exp", gamma=0.995),
    dict(policy="poly", power=4.0, max_batches=1000),
    dict(policy="poly", power=0.9, max_batches=1200, burn_in=100),
    dict(policy="sigmoid", gamma=0.02, step=500),
    dict(policy="sigmoid", gamma=-0.01, step=300, burn_in=10),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_policy_matches_derivation_float64(case):
    cfg = DarknetLR(learning_rate=0.01, float32=False, **case)
    got = darknet_rates(cfg, N)
    want = np.array([expected(int(n), 0.01, **case) for n in N])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", CASES[::3], ids=lambda c: c["policy"])
def test_float32_mode_rounds_like_c(case):
    cfg = DarknetLR(learning_rate=0.01, **case)
    got = darknet_rates(cfg, N)
    want = np.array([expected(int(n), 0.01, **case) for n in N])
    assert np.all(got == got.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-30)


def test_burn_in_first_update_and_end():
    cfg = DarknetLR(learning_rate=0.001, burn_in=1000, float32=False)
    assert darknet_learning_rate(0, cfg) == 0.0
    assert darknet_learning_rate(1, cfg) == pytest.approx(0.001 * 1e-12)
    assert darknet_learning_rate(500, cfg) == pytest.approx(0.001 / 16)
    assert darknet_learning_rate(1000, cfg) == 0.001


def test_random_policy_is_lr_times_uniform_power():
    cfg = DarknetLR(learning_rate=0.1, policy="random", power=2.0, float32=False)
    r = np.array([cfg(5, np.random.default_rng(i)) for i in range(200)])
    u = np.array([np.random.default_rng(i).random() for i in range(200)])
    np.testing.assert_allclose(r, 0.1 * u ** 2, rtol=1e-12)
    assert DarknetLR(learning_rate=0.1, policy="random", burn_in=10, float32=False)(5) == 0.1 * 0.5 ** 4


def test_sigmoid_unsigned_wrap_quirk():
    cfg = DarknetLR(learning_rate=0.1, policy="sigmoid", gamma=0.1, step=50, sigmoid_unsigned_wrap=True)
    assert cfg(10) == 0.0  # size_t(n − step) wraps round: exp(huge) = inf
    assert cfg(50) == pytest.approx(0.05)


def test_from_net_options_defaults_and_parsing():
    cfg = DarknetLR.from_net_options({})
    assert (cfg.learning_rate, cfg.policy, cfg.power, cfg.burn_in) == (0.001, "constant", 4.0, 0)
    cfg = DarknetLR.from_net_options({"learning_rate": "0.1", "policy": "steps", "steps": "400000,450000",
                                      "scales": ".1,.1", "burn_in": "1000", "max_batches": "500200"})
    assert cfg.steps == [400000, 450000] and cfg.scales == [0.1, 0.1] and cfg.burn_in == 1000
    # step/scale are read only for policy=step (as parse_net_options does)
    assert DarknetLR.from_net_options({"policy": "constant", "step": "7"}).step == 1
    with pytest.raises(ConfigError, match="policy"):
        DarknetLR.from_net_options({"policy": "cosine"})
    with pytest.raises(ConfigError, match="steps and scales"):
        DarknetLR.from_net_options({"policy": "steps", "steps": "10"})
    with pytest.raises(ConfigError, match="learning_rate"):
        DarknetLR.from_net_options({"learning_rate": "fast"})
