"""Losses (docs/equations.md §6): ``value = loss(pred, target)`` and ``loss.backward() -> ∂C/∂pred``.

PyTorch's losses keep PyTorch's names and semantics (``MSELoss``, ``CrossEntropyLoss``, ``NLLLoss``,
``BCELoss``, ``BCEWithLogitsLoss``, ``MultiMarginLoss``); the seeds' forms have their own names
(``HalfSquaredError``, ``ProbabilityCrossEntropyLoss``, ``MulticlassHingeLoss``, ``L2Penalty``).
``reduction`` "mean"/"sum" returns a Python float; "none" returns the per-element (or per-sample)
array, and ``backward(grad)`` then takes its upstream gradient (default: ones, i.e. the gradient of
the sum). The gradient has the prediction's dtype. The cache is kept unless inside ``no_grad()``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import numpy as np

from .. import backend
from ..errors import BackwardError, DTypeError, LabelError, NonFiniteError, ShapeError, ValueRangeError
from ..functional import loss as F
from ..functional import loss_binary as FB
from ..functional import loss_margin as FM
from .module import Module
from .parameter import Parameter

_REDUCTIONS = ("mean", "sum", "none")


# --- validation ------------------------------------------------------------------------------

def _float_array(x, what: str, dtype=None) -> np.ndarray:
    """An optional weight vector as a finite float array (ints are converted)."""
    a = np.array(x, copy=True)
    if a.dtype.kind in "iub":
        a = a.astype(dtype or backend.get_default_dtype())
    if a.dtype.kind != "f":
        raise DTypeError(f"{what} must be a floating-point array, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise NonFiniteError(f"{what} contains NaN or infinite values")
    return a


def _check_float_target(target, pred: np.ndarray, who: str) -> np.ndarray:
    if not isinstance(target, np.ndarray):
        target = np.asarray(target)
    if target.dtype.kind != "f":
        raise DTypeError(f"{who}: target must be a floating-point array like the prediction, got dtype "
                         f"{target.dtype} (convert with target.astype(pred.dtype))")
    if target.shape != pred.shape:
        raise ShapeError(f"{who}: target shape {target.shape} does not match prediction shape {pred.shape}")
    if not np.isfinite(target).all():
        bad = int(target.size - np.count_nonzero(np.isfinite(target)))
        raise NonFiniteError(f"{who}: target contains {bad} NaN or infinite value(s)")
    return target.astype(pred.dtype, copy=False)


def _check_unit_range(a: np.ndarray, what: str, who: str) -> None:
    if a.size and (a.min() < 0 or a.max() > 1):
        i = int(np.argmax((a < 0) | (a > 1)))
        idx = np.unravel_index(i, a.shape)
        raise ValueRangeError(f"{who}: {what} must lie in [0, 1]; got {float(a.flat[i])!r} "
                              f"at index {tuple(map(int, idx))}")


def _class_count(pred: np.ndarray, who: str) -> int:
    if pred.ndim == 0:
        raise ShapeError(f"{who}: class scores must have shape (C,), (N, C) or (N, C, d...), got a scalar")
    return pred.shape[0] if pred.ndim == 1 else pred.shape[1]


def check_labels(target, pred_shape: tuple, n_classes: int, who: str,
                 ignore_index: Optional[int] = None) -> np.ndarray:
    """Integer labels of the shape the scores need, each in [0, C) (or equal to ``ignore_index``)."""
    target = np.asarray(target)
    expected = F.label_shape(pred_shape)
    if target.dtype.kind not in "iu":
        raise LabelError(f"{who}: labels must be integers, got dtype {target.dtype} "
                         f"(convert with target.astype(np.int64))")
    if target.shape != expected:
        raise ShapeError(f"{who}: scores of shape {tuple(pred_shape)} need labels of shape {expected}, "
                         f"got {target.shape}")
    bad = (target < 0) | (target >= n_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if target.ndim else ()
        value = int(target[first]) if target.ndim else int(target)
        extra = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise LabelError(f"{who}: label {value} at index {first} is out of range for {n_classes} classes "
                         f"(valid: 0..{n_classes - 1}{extra}); {int(bad.sum())} bad label(s) in all")
    return target


# --- base ------------------------------------------------------------------------------------

class _Loss(Module):
    """Shared plumbing: validation of ``pred``, the cache, the upstream gradient, ``get_config``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    @property
    def keeps_cache(self) -> bool:
        # A loss is not a layer: train()/eval() does not matter, only no_grad() does.
        return backend.is_grad_enabled()

    def __call__(self, pred: np.ndarray, target) -> Union[float, np.ndarray]:
        return self.forward(pred, target)

    def forward(self, pred: np.ndarray, target) -> Union[float, np.ndarray]:
        """The loss: a Python float ("mean"/"sum") or an array ("none")."""
        who = type(self).__name__
        backend.check_array(pred, f"{who} prediction", finite=True)
        value, cache = self._forward(pred, target)
        self._save((cache, np.shape(value)))
        return value

    def backward(self, grad=None) -> np.ndarray:
        """∂C/∂pred (the prediction's dtype). ``grad``: upstream gradient of the loss value (default 1;
        for reduction "none" an array of the loss's shape, default ones = the gradient of its sum)."""
        cache, out_shape = self._take()
        return self._backward(self._upstream(grad, out_shape), cache)

    def _upstream(self, grad, out_shape: tuple):
        who = type(self).__name__
        if grad is None:
            return 1.0
        arr = np.asarray(grad)
        if arr.dtype.kind not in "fiu":
            raise DTypeError(f"{who}.backward: grad must be numeric, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise NonFiniteError(f"{who}.backward: grad contains NaN or infinite values")
        if arr.ndim == 0:
            return float(arr)
        if self.reduction != "none" or arr.shape != tuple(out_shape):
            raise ShapeError(f"{who}.backward: grad must have the loss's shape {tuple(out_shape)} "
                             f"(reduction={self.reduction!r}), got {arr.shape}")
        return arr

    def _forward(self, pred, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def _backward(self, dout, cache):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cfg.items()}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if not isinstance(v, list))


