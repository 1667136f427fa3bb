"""Loss kernels (docs/equations.md §6). ``x_forward(pred, target, ...) -> (loss, cache)`` and
``x_backward(cache, grad=1.0) -> ∂C/∂pred``.

``reduction`` is PyTorch's: "mean", "sum" or "none". ``grad`` is the upstream gradient of the
returned loss: a scalar for "mean"/"sum", an array of the unreduced loss's shape (or a scalar) for
"none". Gradients keep the prediction's dtype (scalars are Python floats: no float64 promotion).
Inputs are assumed valid here; ``nn.loss`` validates them. Class scores use PyTorch's layouts:
(C,), (N, C) or (N, C, d1, ...), class axis 1. ``*_naive`` twins are loops written from §6 and
return ``(loss, grad)`` directly.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from .activation import sigmoid_forward

Grad = Union[float, np.ndarray]
LOG_CLAMP = -100.0      # BCELoss clamps its logs at −100, as PyTorch
PROB_EPS = 1e-12        # PyTorch's BCE backward: (x − y) / max(x(1 − x), 1e-12)


# --- helpers -------------------------------------------------------------------------------

def _reduce(per: np.ndarray, reduction: str, denom: Optional[float] = None):
    if reduction == "none":
        return per
    total = float(np.sum(per))
    if reduction == "sum":
        return total
    n = per.size if denom is None else denom
    return total / n if n else float("nan")


def _coef(grad: Grad, reduction: str, denom: float, dtype) -> Grad:
    """Per-element factor of the upstream gradient: g/denom (mean), g (sum), the array g (none)."""
    if reduction == "none":
        return np.asarray(grad, dtype=dtype) if isinstance(grad, np.ndarray) else float(grad)
    g = float(grad)
    if reduction == "mean":
        return g / denom if denom else 0.0
    return g


def class_rows(x: np.ndarray) -> np.ndarray:
    """View class scores (C,), (N, C) or (N, C, d...) as rows (M, C), class axis last."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def from_rows(d2: np.ndarray, shape: tuple) -> np.ndarray:
    """Inverse of ``class_rows``: rows (M, C) back to the layout ``shape``."""
    if len(shape) == 1:
        return d2[0]
    if len(shape) == 2:
        return d2
    moved = d2.reshape((shape[0],) + shape[2:] + (shape[1],))
    return np.ascontiguousarray(np.moveaxis(moved, -1, 1))


def label_shape(pred_shape: tuple) -> tuple:
    """Shape of integer labels for class scores of ``pred_shape``: (), (N,) or (N, d...)."""
    return () if len(pred_shape) == 1 else (pred_shape[0],) + tuple(pred_shape[2:])


def _unreduced_shape(pred_shape: tuple) -> tuple:
    return label_shape(pred_shape)


# --- squared error -------------------------------------------------------------------------

def mse_forward(pred: np.ndarray, target: np.ndarray, reduction: str = "mean"):
    """PyTorch's MSELoss: ``(1/n) Σ (x − y)²`` over all n elements ("mean"), or its sum (seed 004's mean form)."""
    diff = pred - target
    return _reduce(diff * diff, reduction), (diff, reduction)


