"""Loss kernels (docs/equations.md §6), each the reference of its op (``dispatch.op``).
``x_forward(pred, target, ...) -> (loss, cache)`` and ``x_backward(dout, cache) -> ∂C/∂pred``, the signature of
every kernel.

Binary cross-entropy is ``loss_binary``, the margin (hinge) losses ``loss_margin``.

``reduction`` is PyTorch's: "mean", "sum" or "none". ``dout`` is the upstream gradient of the returned
loss (1.0 for the loss itself): a scalar for "mean"/"sum", an array of the unreduced loss's shape (or a
scalar) for "none". Gradients keep the prediction's dtype (scalars are Python floats: no float64 promotion).
Inputs are assumed valid here; ``nn.loss`` validates them. Class scores use PyTorch's layouts:
(C,), (N, C) or (N, C, d1, ...), class axis 1. ``*_naive`` twins are loops written from §6 and
return ``(loss, grad)`` directly.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np

from .. import dispatch

Grad = Union[float, np.ndarray]
LOG_CLAMP = -100.0      # BCELoss clamps its logs at −100, as PyTorch
PROB_EPS = 1e-12        # PyTorch's BCE backward: (x − y) / max(x(1 − x), 1e-12)


# --- the caches: one typed record per kernel (and per path) ---------------------------------

class MSECache(NamedTuple):
    """``mse_forward``'s: x − y and the reduction."""
    diff: np.ndarray
    reduction: str


class HalfSquaredErrorCache(NamedTuple):
    """``half_squared_error_forward``'s: a − y, the reduction and the mean's divisor N."""
    diff: np.ndarray
    reduction: str
    n: int


class CrossEntropyLabelCache(NamedTuple):
    """``cross_entropy_forward``'s with integer labels: softmax p (M, C), the labels (0 where ignored), their
    validity (1/0), the per-row weights w_y (or the validity), the class weights (or None), the smoothing ε,
    the mean's divisor, the reduction and the logits' shape."""
    p: np.ndarray
    lab: np.ndarray
    valid: np.ndarray
    wy: np.ndarray
    w: Optional[np.ndarray]
    eps: float
    denom: float
    reduction: str
    shape: tuple


class CrossEntropyProbCache(NamedTuple):
    """``cross_entropy_forward``'s with class probabilities: softmax p (M, C), the weighted (smoothed) targets
    q (M, C), the mean's divisor, the reduction and the logits' shape."""
    p: np.ndarray
    q: np.ndarray
    denom: float
    reduction: str
    shape: tuple


class NLLCache(NamedTuple):
    """``nll_forward``'s: the labels (0 where ignored), the per-row weights, the mean's divisor, the reduction,
    the scores' shape and dtype."""
    lab: np.ndarray
    wy: np.ndarray
    denom: float
    reduction: str
    shape: tuple
    dtype: np.dtype


class ProbCrossEntropyCache(NamedTuple):
    """``prob_cross_entropy_forward``'s: the probabilities y and targets t as rows, the row count, the
    reduction and the input's shape."""
    y2: np.ndarray
    t: np.ndarray
    m: float
    reduction: str
    shape: tuple


# --- helpers -------------------------------------------------------------------------------

def reduce_loss(per: np.ndarray, reduction: str, denom: Optional[float] = None):
    """The per-element (or per-row) losses reduced: the array itself ("none"), its sum, or the sum / ``denom``
    ("mean"; ``denom`` defaults to the element count, NaN when it is 0)."""
    if reduction == "none":
        return per
    total = float(np.sum(per))
    if reduction == "sum":
        return total
    n = per.size if denom is None else denom
    return total / n if n else float("nan")


def upstream_coef(grad: Grad, reduction: str, denom: float, dtype) -> Grad:
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

@dispatch.op("mse")
def mse_forward(pred: np.ndarray, target: np.ndarray, reduction: str = "mean"):
    """Squared error (§6), PyTorch's MSELoss: ``(1/n) Σ (x − y)²`` over all n elements ("mean"), or its sum
    (seed 004's mean form)."""
    diff = pred - target
    return reduce_loss(diff * diff, reduction), MSECache(diff, reduction)


@dispatch.backward("mse")
def mse_backward(dout: Grad, cache: MSECache) -> np.ndarray:
    """Squared error (§6): ∂C/∂x = 2(x − y)/n ("mean"), 2(x − y) ("sum"), 2(x − y)·g ("none")."""
    diff, reduction = cache
    c = upstream_coef(dout, reduction, diff.size, diff.dtype)
    return diff * (2.0 * c) if not isinstance(c, np.ndarray) else diff * c * 2.0


