"""Numerical gradient checking (docs/equations.md §7, seed 004): centred differences in float64.

``(f(x+h) − f(x−h)) / 2h`` is compared with the analytic gradient per tensor by the relative error
``‖a − n‖ / max(‖a‖ + ‖n‖, 1e-12)``. For a module the scalar is ``C = Σ out ⊙ R`` with a fixed random R,
so ``dout = R`` drives its backward. Coordinates whose one-sided slopes disagree (a kink of ReLU, a
max-pool tie or an |x| in Lp pooling is within h) are skipped and counted, never allowed to fail a
correct gradient; but a tensor of which NOTHING could be compared (every coordinate, or every direction, a
kink) fails the check, with its name in ``unchecked``: an error of 0 over no coordinates proves nothing.
The random state is restored before every forward pass, so dropout is repeatable.
For big tensors, ``directional=True`` compares directional derivatives along random unit vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import backend
from .errors import DTypeError


def relative_error(a: np.ndarray, n: np.ndarray) -> float:
    """‖a − n‖ / max(‖a‖ + ‖n‖, 1e-12): 0 for equal tensors, 1 for opposite ones."""
    a = np.asarray(a, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12))


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6,
                       kink_tol: float = 1e-3) -> tuple:
    """Centred-difference gradient (§7, the numerical gradient, centred) of the scalar ``f()`` with respect to the
    array ``x`` (perturbed in place).

    Returns ``(grad, kinks)``: ``kinks`` is a boolean mask of coordinates where the forward and backward
    one-sided slopes differ by more than ``kink_tol`` (relative), i.e. a non-differentiable point lies
    within h; their numerical value is unreliable and is set to NaN.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    kinks = np.zeros(x.shape, dtype=bool)
    flat = x.reshape(-1)
    if flat.base is not x and not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array to perturb in place")
    g = grad.reshape(-1)
    k = kinks.reshape(-1)
    f0 = f()
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        right, left = (fp - f0) / h, (f0 - fm) / h
        g[i] = (fp - fm) / (2 * h)
        if abs(right - left) > kink_tol * max(abs(right) + abs(left), 1.0):
            k[i] = True
            g[i] = np.nan
    return grad, kinks


@dataclass
class GradcheckResult:
    """Per-tensor relative errors, with the number of kink coordinates (or directions) skipped in each.

    A tensor with something to check of which every coordinate (direction) was skipped is listed in
    ``unchecked`` and scores an error of ``inf``: the check fails and says why."""
    errors: Dict[str, float] = field(default_factory=dict)
    skipped: Dict[str, int] = field(default_factory=dict)
    unchecked: List[str] = field(default_factory=list)

    def record(self, name: str, analytic: np.ndarray, numeric: np.ndarray, skipped: int) -> None:
        """Score tensor ``name`` on the compared values; with none compared but some skipped, fail it."""
        if numeric.size == 0 and skipped:
            self.unchecked.append(name)
            self.errors[name] = float("inf")
        else:
            self.errors[name] = relative_error(analytic, numeric)
        self.skipped[name] = skipped

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    def ok(self, tol: float = 1e-6) -> bool:
        return self.max_error < tol

    def __str__(self) -> str:
        def one(k: str, v: float) -> str:
            if k in self.unchecked:
                return f"{k}: NOTHING CHECKED (all {self.skipped[k]} skipped as kinks; move the point off them)"
            return f"{k}: {v:.2e}" + (f" ({self.skipped[k]} kinks skipped)" if self.skipped.get(k) else "")
        return ", ".join(one(k, v) for k, v in self.errors.items())


def _compare(name: str, analytic: np.ndarray, numeric: np.ndarray, kinks: np.ndarray, res: GradcheckResult) -> None:
    keep = ~kinks
    res.record(name, np.asarray(analytic)[keep], numeric[keep], int(kinks.sum()))


def _require_f64(arrays: Sequence[np.ndarray], what: str) -> None:
    for a in arrays:
        if a.dtype != np.float64:
            raise DTypeError(f"gradcheck needs float64 {what} (got {a.dtype}); call .double() first")


