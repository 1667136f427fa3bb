"""Darknet's learning rate at batch n (pjreddie f6afaabc, ``network.c: get_current_rate``; docs/equations.md §10).

``n`` is Darknet's ``get_current_batch`` = ``seen / batch`` (batch = the full batch, all subdivisions), read
AFTER ``seen`` has counted the batch being applied: the first update uses n = 1.

- ``n < burn_in``: ``lr·(n/burn_in)^power`` (``power`` from [net], default 4), whatever the policy;
- constant: ``lr``;  step: ``lr·scale^⌊n/step⌋``;  steps: ``lr·Π_{i: steps[i] ≤ n} scales[i]`` (the product
  stops at the first step above n);  exp: ``lr·gamma^n``;  poly: ``lr·(1 − n/max_batches)^power``;
  sigmoid: ``lr/(1 + e^{gamma·(n − step)})``;  random: ``lr·u^power``, u ~ U(0, 1).

Darknet returns a C ``float``; so does this (a Python float holding the float32 value) unless
``float32=False``. One C quirk is opt-in: in pjreddie's code ``n − step`` of the sigmoid policy is computed
in unsigned ``size_t`` arithmetic, so for n < step it wraps round to ~1.8e19 and the rate is 0 (gamma > 0);
``sigmoid_unsigned_wrap=True`` reproduces that, the default is the formula above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random")
_F = np.float32


@dataclass
class DarknetLR:
    """The [net] keys that set the learning rate, with Darknet's defaults (``parse_net_options``)."""
    learning_rate: float = 0.001
    policy: str = "constant"
    burn_in: int = 0
    power: float = 4.0
    step: int = 1
    scale: float = 1.0
    steps: List[int] = field(default_factory=list)
    scales: List[float] = field(default_factory=list)
    gamma: float = 1.0
    max_batches: int = 0
    float32: bool = True
    sigmoid_unsigned_wrap: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"[net] policy={self.policy!r} is not a Darknet policy ({', '.join(POLICIES)})")
        if self.policy == "steps" and len(self.scales) < len(self.steps):
            raise ConfigError(f"[net] policy=steps needs a scale per step: steps={self.steps}, scales={self.scales}")
        if self.policy == "step" and self.step <= 0:
            raise ConfigError("[net] policy=step needs step > 0")
        if self.policy == "poly" and self.max_batches <= 0:
            raise ConfigError("[net] policy=poly needs max_batches > 0")

    @classmethod
    def from_net_options(cls, options: Mapping[str, Any], **overrides: Any) -> "DarknetLR":
        """From a [net] section (values as strings or numbers), as ``parse_net_options`` reads them:
        step/scale only for policy=step, steps/scales for steps, gamma for exp and sigmoid."""
        def get(key, conv, default):
            v = options.get(key)
            if v is None or (isinstance(v, str) and not v.strip()):
                return default
            try:
                return conv(v.strip() if isinstance(v, str) else v)
            except (TypeError, ValueError):
                raise ConfigError(f"[net] {key}={v!r}: expected a {conv.__name__}") from None

        def ints(v):
            return int(float(v))
        policy = str(options.get("policy", "constant")).strip()
        kw = dict(learning_rate=get("learning_rate", float, 0.001), policy=policy,
                  burn_in=get("burn_in", ints, 0), power=get("power", float, 4.0),
                  max_batches=get("max_batches", ints, 0))
        if policy in ("step", "sigmoid"):
            kw["step"] = get("step", ints, 1)
        if policy == "step":
            kw["scale"] = get("scale", float, 1.0)
        if policy in ("exp", "sigmoid"):
            kw["gamma"] = get("gamma", float, 1.0)
        if policy == "steps":
            s, c = options.get("steps"), options.get("scales")
            if s is None or c is None:
                raise ConfigError("[net] policy=steps must have steps and scales")
            try:
                kw["steps"] = [int(float(v)) for v in str(s).split(",")]
                kw["scales"] = [float(v) for v in str(c).split(",")]
            except ValueError:
                raise ConfigError(f"[net] steps={s!r}, scales={c!r}: expected comma-separated numbers") from None
        kw.update(overrides)
        return cls(**kw)

    def __call__(self, n: int, rng: Optional[np.random.Generator] = None) -> float:
        return darknet_learning_rate(n, self, rng)


def darknet_learning_rate(n: int, cfg: DarknetLR, rng: Optional[np.random.Generator] = None) -> float:
    """``get_current_rate`` at batch ``n`` (see the module docstring)."""
    if n < 0:
        raise ValueError(f"batch number must be ≥ 0, got {n}")
    lr = cfg.learning_rate
    if cfg.float32:
        lr = float(_F(lr))
    if n < cfg.burn_in:
        frac = float(_F(n) / _F(cfg.burn_in)) if cfg.float32 else n / cfg.burn_in
        rate = lr * math.pow(frac, cfg.power)
    elif cfg.policy == "constant":
        rate = lr
    elif cfg.policy == "step":
        rate = lr * math.pow(cfg.scale, n // cfg.step)
    elif cfg.policy == "steps":
        rate = lr
        for s, c in zip(cfg.steps, cfg.scales):
            if s > n:
                break
            rate = float(_F(rate) * _F(c)) if cfg.float32 else rate * c
    elif cfg.policy == "exp":
        rate = lr * math.pow(cfg.gamma, n)
    elif cfg.policy == "poly":
        frac = float(_F(1) - _F(n) / _F(cfg.max_batches)) if cfg.float32 else 1 - n / cfg.max_batches
        rate = lr * (math.pow(frac, cfg.power) if frac >= 0 else float("nan"))
    elif cfg.policy == "sigmoid":
        d = n - cfg.step
        if cfg.sigmoid_unsigned_wrap and d < 0:
            d = float(_F(d + 2 ** 64))
        arg = cfg.gamma * d
        rate = lr * (0.0 if arg > 709 else 1.0 / (1.0 + math.exp(arg)))
    else:  # random
        u = float((rng if rng is not None else np.random.default_rng()).random())
        rate = lr * math.pow(u, cfg.power)
    return float(_F(rate)) if cfg.float32 else float(rate)


def darknet_rates(cfg: DarknetLR, batches: Sequence[int]) -> np.ndarray:
    """The rate at each batch number (float64 array), e.g. to plot a schedule."""
    return np.array([darknet_learning_rate(int(n), cfg) for n in batches], dtype=np.float64)