@dispatch.op("half_squared_error")
def half_squared_error_forward(pred: np.ndarray, target: np.ndarray, reduction: str = "sum"):
    """Seed form (§6): ``C = ½ Σ_j (y_j − a_j)²`` ("sum"); "mean" averages over the N samples of axis 0
    (seed 000's ``C = (1/2n) Σ_x ‖y(x) − a(x)‖²``); "none" gives ½(a − y)² per element."""
    diff = pred - target
    per = diff * diff * 0.5
    n = pred.shape[0] if pred.ndim > 1 else 1
    return reduce_loss(per, reduction, n), HalfSquaredErrorCache(diff, reduction, n)


@dispatch.backward("half_squared_error")
def half_squared_error_backward(dout: Grad, cache: HalfSquaredErrorCache) -> np.ndarray:
    """Squared error, seed form (§6): ∂C/∂a_j = a_j − y_j (BP1's ∇_a C), divided by N for "mean"."""
    diff, reduction, n = cache
    c = upstream_coef(dout, reduction, n, diff.dtype)
    return diff * c


# --- softmax cross-entropy (fused, log-sum-exp) -------------------------------------------

def log_softmax_rows(x2: np.ndarray) -> np.ndarray:
    """ln softmax of each row: ``s − ln Σ e^s`` with ``s = x − max`` (stable)."""
    s = x2 - x2.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


@dispatch.op("cross_entropy")
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
        cache = CrossEntropyProbCache(np.exp(logp), q, denom, reduction, shape)
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
        cache = CrossEntropyLabelCache(np.exp(logp), lab, valid, wy, w, eps, denom, reduction, shape)
    per = per.reshape(_unreduced_shape(shape))
    return reduce_loss(per, reduction, denom), cache


def plain_label_case(logits, target, reduction: str) -> bool:
    """Whether a call is the common case of ``cross_entropy_forward``: (N, C) float logits (N·C > 0), (N,) integer
    labels, reduction "mean" or "sum" (no class weights or smoothing: the caller's business)."""
    return (reduction != "none" and isinstance(logits, np.ndarray) and isinstance(target, np.ndarray)
            and logits.ndim == 2 and target.ndim == 1 and target.shape[0] == logits.shape[0]
            and logits.dtype.kind == "f" and target.dtype.kind in "iu" and logits.size > 0)


@dispatch.op("cross_entropy_checked")
def cross_entropy_checked_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int = -100,
                                  reduction: str = "mean"):
    """The softmax classifier's cross-entropy (§6, softmax + cross-entropy) on input nobody has checked yet:
    ``cross_entropy_forward`` without weights or smoothing for ``plain_label_case``, or None when that case does not
    apply or the input is not fit for it (a label outside [0, C) that is not ``ignore_index``, a logit that is not
    finite, every label ignored). ``nn.CrossEntropyLoss`` calls it first and, on None, checks the input itself and
    names the problem; a variant that checks while it computes saves those checks' passes."""
    if not plain_label_case(logits, target, reduction):
        return None
    c = logits.shape[1]
    ignored = target == ignore_index
    if ignored.all() or ((~ignored) & ((target < 0) | (target >= c))).any() or not np.isfinite(logits).all():
        return None
    return cross_entropy_forward(logits, target, None, ignore_index, reduction)


def softmax_ce_input_grad(p: np.ndarray, q: np.ndarray, axis: int = 1) -> np.ndarray:
    """§6, softmax + cross-entropy fused: ∂E/∂x = y·Σ_i t_i − t at the logits x of y = softmax(x), along
    ``axis`` (the classes), for dense targets q: the one home of the dense form (``cross_entropy_backward``'s
    probabilities, the Darknet ``[softmax]`` layer's standard numerics)."""
    return p * q.sum(axis=axis, keepdims=True) - q


CrossEntropyCache = Union[CrossEntropyLabelCache, CrossEntropyProbCache]


