"""Multiclass margin (hinge) kernels (docs/equations.md §6, "Multiclass hinge"), each the reference of its op
(``dispatch.op``): PyTorch's ``MultiMarginLoss``
(divided by the number of classes) and the notes' ``multiclass_hinge`` (not divided); ``x_backward(dout, cache)
-> ∂C/∂scores`` with the conventions of ``functional.loss``. ``multi_margin_naive`` is the loop twin.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .. import dispatch
from .loss import Grad, _unreduced_shape, class_rows, from_rows, reduce_loss, upstream_coef


class MarginCache(NamedTuple):
    """Per row: the margins max(0, Δ − s_y + s_j) (M, C), labels, per-row weights (or None), the power p,
    the scale (1/C or 1), the reduction and the scores' shape."""
    zp: np.ndarray
    lab: np.ndarray
    wy: Optional[np.ndarray]
    p: int
    scale: float
    reduction: str
    shape: tuple


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
    cache = MarginCache(zp, lab, wy, p, scale, reduction, scores.shape)
    return reduce_loss(per.reshape(_unreduced_shape(scores.shape)), reduction, float(m)), cache


def _margin_backward(dout: Grad, cache: MarginCache) -> np.ndarray:
    zp, lab, wy, p, scale, reduction, shape = cache
    m = zp.shape[0]
    coef = upstream_coef(dout, reduction, float(m), zp.dtype)
    if isinstance(coef, np.ndarray):
        coef = np.broadcast_to(coef, _unreduced_shape(shape)).reshape(-1)
    # ∂/∂s_j = p z_j^{p−1} 1[z_j > 0] for j ≠ y; ∂/∂s_y = −Σ_{j≠y} of those.
    d = zp * 2.0 if p == 2 else (zp > 0).astype(zp.dtype)
    rowc = coef * scale if wy is None else wy * (coef * scale)
    d *= rowc[:, None] if isinstance(rowc, np.ndarray) else rowc
    d[np.arange(m), lab] = -d.sum(axis=1)
    return from_rows(d, shape)


@dispatch.op("multi_margin")
def multi_margin_forward(scores: np.ndarray, labels: np.ndarray, p: int = 1, margin: float = 1.0,
                         weight: Optional[np.ndarray] = None, reduction: str = "mean"):
    """Multiclass hinge (§6) as PyTorch's MultiMarginLoss: ``l_n = w_{y} Σ_{j≠y} max(0, Δ − s_y + s_j)^p / C`` (the hinge DIVIDED by C)."""
    c = scores.shape[0] if scores.ndim == 1 else scores.shape[1]
    return _margin_forward(scores, labels, float(margin), int(p), weight, 1.0 / c, reduction)


@dispatch.backward("multi_margin")
def multi_margin_backward(dout: Grad, cache: MarginCache) -> np.ndarray:
    """PyTorch's multi-margin (§6): ∂/∂s_j = p·w_y·z_j^{p−1}/C for j ≠ y where z_j = Δ − s_y + s_j > 0;
    ∂/∂s_y = −Σ of those."""
    return _margin_backward(dout, cache)


@dispatch.op("multiclass_hinge")
def multiclass_hinge_forward(scores: np.ndarray, labels: np.ndarray, margin: float = 1.0, reduction: str = "mean"):
    """Seed 004's multiclass SVM loss (§6): ``L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ)``, NOT divided by C;
    "mean" is ``(1/N) Σ_i L_i``."""
    return _margin_forward(scores, labels, float(margin), 1, None, 1.0, reduction)


@dispatch.backward("multiclass_hinge")
def multiclass_hinge_backward(dout: Grad, cache: MarginCache) -> np.ndarray:
    """Multiclass hinge (§6): ∂L_i/∂s_j = 1[s_j − s_{y_i} + Δ > 0] (j ≠ y_i),
    ∂L_i/∂s_{y_i} = −Σ_{j≠y_i} 1[…]."""
    return _margin_backward(dout, cache)


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
