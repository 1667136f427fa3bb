"""Binary cross-entropy kernels (docs/equations.md §6, "Logistic + binary cross-entropy"), each the reference of
its op (``dispatch.op``): ``bce_*`` on
probabilities, ``bce_with_logits_*`` on logits (stable); ``x_backward(dout, cache) -> ∂C/∂pred``, with the
conventions of ``functional.loss`` (reduction, dtype). ``bce_naive`` is the loop twin of both.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np

from .. import dispatch
from .activation import sigmoid_forward
from .loss import LOG_CLAMP, PROB_EPS, Grad, reduce_loss, upstream_coef


class BCECache(NamedTuple):
    """``bce_forward``'s: the probabilities, the targets, the weight (or None) and the reduction."""
    prob: np.ndarray
    target: np.ndarray
    w: Optional[np.ndarray]
    reduction: str


class BCEWithLogitsCache(NamedTuple):
    """``bce_with_logits_forward``'s: the logits, the targets, the weight, the positive weight p and
    1 + (p − 1)t (or None), and the reduction."""
    logits: np.ndarray
    target: np.ndarray
    w: Optional[np.ndarray]
    pw: Optional[np.ndarray]
    lw: Optional[np.ndarray]
    reduction: str


@dispatch.op("bce")
def bce_forward(prob: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """Binary cross-entropy on probabilities, PyTorch's BCELoss (§6, ξ(t, y) = −t ln y − (1 − t) ln(1 − y)), each ln clamped at −100;
    ``weight`` broadcasts against the elements. "mean" averages over all elements."""
    w = None if weight is None else weight.astype(prob.dtype, copy=False)
    with np.errstate(divide="ignore"):           # ln 0 = −inf, clamped to −100
        per = -(target * np.maximum(np.log(prob), LOG_CLAMP) + (1 - target) * np.maximum(np.log1p(-prob), LOG_CLAMP))
    if w is not None:
        per = per * w
    return reduce_loss(per, reduction), BCECache(prob, target, w, reduction)


@dispatch.backward("bce")
def bce_backward(dout: Grad, cache: BCECache) -> np.ndarray:
    """Binary cross-entropy on probabilities (§6): ∂ξ/∂y = (y − t) / max(y(1 − y), 1e-12) (PyTorch's floor),
    times the weight."""
    prob, target, w, reduction = cache
    c = upstream_coef(dout, reduction, prob.size, prob.dtype)
    d = (prob - target) / np.maximum(prob * (1 - prob), PROB_EPS)
    d *= c
    return d * w if w is not None else d


def bce_with_logits_elementwise(logits: np.ndarray, target: np.ndarray,
                                lw: Optional[np.ndarray] = None) -> np.ndarray:
    """§6's ξ(t, σ(x)) = −t ln σ(x) − (1 − t) ln(1 − σ(x)) per element, from the logits, without overflow:
    ``(1 − t) x + softplus(−x)``, softplus(−x) = ln(1 + e^{−|x|}) + max(−x, 0); with ``lw`` = 1 + (p − 1)t
    (a positive weight p), ``(1 − t) x + lw·softplus(−x)``. The one home of the logistic BCE from logits
    (``bce_with_logits_forward``, ``yolo_loss.yolo_standard_loss``)."""
    sp = np.log1p(np.exp(-np.abs(logits))) + np.maximum(-logits, 0)
    return (1 - target) * logits + (lw * sp if lw is not None else sp)


@dispatch.op("bce_with_logits")
def bce_with_logits_forward(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray] = None,
                            pos_weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """Logistic + binary cross-entropy (§6), PyTorch's BCEWithLogitsLoss: ``−w [p t ln σ(x) + (1 − t) ln(1 − σ(x))]`` computed stably as
    ``(1 − t) x + (1 + (p − 1) t) softplus(−x)``, softplus(−x) = ln(1 + e^{−|x|}) + max(−x, 0)."""
    dt = logits.dtype
    pw = None if pos_weight is None else pos_weight.astype(dt, copy=False)
    lw = 1 + (pw - 1) * target if pw is not None else None
    per = bce_with_logits_elementwise(logits, target, lw)
    w = None if weight is None else weight.astype(dt, copy=False)
    if w is not None:
        per = per * w
    return reduce_loss(per, reduction), BCEWithLogitsCache(logits, target, w, pw, lw, reduction)


@dispatch.backward("bce_with_logits")
def bce_with_logits_backward(dout: Grad, cache: BCEWithLogitsCache) -> np.ndarray:
    """Logistic + binary cross-entropy (§6): ∂/∂x = (1 + (p − 1)t) σ(x) − p t, i.e. σ(x) − t without
    pos_weight; times the weight."""
    logits, target, w, pw, lw, reduction = cache
    c = upstream_coef(dout, reduction, logits.size, logits.dtype)
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