@dispatch.backward("cross_entropy")
def cross_entropy_backward(dout: Grad, cache: CrossEntropyCache) -> np.ndarray:
    """Softmax + cross-entropy (§6): ∂C/∂x_nk = c_n (p_nk Σ_j q_nj − q_nk), §6's ``y·Σt − t`` (= y − t when
    Σt = 1), following the path the forward took: dense targets by ``softmax_ce_input_grad``; labels in the sparse
    form (q_n is w_y·(1 − ε) at the label plus ε·w_k/C everywhere, so Σq is known and only the label's column and
    the smoothing are subtracted)."""
    coef = upstream_coef(dout, cache.reduction, cache.denom, cache.p.dtype)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(cache.shape)).reshape(-1)
    if type(cache) is CrossEntropyProbCache:
        p, q, denom, reduction, shape = cache
        cn = coef[:, None] if isinstance(coef, np.ndarray) else coef
        return from_rows(softmax_ce_input_grad(p, q) * cn, shape)
    p, lab, valid, wy, w, eps, denom, reduction, shape = cache
    m, c = p.shape
    cvec = coef if isinstance(coef, np.ndarray) else np.full(m, coef, dtype=p.dtype)
    wsum = float(np.sum(w)) if w is not None else float(c)
    qsum = wy * (1.0 - eps) + valid * (eps * wsum / c) if eps else wy
    dx = p * (qsum * cvec)[:, None]
    dx[np.arange(m), lab] -= wy * cvec * (1.0 - eps)
    if eps:
        sv = (valid * cvec * (eps / c))[:, None]
        dx -= sv * w if w is not None else sv
    return from_rows(dx, shape)


@dispatch.backward("cross_entropy_checked")
def cross_entropy_checked_backward(dout: Grad, cache: CrossEntropyCache) -> np.ndarray:
    """Softmax + cross-entropy (§6) after ``cross_entropy_checked_forward``: ``cross_entropy_backward``."""
    return cross_entropy_backward(dout, cache)


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


@dispatch.op("nll")
def nll_forward(logp: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None,
                ignore_index: int = -100, reduction: str = "mean"):
    """PyTorch's NLLLoss on log-probabilities (§6, cross-entropy with a one-hot t after a log-softmax):
    ``l_n = −w_{y_n} x_{n,y_n}``; "mean" divides by Σ w_{y_n}."""
    shape = logp.shape
    x2 = class_rows(logp)
    m = x2.shape[0]
    lab = target.reshape(-1).astype(np.intp, copy=False)
    valid = lab != ignore_index
    lab = np.where(valid, lab, 0)
    wy = (weight.astype(x2.dtype, copy=False)[lab] * valid) if weight is not None else valid.astype(x2.dtype)
    per = -(x2[np.arange(m), lab] * wy)
    denom = float(np.sum(wy))
    return reduce_loss(per.reshape(_unreduced_shape(shape)), reduction, denom), \
        NLLCache(lab, wy, denom, reduction, shape, x2.dtype)


@dispatch.backward("nll")
def nll_backward(dout: Grad, cache: NLLCache) -> np.ndarray:
    """∂C/∂x_{n,k} = −w_{y_n} 1[k = y_n] (/Σ w_{y_n} for "mean")."""
    lab, wy, denom, reduction, shape, dt = cache
    m = lab.size
    c = shape[0] if len(shape) == 1 else shape[1]
    coef = upstream_coef(dout, reduction, denom, dt)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1)
    dx = np.zeros((m, c), dtype=dt)
    dx[np.arange(m), lab] = -(wy * coef)
    return from_rows(dx, shape)


# --- cross-entropy on probabilities (a network ending in nn.Softmax) ------------------------

@dispatch.op("prob_cross_entropy")
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
    cache = ProbCrossEntropyCache(y2, t, float(m), reduction, shape)
    return reduce_loss(per.reshape(_unreduced_shape(shape)), reduction, float(m)), cache


@dispatch.backward("prob_cross_entropy")
def prob_cross_entropy_backward(dout: Grad, cache: ProbCrossEntropyCache) -> np.ndarray:
    """Cross-entropy on probabilities (§6): ∂E/∂y_i = −t_i / y_i (y floored at 1e-12)."""
    y2, t, m, reduction, shape = cache
    coef = upstream_coef(dout, reduction, m, y2.dtype)
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


# --- L2 regularisation -----------------------------------------------------------------------

def l2_penalty(arrays, lam: float) -> float:
    """λ R(W) with R(W) = Σ W² over every array (seed 004's full loss, §6)."""
    return float(lam) * float(sum(float(np.vdot(a, a)) for a in arrays))


def l2_penalty_grad(w: np.ndarray, lam: float) -> np.ndarray:
    """The L2 penalty's gradient (§6): ∂(λ Σ W²)/∂W = 2λW, in W's dtype."""
    return w * (2.0 * float(lam))