def check_module(module, x: np.ndarray, dout: Optional[np.ndarray] = None, h: float = 1e-6,
                 directional: bool = False, n_directions: int = 6, check_input: bool = True,
                 seed: int = 0) -> GradcheckResult:
    """Check ``module.backward`` (input gradient and every parameter gradient) against centred differences.

    The module and ``x`` must be float64 (``module.double()``). ``C = Σ module(x) ⊙ dout``.
    With ``directional=True`` each tensor is checked along ``n_directions`` random unit vectors instead of
    coordinate by coordinate (for layers too big for a full sweep).
    """
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    _require_f64([x] + [p.data for _, p in params], "input and parameters")
    x = np.ascontiguousarray(x).copy()
    rs = np.random.default_rng(seed)
    rng_state = backend.get_rng_state()

    def forward():
        backend.set_rng_state(rng_state)
        with backend.enable_grad():
            return module(x)

    out = forward()
    if dout is None:
        dout = rs.standard_normal(out.shape)
    dout = np.asarray(dout, dtype=np.float64)
    module.zero_grad()
    dx = module.backward(dout.copy())
    analytic = {n: (p.grad.copy() if p.grad is not None else np.zeros_like(p.data)) for n, p in params}

    def f() -> float:
        backend.set_rng_state(rng_state)
        with backend.enable_grad():
            return float(np.sum(module(x) * dout))

    res = GradcheckResult()
    targets = ([("input", x, dx)] if check_input and dx is not None else []) + \
              [(n, p.data, analytic[n]) for n, p in params]
    for name, arr, a_grad in targets:
        if directional:
            _directional(name, arr, a_grad, f, h, n_directions, rs, res)
        else:
            if not arr.flags.c_contiguous:
                raise ValueError(f"gradcheck: parameter {name} is not contiguous")
            num, kinks = numerical_gradient(f, arr, h)
            _compare(name, a_grad, num, kinks, res)
    backend.set_rng_state(rng_state)
    return res


def _directional(name, arr, a_grad, f, h, n_dirs, rs, res) -> None:
    an, nu = [], []
    skipped = 0
    for _ in range(n_dirs):
        v = rs.standard_normal(arr.shape)
        v /= np.linalg.norm(v)
        old = arr.copy()
        arr += h * v
        fp = f()
        arr[...] = old - h * v
        fm = f()
        arr[...] = old
        f0 = f()
        right, left = (fp - f0) / h, (f0 - fm) / h
        if abs(right - left) > 1e-3 * max(abs(right) + abs(left), 1.0):
            skipped += 1
            continue
        an.append(float(np.sum(a_grad * v)))
        nu.append((fp - fm) / (2 * h))
    res.record(name, np.array(an), np.array(nu), skipped)


def check_loss(loss, pred: np.ndarray, target, h: float = 1e-6) -> GradcheckResult:
    """Check ``loss.backward()`` (∂C/∂pred) against centred differences of ``loss(pred, target)``."""
    _require_f64([pred], "predictions")
    pred = np.ascontiguousarray(pred).copy()
    loss(pred, target)
    analytic = np.asarray(loss.backward(), dtype=np.float64)
    num, kinks = numerical_gradient(lambda: float(loss(pred, target)), pred, h)
    res = GradcheckResult()
    _compare("pred", analytic, num, kinks, res)
    return res


def check_function(f: Callable[..., float], grads: Callable[..., List[np.ndarray]],
                   arrays: Sequence[np.ndarray], names: Optional[Sequence[str]] = None,
                   h: float = 1e-6) -> GradcheckResult:
    """Generic check: ``f(*arrays) -> float`` and ``grads(*arrays) -> [∂f/∂array ...]``."""
    _require_f64(arrays, "arrays")
    arrays = [np.ascontiguousarray(a).copy() for a in arrays]
    analytic = grads(*arrays)
    res = GradcheckResult()
    for i, (arr, a_grad) in enumerate(zip(arrays, analytic)):
        num, kinks = numerical_gradient(lambda: float(f(*arrays)), arr, h)
        _compare(names[i] if names else f"arg{i}", a_grad, num, kinks, res)
    return res