# --- regression ------------------------------------------------------------------------------

class MSELoss(_Loss):
    """PyTorch's ``MSELoss``: mean of (x − y)² over ALL elements ("mean"), or the sum; ∂/∂x = 2(x − y)/n."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def _forward(self, pred, target):
        return F.mse_forward(pred, _check_float_target(target, pred, "MSELoss"), self.reduction)

    def _backward(self, dout, cache):
        return F.mse_backward(dout, cache)


class HalfSquaredError(_Loss):
    """The seeds' quadratic cost ``C = ½ Σ_j (y_j − a_j)²`` (§6, seeds 000–002), ``∂C/∂a = a − y``.

    "sum" (default) sums over everything; "mean" divides by the batch size N (axis 0), seed 000's
    ``C = (1/2n) Σ_x ‖y(x) − a(x)‖²`` (unlike ``MSELoss``, which has no ½ and divides by every element).
    """

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__(reduction)

    def _forward(self, pred, target):
        return F.half_squared_error_forward(pred, _check_float_target(target, pred, "HalfSquaredError"),
                                            self.reduction)

    def _backward(self, dout, cache):
        return F.half_squared_error_backward(dout, cache)


# --- classification on scores ----------------------------------------------------------------

class _WeightedClassLoss(_Loss):
    def __init__(self, weight=None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        w = None
        if weight is not None:
            w = _float_array(weight, f"{type(self).__name__} weight")
            if w.ndim != 1:
                raise ShapeError(f"{type(self).__name__}: weight must be 1-D (one per class), got shape {w.shape}")
        self.register_buffer("weight", w)

    def _checked_weight(self, n_classes: int) -> Optional[np.ndarray]:
        w = self.weight
        if w is not None and w.shape != (n_classes,):
            raise ShapeError(f"{type(self).__name__}: weight has shape {w.shape} but the scores have "
                             f"{n_classes} classes")
        return w


class CrossEntropyLoss(_WeightedClassLoss):
    """PyTorch's ``CrossEntropyLoss`` on LOGITS, fused with log-softmax (log-sum-exp: stable).

    Input (C,), (N, C) or (N, C, d...); target integer labels ((), (N,), (N, d...)) or class
    probabilities of the input's shape. ``weight`` (C,), ``ignore_index``, ``label_smoothing`` as PyTorch;
    "mean" divides by the summed weights of the non-ignored labels. §6: ∂C/∂x = softmax(x) − t.
    """

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(weight, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def forward(self, pred: np.ndarray, target) -> Union[float, np.ndarray]:
        """The loss; the common case (2-D logits, integer labels, no weight or smoothing) goes first to
        ``F.cross_entropy_checked_forward``, which checks the labels and logits as it computes (with numba in the
        same pass); anything else, or bad input, takes the validating path, which names the problem."""
        done = None
        if self.weight is None and not self.label_smoothing:
            done = F.cross_entropy_checked_forward(pred, target, self.ignore_index, self.reduction)
        if done is None:
            return super().forward(pred, target)
        value, cache = done
        self._save((cache, ()))
        return value

    def _forward(self, pred, target):
        c = _class_count(pred, "CrossEntropyLoss")
        w = self._checked_weight(c)
        t = np.asarray(target)
        if t.dtype.kind == "f":
            if t.shape != pred.shape and t.shape == F.label_shape(pred.shape):
                raise LabelError(f"CrossEntropyLoss: labels must be integers, got dtype {t.dtype} (convert with "
                                 f"target.astype(np.int64)); class probabilities must have the input's shape")
            t = _check_float_target(t, pred, "CrossEntropyLoss")
        else:
            t = check_labels(t, pred.shape, c, "CrossEntropyLoss", self.ignore_index)
        return F.cross_entropy_forward(pred, t, w, self.ignore_index, self.reduction, self.label_smoothing)

    def _backward(self, dout, cache):
        return F.cross_entropy_backward(dout, cache)


class NLLLoss(_WeightedClassLoss):
    """PyTorch's ``NLLLoss`` on LOG-probabilities (after ``nn.LogSoftmax``): ``l_n = −w_{y_n} x_{n,y_n}``."""

    def __init__(self, weight=None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(weight, reduction)
        self.ignore_index = int(ignore_index)

    def _forward(self, pred, target):
        c = _class_count(pred, "NLLLoss")
        w = self._checked_weight(c)
        t = check_labels(target, pred.shape, c, "NLLLoss", self.ignore_index)
        return F.nll_forward(pred, t, w, self.ignore_index, self.reduction)

    def _backward(self, dout, cache):
        return F.nll_backward(dout, cache)


class ProbabilityCrossEntropyLoss(_Loss):
    """Seed 003's cross-entropy on PROBABILITIES, for a network ending in ``nn.Softmax`` (PyTorch has none):
    ``E = −Σ_i t_i ln y_i`` per sample, ``∂E/∂y_i = −t_i / y_i``; "mean" averages over samples.

    Target: integer labels (t one-hot) or t itself (one-hot or soft, the input's shape). ln is clamped at
    −100 as in BCELoss. Through ``nn.Softmax`` the chain gives §6's ``y − t``; prefer ``CrossEntropyLoss``
    on logits for training (fused, stable).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def _forward(self, pred, target):
        who = "ProbabilityCrossEntropyLoss"
        c = _class_count(pred, who)
        _check_unit_range(pred, "probabilities (the prediction)", who)
        t = np.asarray(target)
        if t.dtype.kind == "f":
            t = _check_float_target(t, pred, who)
        else:
            t = check_labels(t, pred.shape, c, who)
        return F.prob_cross_entropy_forward(pred, t, self.reduction)

    def _backward(self, dout, cache):
        return F.prob_cross_entropy_backward(dout, cache)


class BCELoss(_Loss):
    """PyTorch's ``BCELoss`` on PROBABILITIES (Darknet's ``[logistic]``): ``−w[t ln y + (1 − t) ln(1 − y)]``
    per element, logs clamped at −100; "mean" over all elements. ``weight`` broadcasts against the input."""

    def __init__(self, weight=None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", None if weight is None else _float_array(weight, "BCELoss weight"))

    def _forward(self, pred, target):
        t = _check_float_target(target, pred, "BCELoss")
        _check_unit_range(pred, "probabilities (the prediction)", "BCELoss")
        _check_unit_range(t, "targets", "BCELoss")
        _check_broadcast(self.weight, pred.shape, "BCELoss weight")
        return FB.bce_forward(pred, t, self.weight, self.reduction)

    def _backward(self, dout, cache):
        return FB.bce_backward(dout, cache)


class BCEWithLogitsLoss(_Loss):
    """PyTorch's ``BCEWithLogitsLoss``: logistic + BCE fused and stable; ``∂C/∂x = σ(x) − t`` (§6).
    ``pos_weight`` (broadcast along the last axis, e.g. (C,)) weighs the positive term, as PyTorch."""

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", None if weight is None else _float_array(weight, "BCEWithLogitsLoss weight"))
        self.register_buffer("pos_weight",
                             None if pos_weight is None else _float_array(pos_weight, "BCEWithLogitsLoss pos_weight"))

    def _forward(self, pred, target):
        t = _check_float_target(target, pred, "BCEWithLogitsLoss")
        _check_unit_range(t, "targets", "BCEWithLogitsLoss")
        _check_broadcast(self.weight, pred.shape, "BCEWithLogitsLoss weight")
        _check_broadcast(self.pos_weight, pred.shape, "BCEWithLogitsLoss pos_weight")
        return FB.bce_with_logits_forward(pred, t, self.weight, self.pos_weight, self.reduction)

    def _backward(self, dout, cache):
        return FB.bce_with_logits_backward(dout, cache)


def _check_broadcast(w: Optional[np.ndarray], shape: tuple, what: str) -> None:
    if w is None:
        return
    try:
        out = np.broadcast_shapes(w.shape, shape)
    except ValueError:
        out = None
    if out != tuple(shape):
        raise ShapeError(f"{what} of shape {w.shape} does not broadcast to the input's shape {tuple(shape)}")


class MultiMarginLoss(_WeightedClassLoss):
    """PyTorch's ``MultiMarginLoss``: ``l_n = w_y Σ_{j≠y} max(0, margin − x_y + x_j)^p / C``: the hinge
    DIVIDED by the number of classes C (seed 004's table becomes 0.97, 0, 4.3). Input (N, C) or (C,)."""

    def __init__(self, p: int = 1, margin: float = 1.0, weight=None, reduction: str = "mean") -> None:
        super().__init__(weight, reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: only p=1 and p=2 are supported, got {p}")
        self.p = int(p)
        self.margin = float(margin)

    def _forward(self, pred, target):
        if pred.ndim not in (1, 2):
            raise ShapeError(f"MultiMarginLoss: scores must be (C,) or (N, C), got shape {pred.shape}")
        c = _class_count(pred, "MultiMarginLoss")
        w = self._checked_weight(c)
        t = check_labels(target, pred.shape, c, "MultiMarginLoss")
        return FM.multi_margin_forward(pred, t, self.p, self.margin, w, self.reduction)

    def _backward(self, dout, cache):
        return FM.multi_margin_backward(dout, cache)


class MulticlassHingeLoss(_Loss):
    """Seed 004's multiclass SVM loss: ``L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ)``, NOT divided by C
    (the worked table gives 2.9, 0, 12.9); "mean" is ``(1/N) Σ_i L_i``. Input (N, C) or (C,)."""

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = float(margin)

    def _forward(self, pred, target):
        if pred.ndim not in (1, 2):
            raise ShapeError(f"MulticlassHingeLoss: scores must be (C,) or (N, C), got shape {pred.shape}")
        c = _class_count(pred, "MulticlassHingeLoss")
        t = check_labels(target, pred.shape, c, "MulticlassHingeLoss")
        return FM.multiclass_hinge_forward(pred, t, self.margin, self.reduction)

    def _backward(self, dout, cache):
        return FM.multiclass_hinge_backward(dout, cache)


# --- regularisation --------------------------------------------------------------------------

class L2Penalty:
    """λR(W) with R(W) = Σ W² (seed 004's full loss ``L = (1/N) Σ L_i + λR(W)``, §6).

    ``penalty(params) -> float`` (params: a Module, a Parameter or an iterable of Parameters; pass only the
    weights to leave biases unpenalised); ``penalty.backward()`` ADDS 2λW into each ``param.grad``
    (frozen parameters are skipped). Note ``optim.SGD(weight_decay=λ')`` is the gradient of (λ'/2) Σ W².
    """

    def __init__(self, lam: float) -> None:
        if lam < 0:
            raise ValueError(f"L2Penalty: lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self._params: Optional[List[Parameter]] = None

    def __call__(self, params) -> float:
        return self.forward(params)

    def forward(self, params) -> float:
        if isinstance(params, Module):
            plist = list(params.parameters())
        elif isinstance(params, Parameter):
            plist = [params]
        else:
            plist = list(params)
        for i, p in enumerate(plist):
            if not isinstance(p, Parameter):
                raise DTypeError(f"L2Penalty: item {i} is a {type(p).__name__}, not a Parameter")
        self._params = plist
        return F.l2_penalty([p.data for p in plist], self.lam)

    def backward(self) -> None:
        """param.grad += 2λW for every (trainable) parameter of the last call."""
        if self._params is None:
            raise BackwardError("L2Penalty.backward() called before L2Penalty(params)")
        for p in self._params:
            p.accumulate(F.l2_penalty_grad(p.data, self.lam))

    def get_config(self) -> Dict[str, Any]:
        return {"lam": self.lam}

    def __repr__(self) -> str:
        return f"L2Penalty(lam={self.lam})"


__all__ = ["MSELoss", "HalfSquaredError", "CrossEntropyLoss", "NLLLoss", "ProbabilityCrossEntropyLoss",
           "BCELoss", "BCEWithLogitsLoss", "MultiMarginLoss", "MulticlassHingeLoss", "L2Penalty",
           "ValueRangeError", "check_labels"]
