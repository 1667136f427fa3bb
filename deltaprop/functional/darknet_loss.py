"""Darknet's loss layers as pure functions (pjreddie f6afaabc: ``softmax_layer.c``, ``cost_layer.c``,
``logistic_layer.c``, ``blas.c``), and its reported loss. docs/equations.md §10.

Sign: Darknet's ``delta`` is the NEGATIVE gradient (``delta = t − p``). Every function here returns the
engine's sign, ``grad = −delta`` (``p − t``), so a caller adds it to ∂C/∂input like any gradient.

Darknet's loss layers set their delta during the FORWARD pass and their backward only adds it, with no
Jacobian, into the layer below's delta:
- ``[softmax]``: output ``p = softmax(x/T)``; delta ``t − p`` lands on the LOGITS (the softmax Jacobian is
  never applied: for one-hot t this is cross-entropy's exact gradient at T = 1); cost ``Σ_{t≠0} −log p``.
- ``[cost]``: delta ``t − p`` (sse), scaled by ``scale`` when added below; cost ``Σ (t − p)²`` (unscaled).
  The sse delta is HALF the true gradient of that cost. After a ``[softmax]``, the softmax passes this delta
  on to the logits unchanged, so the logits receive ``(1 + scale)(t − p)``: not a true gradient of anything
  Darknet reports. The engine reproduces that (``darknet_softmax_backward``).
- ``[logistic]``: ``p = σ(x)``, delta ``t − p`` at the logits (BCE's exact gradient), cost BCE.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import ShapeError
from .activation import sigmoid_forward, softmax_forward
from .loss import softmax_ce_input_grad

#: ``SECRET_NUM`` of ``cost_layer.c``: truths equal to it are masked out by ``type=masked``.
SECRET_NUM = -1234.0

COST_TYPES = ("sse", "masked", "smooth", "L1", "seg", "wgan")


def _check_pair(pred: np.ndarray, truth: np.ndarray, who: str) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.size != pred.size:
        raise ShapeError(f"{who}: truth has {truth.size} values ({truth.shape}) but the prediction has "
                         f"{pred.size} ({pred.shape})")
    return truth.reshape(pred.shape).astype(pred.dtype, copy=False)


def darknet_softmax(x: np.ndarray, temperature: float = 1.0, groups: int = 1) -> np.ndarray:
    """``softmax_cpu``: per sample (axis 0), each of ``groups`` contiguous chunks of the flattened input
    gets ``p_i = e^{x_i/T − max/T} / Σ_k e^{x_k/T − max/T}``: ``activation.softmax_forward`` of x/T (max(x/T) is
    max(x)/T to the bit, T > 0). Returns p with the shape of x."""
    n = x.shape[0]
    flat = x.reshape(n, groups, -1) if x.size else x.reshape(n, groups, 0)
    if flat.shape[1] * flat.shape[2] != x[0].size:
        raise ShapeError(f"[softmax] groups={groups} does not divide {x[0].size} inputs")
    return softmax_forward(flat / x.dtype.type(temperature), axis=2)[0].reshape(x.shape)


def darknet_softmax_loss(p: np.ndarray, truth: np.ndarray) -> Tuple[float, np.ndarray]:
    """``softmax_x_ent_cpu``: cost ``Σ_{t≠0} −log p`` (t's value is ignored where nonzero) and the
    gradient ``p − t`` at the logits (Darknet's delta ``t − p``, negated)."""
    t = _check_pair(p, truth, "[softmax]")
    nz = t != 0
    cost = float(-np.log(p[nz].astype(np.float64)).sum()) if nz.any() else 0.0
    return cost, p - t


def darknet_softmax_backward(dout: np.ndarray, own_grad: np.ndarray) -> np.ndarray:
    """``backward_softmax_layer``: the logits get the softmax's own loss gradient PLUS whatever reached
    its output (a following ``[cost]``'s), passed through WITHOUT the softmax Jacobian (either may be None)."""
    return add_grads(own_grad, dout)


def darknet_cost(pred: np.ndarray, truth: np.ndarray, cost_type: str = "sse",
                 scale: float = 1.0) -> Tuple[float, np.ndarray, np.ndarray]:
    """``forward_cost_layer`` + ``backward_cost_layer``. Returns ``(cost, error, grad)``:

    with ``diff = t − p``: sse/seg/wgan (CPU: all sse) ``error = diff²``, delta ``diff``; masked: sse after
    setting p = t where ``t == SECRET_NUM``; L1 ``|diff|``, delta ``diff > 0 ? 1 : −1``; smooth: ``diff²``,
    delta ``diff`` where ``|diff| < 1``, else ``2|diff| − 1`` with delta ``diff < 0 ? 1 : −1`` (Darknet's sign,
    which points AWAY from the truth: a known quirk of pjreddie's ``smooth_l1_cpu``, reproduced).
    ``cost = Σ error`` (not scaled); ``grad = −scale·delta`` (the scaled delta, negated).
    """
    key = "L1" if cost_type in ("L1", "l1") else cost_type
    if key not in COST_TYPES:
        raise ValueError(f"[cost] type={cost_type!r}: Darknet knows {', '.join(COST_TYPES)}")
    t = _check_pair(pred, truth, "[cost]")
    p = pred
    if key == "masked":
        p = np.where(t == t.dtype.type(SECRET_NUM), t, pred)
    diff = t - p
    one = pred.dtype.type(1)
    if key == "L1":
        error = np.abs(diff)
        delta = np.where(diff > 0, one, -one)
    elif key == "smooth":
        a = np.abs(diff)
        small = a < 1
        error = np.where(small, diff * diff, 2 * a - one)
        delta = np.where(small, diff, np.where(diff < 0, one, -one))
    else:
        error = diff * diff
        delta = diff
    cost = float(error.astype(np.float64).sum())
    return cost, error, delta * pred.dtype.type(-scale)


def darknet_logistic(x: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray]:
    """``[logistic]``: ``p = σ(x)`` (``activation.sigmoid_forward``); cost ``Σ −t log p − (1 − t) log(1 − p)``; gradient ``p − t`` at x.
    Returns ``(p, cost, grad)``."""
    p = sigmoid_forward(x)[0]
    t = _check_pair(p, truth, "[logistic]")
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = -t64 * np.log(p64) - (1 - t64) * np.log(1 - p64)
    return p, float(err.sum()), p - t


def darknet_reported_loss(costs: Sequence[float], batch: int) -> float:
    """``calc_network_cost`` then ``train_network``: ``(Σ layer costs / number of cost layers) / batch``,
    with ``batch`` the images of one forward pass (batch/subdivisions). 0 for a net with no cost layer."""
    costs = list(costs)
    if not costs:
        return 0.0
    return float(sum(costs) / len(costs) / batch)


def softmax_ce_grad(p: np.ndarray, t: np.ndarray, groups: int = 1, spatial: bool = False,
                    temperature: float = 1.0) -> np.ndarray:
    """Standard numerics: ∂(−Σ t log p)/∂x = (p·Σ_group t − t)/T (``loss.softmax_ce_input_grad``) at the logits x of ``p = softmax(x/T)``,
    the groups as ``[softmax]`` forms them (``groups`` slices, or the channels at each pixel)."""
    n = p.shape[0]
    if spatial:
        pg, tg, ax = p.reshape(n, p.shape[1], -1), t.reshape(n, p.shape[1], -1), 1
    else:
        pg, tg, ax = p.reshape(n, groups, -1), t.reshape(n, groups, -1), 2
    g = softmax_ce_input_grad(pg, tg, ax)
    if temperature != 1.0:
        g = g / p.dtype.type(temperature)
    return g.reshape(p.shape)


def standard_softmax_loss(p: np.ndarray, t: np.ndarray, groups: int = 1, spatial: bool = False,
                          temperature: float = 1.0) -> Tuple[float, np.ndarray, np.ndarray]:
    """Standard numerics ``[softmax]`` with a truth (docs/equations.md §6, cross-entropy and softmax +
    cross-entropy): ``(cost, ∂cost/∂logits, ∂cost/∂p)`` with cost ``−Σ t log p``, the logits' gradient of
    ``softmax_ce_grad`` and ``−t/p`` at the output (0 where t = 0; infinite where a truth meets p = 0)."""
    nz = t != 0
    cost = float(-(t[nz].astype(np.float64) * np.log(p[nz].astype(np.float64))).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        at_output = np.where(nz, -t / p, p.dtype.type(0))
    return cost, softmax_ce_grad(p, t, groups, spatial, temperature), at_output


def bce_output_grad(p: np.ndarray, grad_logits: np.ndarray) -> np.ndarray:
    """Standard numerics ``[logistic]``: ∂BCE/∂p = (p − t)/(p(1 − p)) (docs/equations.md §6, logistic + BCE)
    from BCE's gradient at the logits ``p − t`` (``darknet_logistic``), i.e. that gradient through 1/σ';
    infinite where p saturates at 0 or 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return grad_logits / (p * (1 - p))


def standard_cost(pred: np.ndarray, truth: np.ndarray, cost_type: str = "sse",
                  scale: float = 1.0) -> Tuple[float, np.ndarray]:
    """Standard numerics ``[cost]``: (cost, its true gradient at ``pred``): sse/masked ``scale·½Σ(t − p)²``,
    L1 ``scale·Σ|t − p|``, smooth ``scale·½·error`` (Huber, whose gradient has the right sign)."""
    t = _check_pair(pred, truth, "[cost]")
    p = pred
    if cost_type == "masked":
        p = np.where(t == t.dtype.type(SECRET_NUM), t, p)
    diff = t - p
    s = float(scale)
    if cost_type in ("L1", "l1"):
        return s * float(np.abs(diff).astype(np.float64).sum()), -p.dtype.type(s) * np.sign(diff)
    if cost_type == "smooth":
        a = np.abs(diff)
        small = a < 1
        err = np.where(small, diff * diff, 2 * a - 1)
        g = np.where(small, -diff, -np.sign(diff))
        return 0.5 * s * float(err.astype(np.float64).sum()), p.dtype.type(s) * g
    return 0.5 * s * float((diff.astype(np.float64) ** 2).sum()), -p.dtype.type(s) * diff


def add_grads(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """a + b where either may be None (no gradient)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b.reshape(a.shape)


def truth_like(out: np.ndarray, truth, who: str) -> np.ndarray:
    """A loss layer's truth (N, ...) reshaped to its output (N, C, H, W); ShapeError naming the layer."""
    truth = np.asarray(truth)
    if truth.ndim == 0 or truth.shape[0] != out.shape[0] or truth[0].size != out[0].size:
        raise ShapeError(f"{who}: truth of shape {truth.shape} does not fit its output {out.shape} "
                         f"({out[0].size} values per image)")
    return truth.reshape(out.shape).astype(out.dtype, copy=False)
