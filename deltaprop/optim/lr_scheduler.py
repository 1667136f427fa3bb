"""Learning-rate schedules with PyTorch's semantics: build after the optimizer, call ``scheduler.step()``
after ``optimizer.step()`` (once per epoch or per iteration), read ``get_last_lr()``.

The recursive (chainable) formulas and closed forms are PyTorch's, so the learning rates match
``torch.optim.lr_scheduler`` number for number. ``state_dict()`` is a JSON-able dict of Python values.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ..errors import StateDictError
from .optimizer import Optimizer


class LRScheduler:
    """Base class: sets ``group["lr"]`` of every parameter group from ``get_lr()`` at each ``step()``."""

    _hyper: tuple = ()          # constructor arguments saved in the state dict

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            for i, g in enumerate(optimizer.param_groups):
                if "initial_lr" not in g:
                    raise KeyError(f"param_groups[{i}] has no 'initial_lr': resume a scheduler (last_epoch >= 0) "
                                   f"only after loading the optimizer's state dict")
        self.base_lrs: List[float] = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> List[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _lrs(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self, epoch: Optional[int] = None) -> None:
        """Advance one epoch (or jump to ``epoch``, using the closed form where there is one)."""
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: Optional[int] = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = int(epoch)
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for g, lr in zip(self.optimizer.param_groups, values):
            g["lr"] = float(lr)
        self._last_lr = self._lrs()

    def get_last_lr(self) -> List[float]:
        """The learning rates the last ``step()`` set, one per parameter group."""
        return list(self._last_lr)

    # --- checkpoints -----------------------------------------------------------------------
    def _state_keys(self) -> tuple:
        return ("base_lrs", "last_epoch", "_step_count", "_last_lr") + self._hyper

    def _pack(self, key: str) -> Any:
        v = getattr(self, key)
        return list(v) if isinstance(v, (list, tuple)) else v

    def _unpack(self, key: str, value: Any) -> Any:
        return value

    def state_dict(self) -> Dict[str, Any]:
        """JSON-able dict (Python scalars and lists)."""
        return {k: self._pack(k) for k in self._state_keys()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        keys = set(self._state_keys())
        if not isinstance(state_dict, dict) or set(state_dict) != keys:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise StateDictError(f"{type(self).__name__} state dict must have the keys {sorted(keys)}, got {got}")
        n = len(self.optimizer.param_groups)
        for k in ("base_lrs", "_last_lr"):
            if len(state_dict[k]) != n:
                raise StateDictError(f"{type(self).__name__}: {k} has {len(state_dict[k])} entries, the optimizer "
                                     f"has {n} parameter groups")
        for k in self._state_keys():
            setattr(self, k, self._unpack(k, state_dict[k]))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={self._pack(k)!r}" for k in self._hyper)
        return f"{type(self).__name__}({args})"


class StepLR(LRScheduler):
    """lr × γ every ``step_size`` epochs."""

    _hyper = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self) -> List[float]:
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr × γ at each milestone epoch."""

    _hyper = ("milestones", "gamma")

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def _pack(self, key: str) -> Any:
        if key == "milestones":
            return sorted(self.milestones.elements())
        return super()._pack(key)

    def _unpack(self, key: str, value: Any) -> Any:
        return Counter(int(m) for m in value) if key == "milestones" else value

    def get_lr(self) -> List[float]:
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._lrs()]

    def _get_closed_form_lr(self) -> List[float]:
        ms = sorted(self.milestones.elements())
        return [b * self.gamma ** bisect_right(ms, self.last_epoch) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr × γ every epoch."""

    _hyper = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        if self._is_initial:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self) -> List[float]:
        return [b * self.gamma ** self.last_epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """η_t = η_min + (η_0 − η_min)(1 + cos(π t / T_max))/2 (SGDR without restarts), PyTorch's recursive form."""

    _hyper = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        e, t, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and e > 0:
            return [lo + (b - lo) * (1 + math.cos(e * math.pi / t)) / 2 for b in self.base_lrs]
        if (e - 1 - t) % (2 * t) == 0:
            return [lr + (b - lo) * (1 - math.cos(math.pi / t)) / 2 for b, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t)) * (lr - lo) + lo
                for lr in self._lrs()]

    def _get_closed_form_lr(self) -> List[float]:
        lo = self.eta_min
        return [lo + (b - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2 for b in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` over ``total_iters`` steps."""

    _hyper = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        if not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        s, f, n = self.start_factor, self.end_factor, self.total_iters
        if self.last_epoch == 0:
            return [lr * s for lr in self._lrs()]
        if self._is_initial or self.last_epoch > n:
            return self._lrs()
        return [lr * (1.0 + (f - s) / (n * s + (self.last_epoch - 1) * (f - s))) for lr in self._lrs()]

    def _get_closed_form_lr(self) -> List[float]:
        s, f, n = self.start_factor, self.end_factor, self.total_iters
        return [b * (s + (f - s) * min(n, self.last_epoch) / n) for b in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr × λ(epoch), one function or one per group (the functions are not saved)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Union[Callable[[int], float], Sequence[Callable]],
                 last_epoch: int = -1) -> None:
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [b * f(self.last_epoch) for f, b in zip(self.lr_lambdas, self.base_lrs)]


class SequentialLR(LRScheduler):
    """Run ``schedulers[i]`` between ``milestones[i-1]`` and ``milestones[i]`` (e.g. LinearLR warm-up, then cosine)."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int],
                 last_epoch: int = -1) -> None:
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler")
        for i, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(s).__name__}) belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(schedulers)} schedulers need {len(schedulers) - 1} milestones, "
                             f"got {len(milestones)}")
        self._schedulers = list(schedulers)
        self._milestones = [int(m) for m in milestones]
        self.last_epoch = int(last_epoch) + 1
        self.optimizer = optimizer
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self._step_count = 0
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"]
        for s in self._schedulers:          # undo the initial step each scheduler made
            s.last_epoch -= 1
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def step(self) -> None:  # type: ignore[override]
        self._step_count += 1
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            sched._update_lr(0)
        else:
            sched.step()
        self._last_lr = sched.get_last_lr()

    def _state_keys(self) -> tuple:
        return ("base_lrs", "last_epoch", "_step_count", "_last_lr", "_milestones", "_schedulers")

    def _pack(self, key: str) -> Any:
        if key == "_schedulers":
            return [s.state_dict() for s in self._schedulers]
        return super()._pack(key)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        subs = state_dict.get("_schedulers") if isinstance(state_dict, dict) else None
        if not isinstance(subs, list) or len(subs) != len(self._schedulers):
            raise StateDictError(f"SequentialLR state dict needs '_schedulers' with {len(self._schedulers)} entries")
        for s, sd in zip(self._schedulers, subs):
            s.load_state_dict(sd)
        super().load_state_dict(state_dict)

    def _unpack(self, key: str, value: Any) -> Any:
        return self._schedulers if key == "_schedulers" else value