def mse_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂C/∂x = 2(x − y)/n ("mean"), 2(x − y) ("sum"), 2(x − y)·g ("none")."""
    diff, reduction = cache
    c = _coef(grad, reduction, diff.size, diff.dtype)
    return diff * (2.0 * c) if not isinstance(c, np.ndarray) else diff * c * 2.0


def half_squared_error_forward(pred: np.ndarray, target: np.ndarray, reduction: str = "sum"):
    """Seed form (§6): ``C = ½ Σ_j (y_j − a_j)²`` ("sum"); "mean" averages over the N samples of axis 0
    (seed 000's ``C = (1/2n) Σ_x ‖y(x) − a(x)‖²``); "none" gives ½(a − y)² per element."""
    diff = pred - target
    per = diff * diff * 0.5
    n = pred.shape[0] if pred.ndim > 1 else 1
    return _reduce(per, reduction, n), (diff, reduction, n)


def half_squared_error_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂C/∂a_j = a_j − y_j (BP1's ∇_a C), divided by N for "mean"."""
    diff, reduction, n = cache
    c = _coef(grad, reduction, n, diff.dtype)
    return diff * c


# --- softmax cross-entropy (fused, log-sum-exp) -------------------------------------------

def log_softmax_rows(x2: np.ndarray) -> np.ndarray:
    """ln softmax of each row: ``s − ln Σ e^s`` with ``s = x − max`` (stable)."""
    s = x2 - x2.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None,
                          ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
    """PyTorch's CrossEntropyLoss on logits (§6, "softmax classifier" L_i = −ln softmax(s)_{y_i}).

    Integer ``target`` (class indices) or float ``target`` of the logits' shape (class probabilities).
    Each row n has a weighted target q_n (q_nk = (1−ε) w_y 1[k=y] + (ε/C) w_k for labels, w_k t'_nk
    for probabilities, ε = label_smoothing) and loss ``−Σ_k q_nk ln p_nk``. "mean" divides by Σ w_{y_n}
    over non-ignored rows (labels) or by the number of rows (probabilities), as PyTorch.
    """
    shape = logits.shape
    x2 = class_rows(logits)
    m, c = x2.shape
    dt = x2.dtype
    logp = log_softmax_rows(x2)
    eps = float(label_smoothing)
    w = None if weight is None else weight.astype(dt, copy=False)
    if target.dtype.kind == "f":                     # class probabilities
        t = class_rows(target)
        if eps:
            t = t * (1.0 - eps) + eps / c
        q = t * w if w is not None else t
        per = -np.sum(q * logp, axis=1)
        denom = float(m)
        cache = ("prob", np.exp(logp), q, None, None, None, eps, denom, reduction, shape)
    else:
        lab = target.reshape(-1).astype(np.intp, copy=False)
        valid = (lab != ignore_index).astype(dt)      # 1.0 / 0.0 in the logits' dtype
        lab = np.where(valid > 0, lab, 0)
        rows = np.arange(m)
        wy = (w[lab] * valid) if w is not None else valid
        per = -(logp[rows, lab] * wy) * (1.0 - eps) if eps else -(logp[rows, lab] * wy)
        if eps:
            smooth = -(logp @ w) if w is not None else -logp.sum(axis=1)
            per = per + smooth * valid * (eps / c)
        denom = float(np.sum(wy))
        cache = ("label", np.exp(logp), lab, valid, wy, w, eps, denom, reduction, shape)
    per = per.reshape(_unreduced_shape(shape))
    return _reduce(per, reduction, denom), cache


def cross_entropy_fast_forward(logits: np.ndarray, target, ignore_index: int = -100,
                               reduction: str = "mean"):
    """The common case of ``cross_entropy_forward`` in one numba pass: (N, C) float logits, (N,) integer
    labels, no weights or smoothing, "mean"/"sum". Returns (loss, cache), or None when the case does not
    apply, numba is off, or the input is bad (a label out of range, a non-finite logit): the caller then
    takes the validating NumPy path, which names the problem."""
    if reduction == "none" or not isinstance(logits, np.ndarray) or not isinstance(target, np.ndarray) \
            or logits.ndim != 2 or target.ndim != 1 or target.shape[0] != logits.shape[0] \
            or logits.dtype.kind != "f" or target.dtype.kind not in "iu" or logits.size == 0:
        return None
    from . import _loss_numba
    kernel = _loss_numba._ce_forward.compiled()
    if kernel is None:
        return None
    x = np.ascontiguousarray(logits)
    lab = target if target.dtype == np.int64 else target.astype(np.int64)
    p = np.empty_like(x)
    status, total, count = kernel(x, lab, ignore_index, p)
    if status != _loss_numba.OK or count == 0:
        return None
    denom = float(count)
    value = total / denom if reduction == "mean" else total
    return value, ("fast", p, lab, ignore_index, denom, reduction)


def cross_entropy_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂C/∂x_nk = c_n (p_nk Σ_j q_nj − q_nk): §6's ``y·Σt − t`` (= y − t when Σt = 1)."""
    if cache[0] == "fast":
        from . import _loss_numba
        _, p, lab, ignore_index, denom, reduction = cache
        coef = _coef(grad, reduction, denom, p.dtype)
        dx = np.empty_like(p)
        _loss_numba._ce_backward(p, lab, ignore_index, p.dtype.type(coef), dx)
        return dx
    kind, p, a, valid, wy, w, eps, denom, reduction, shape = cache
    m, c = p.shape
    coef = _coef(grad, reduction, denom, p.dtype)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1)
    if kind == "prob":
        q = a
        cn = coef[:, None] if isinstance(coef, np.ndarray) else coef
        return from_rows((p * q.sum(axis=1, keepdims=True) - q) * cn, shape)
    lab = a
    cvec = coef if isinstance(coef, np.ndarray) else np.full(m, coef, dtype=p.dtype)
    wsum = float(np.sum(w)) if w is not None else float(c)
    qsum = wy * (1.0 - eps) + valid * (eps * wsum / c) if eps else wy
    dx = p * (qsum * cvec)[:, None]
    dx[np.arange(m), lab] -= wy * cvec * (1.0 - eps)
    if eps:
        sv = (valid * cvec * (eps / c))[:, None]
        dx -= sv * w if w is not None else sv
    return from_rows(dx, shape)


def cross_entropy_naive(logits: np.ndarray, labels: np.ndarray, weight: Optional[np.ndarray] = None,
                        ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
    """Loops from §6 for 2-D logits and labels: p = softmax(s), q as in ``cross_entropy_forward``,
    L_n = −Σ_k q_nk ln p_nk, ∂L_n/∂s_k = p_k Σ_j q_nj − q_nk. Returns (loss, grad)."""
    n, c = logits.shape
    w = np.ones(c) if weight is None else weight
    eps = float(label_smoothing)
    per = np.zeros(n, dtype=logits.dtype)
    grad = np.zeros_like(logits)
    denom = 0.0
    for s in range(n):
        y = int(labels[s])
        if y == ignore_index:
            continue
        mx = max(logits[s])
        z = sum(math.exp(logits[s, k] - mx) for k in range(c))
        p = [math.exp(logits[s, k] - mx) / z for k in range(c)]
        q = [(1 - eps) * w[y] * (k == y) + eps / c * w[k] for k in range(c)]
        per[s] = -sum(q[k] * (logits[s, k] - mx - math.log(z)) for k in range(c))
        for k in range(c):
            grad[s, k] = p[k] * sum(q) - q[k]
        denom += w[y]
    if reduction == "none":
        return per, grad
    if reduction == "sum":
        return float(per.sum()), grad
    return float(per.sum()) / denom, grad / denom


def nll_forward(logp: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None,
                ignore_index: int = -100, reduction: str = "mean"):
    """PyTorch's NLLLoss on log-probabilities: ``l_n = −w_{y_n} x_{n,y_n}``; "mean" divides by Σ w_{y_n}."""
    shape = logp.shape
    x2 = class_rows(logp)
    m = x2.shape[0]
    lab = target.reshape(-1).astype(np.intp, copy=False)
    valid = lab != ignore_index
    lab = np.where(valid, lab, 0)
    wy = (weight.astype(x2.dtype, copy=False)[lab] * valid) if weight is not None else valid.astype(x2.dtype)
    per = -(x2[np.arange(m), lab] * wy)
    denom = float(np.sum(wy))
    return _reduce(per.reshape(_unreduced_shape(shape)), reduction, denom), \
        (lab, wy, denom, reduction, shape, x2.dtype)


def nll_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂C/∂x_{n,k} = −w_{y_n} 1[k = y_n] (/Σ w_{y_n} for "mean")."""
    lab, wy, denom, reduction, shape, dt = cache
    m = lab.size
    c = shape[0] if len(shape) == 1 else shape[1]
    coef = _coef(grad, reduction, denom, dt)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1)
    dx = np.zeros((m, c), dtype=dt)
    dx[np.arange(m), lab] = -(wy * coef)
    return from_rows(dx, shape)


# --- cross-entropy on probabilities (a network ending in nn.Softmax) ------------------------

def prob_cross_entropy_forward(prob: np.ndarray, target: np.ndarray, reduction: str = "mean"):
    """Seed 003's ``E = −Σ_i t_i ln y_i`` per row, on probabilities y (ln clamped at −100, as BCELoss).
    Integer ``target`` = class labels (one-hot t), float ``target`` = t itself. "mean" averages over rows."""
    shape = prob.shape
    y2 = class_rows(prob)
    m = y2.shape[0]
    if target.dtype.kind == "f":
        t = class_rows(target).astype(y2.dtype, copy=False)
    else:
        t = np.zeros_like(y2)
        t[np.arange(m), target.reshape(-1)] = 1
    with np.errstate(divide="ignore"):
        logy = np.maximum(np.log(y2), LOG_CLAMP)
    per = -np.sum(t * logy, axis=1)
    return _reduce(per.reshape(_unreduced_shape(shape)), reduction, float(m)), (y2, t, float(m), reduction, shape)


def prob_cross_entropy_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂E/∂y_i = −t_i / y_i (y floored at 1e-12)."""
    y2, t, m, reduction, shape = cache
    coef = _coef(grad, reduction, m, y2.dtype)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1, 1)
    return from_rows(-(t / np.maximum(y2, PROB_EPS)) * coef, shape)


def prob_cross_entropy_naive(prob: np.ndarray, t: np.ndarray, reduction: str = "mean"):
    """Loops: E_n = −Σ_i t_i ln y_i, ∂E_n/∂y_i = −t_i/y_i, for 2-D probabilities and targets."""
    n, c = prob.shape
    per = np.zeros(n)
    grad = np.zeros_like(prob)
    for s in range(n):
        for i in range(c):
            per[s] -= t[s, i] * max(math.log(prob[s, i]) if prob[s, i] > 0 else -math.inf, LOG_CLAMP)
            grad[s, i] = -t[s, i] / max(prob[s, i], PROB_EPS)
    if reduction == "none":
        return per, grad
    if reduction == "sum":
        return float(per.sum()), grad
    return float(per.sum()) / n, grad / n


# --- binary cross-entropy --------------------------------------------------------------------

def bce_forward(prob: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """PyTorch's BCELoss (§6, ξ(t, y) = −t ln y − (1 − t) ln(1 − y)), each ln clamped at −100;
    ``weight`` broadcasts against the elements. "mean" averages over all elements."""
    w = None if weight is None else weight.astype(prob.dtype, copy=False)
    with np.errstate(divide="ignore"):           # ln 0 = −inf, clamped to −100
        per = -(target * np.maximum(np.log(prob), LOG_CLAMP) + (1 - target) * np.maximum(np.log1p(-prob), LOG_CLAMP))
    if w is not None:
        per = per * w
    return _reduce(per, reduction), (prob, target, w, reduction)


def bce_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂ξ/∂y = (y − t) / max(y(1 − y), 1e-12) (PyTorch's floor), times the weight."""
    prob, target, w, reduction = cache
    c = _coef(grad, reduction, prob.size, prob.dtype)
    d = (prob - target) / np.maximum(prob * (1 - prob), PROB_EPS)
    d *= c
    return d * w if w is not None else d


def bce_with_logits_forward(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None,
                            pos_weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """PyTorch's BCEWithLogitsLoss: ``−w [p t ln σ(x) + (1 − t) ln(1 − σ(x))]`` computed stably as
    ``(1 − t) x + (1 + (p − 1) t) softplus(−x)``, softplus(−x) = ln(1 + e^{−|x|}) + max(−x, 0)."""
    dt = logits.dtype
    sp = np.log1p(np.exp(-np.abs(logits))) + np.maximum(-logits, 0)
    pw = None if pos_weight is None else pos_weight.astype(dt, copy=False)
    lw = 1 + (pw - 1) * target if pw is not None else None
    per = (1 - target) * logits + (lw * sp if lw is not None else sp)
    w = None if weight is None else weight.astype(dt, copy=False)
    if w is not None:
        per = per * w
    return _reduce(per, reduction), (logits, target, w, pw, lw, reduction)


def bce_with_logits_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂/∂x = (1 + (p − 1)t) σ(x) − p t, i.e. §6's σ(x) − t without pos_weight; times the weight."""
    logits, target, w, pw, lw, reduction = cache
    c = _coef(grad, reduction, logits.size, logits.dtype)
    s, _ = sigmoid_forward(logits)
    d = (lw * s - pw * target) if pw is not None else (s - target)
    d = d * c
    return d * w if w is not None else d


def bce_naive(prob: np.ndarray, target: np.ndarray, reduction: str = "mean", logits: bool = False):
    """Loops over the elements: ξ = −t ln y − (1 − t) ln(1 − y); ∂ξ/∂y = (y − t)/(y(1 − y)),
    or with ``logits=True`` y = σ(x) and ∂ξ/∂x = y − t."""
    flat_x, flat_t = prob.reshape(-1), target.reshape(-1)
    per = np.zeros(flat_x.size)
    grad = np.zeros(flat_x.size)
    for i in range(flat_x.size):
        x, t = float(flat_x[i]), float(flat_t[i])
        y = 1 / (1 + math.exp(-x)) if logits else x
        per[i] = -t * math.log(y) - (1 - t) * math.log(1 - y)
        grad[i] = (y - t) if logits else (y - t) / (y * (1 - y))
    per, grad = per.reshape(prob.shape), grad.reshape(prob.shape)
    if reduction == "none":
        return per, grad
    if reduction == "sum":
        return float(per.sum()), grad
    return float(per.sum()) / per.size, grad / per.size


# --- multiclass hinge ------------------------------------------------------------------------

def _margin_forward(scores, labels, margin, p, weight, scale, reduction):
    x2 = class_rows(scores)
    m, c = x2.shape
    lab = labels.reshape(-1).astype(np.intp, copy=False)
    rows = np.arange(m)
    z = x2 - x2[rows, lab][:, None] + margin       # z_j = s_j − s_y + Δ
    z[rows, lab] = 0                               # j ≠ y only
    zp = np.maximum(z, 0)
    h = zp * zp if p == 2 else zp
    per = h.sum(axis=1)
    wy = None
    if weight is not None:
        wy = weight.astype(x2.dtype, copy=False)[lab]
        per = per * wy
    if scale != 1.0:
        per = per * scale
    cache = (zp, lab, wy, p, scale, reduction, scores.shape)
    return _reduce(per.reshape(_unreduced_shape(scores.shape)), reduction, float(m)), cache


def _margin_backward(cache, grad):
    zp, lab, wy, p, scale, reduction, shape = cache
    m = zp.shape[0]
    coef = _coef(grad, reduction, float(m), zp.dtype)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1)
    # ∂/∂s_j = p z_j^{p−1} 1[z_j > 0] for j ≠ y; ∂/∂s_y = −Σ_{j≠y} of those.
    d = zp * 2.0 if p == 2 else (zp > 0).astype(zp.dtype)
    rowc = coef * scale if wy is None else wy * (coef * scale)
    d *= rowc[:, None] if isinstance(rowc, np.ndarray) else rowc
    d[np.arange(m), lab] = -d.sum(axis=1)
    return from_rows(d, shape)


def multi_margin_forward(scores: np.ndarray, labels: np.ndarray, p: int = 1, margin: float = 1.0,
                         weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """PyTorch's MultiMarginLoss: ``l_n = w_{y} Σ_{j≠y} max(0, Δ − s_y + s_j)^p / C`` (the hinge DIVIDED by C)."""
    c = scores.shape[0] if scores.ndim == 1 else scores.shape[1]
    return _margin_forward(scores, labels, float(margin), int(p), weight, 1.0 / c, reduction)


def multi_margin_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    return _margin_backward(cache, grad)


def multiclass_hinge_forward(scores: np.ndarray, labels: np.ndarray, margin: float = 1.0, reduction: str = "mean"):
    """Seed 004's multiclass SVM loss (§6): ``L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ)``, NOT divided by C;
    "mean" is ``(1/N) Σ_i L_i``."""
    return _margin_forward(scores, labels, float(margin), 1, None, 1.0, reduction)


def multiclass_hinge_backward(cache: tuple, grad: Grad = 1.0) -> np.ndarray:
    """∂L_i/∂s_j = 1[s_j − s_{y_i} + Δ > 0] (j ≠ y_i), ∂L_i/∂s_{y_i} = −Σ_{j≠y_i} 1[…]."""
    return _margin_backward(cache, grad)


def multi_margin_naive(scores: np.ndarray, labels: np.ndarray, margin: float = 1.0, p: int = 1,
                       weight: Optional[np.ndarray] = None, divide: bool = True, reduction: str = "mean"):
    """Loops over samples and classes, straight from §6 (``divide`` by C: PyTorch's; not: seed 004's)."""
    n, c = scores.shape
    per = np.zeros(n)
    grad = np.zeros_like(scores)
    for s in range(n):
        y = int(labels[s])
        wy = 1.0 if weight is None else float(weight[y])
        k = wy / c if divide else wy
        for j in range(c):
            if j == y:
                continue
            z = scores[s, j] - scores[s, y] + margin
            if z > 0:
                per[s] += k * z ** p
                g = k * p * z ** (p - 1)
                grad[s, j] += g
                grad[s, y] -= g
    if reduction == "none":
        return per, grad
    if reduction == "sum":
        return float(per.sum()), grad
    return float(per.sum()) / n, grad / n


# --- L2 regularisation -----------------------------------------------------------------------

def l2_penalty(arrays, lam: float) -> float:
    """λ R(W) with R(W) = Σ W² over every array (seed 004's full loss, §6)."""
    return float(lam) * float(sum(float(np.vdot(a, a)) for a in arrays))


def l2_penalty_grad(w: np.ndarray, lam: float) -> np.ndarray:
    """∂(λ Σ W²)/∂W = 2λW, in W's dtype."""
    return w * (2.0 * float(lam))
