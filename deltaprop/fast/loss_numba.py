"""One-pass numba kernels for the common cross-entropy case (extra ``deltaprop[fast]``): 2-D logits, integer
labels, no class weights, no label smoothing, reduction "mean" or "sum". They are the variant of the op
``cross_entropy_checked`` (``functional.loss.cross_entropy_checked_forward``, which ``nn.CrossEntropyLoss`` calls
before its own checks).

The reference (the checks, then ``loss.cross_entropy_forward``) makes about fifteen passes and temporaries for a
(64, 10) batch (≈ 65 µs on the project's machine, as much as a third of the MLP's forward products); these
kernels check the labels and the logits' finiteness on the way and take a few microseconds. On any bad input
they report a status and the variant returns None, as the reference does; the layer then checks the input and
raises its usual named error. The numbers agree with the reference up to float rounding (softmax as e^{s}/Σe^{s}
rather than exp(log-softmax), the loss summed in float64): the variant's stated tolerances.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from ..functional import loss as L
from ..runtime import jit as _jit
from ..runtime.jit import jit

OK, BAD_LABEL, NON_FINITE = 0, 1, 2


@jit
def _ce_forward(x, lab, ignore, p):
    """p ← softmax of each row of x; returns (status, Σ_n −ln p_{n,y_n} over non-ignored rows, their count).

    §6, softmax classifier: L_n = −s_{y_n} + ln Σ_k e^{s_k}, with s = x − max(x) for stability. Mirrors
    ``loss.cross_entropy_checked_forward`` (tests/test_loss_fused.py and tests/test_variants.py hold the two
    equal).
    """
    m, c = x.shape
    total = 0.0
    count = 0
    for i in range(m):
        y = lab[i]
        if y != ignore and (y < 0 or y >= c):
            return BAD_LABEL, 0.0, 0
        mx = x[i, 0]
        for k in range(c):
            v = x[i, k]
            if not math.isfinite(v):
                return NON_FINITE, 0.0, 0
            if v > mx:
                mx = v
        s = x.dtype.type(0)
        for k in range(c):
            e = math.exp(x[i, k] - mx)
            p[i, k] = e
            s += e
        inv = x.dtype.type(1) / s
        for k in range(c):
            p[i, k] *= inv
        if y != ignore:
            total += math.log(s) - (x[i, y] - mx)
            count += 1
    return OK, total, count


@jit
def _ce_backward(p, lab, ignore, coef, dx):
    """dx = coef · (p − onehot(y)) (§6: ∂C/∂s = y − t), zero rows for ignored labels. Mirrors the label path
    of ``loss.cross_entropy_backward`` (tests/test_loss_fused.py and tests/test_variants.py hold the two equal)."""
    m, c = p.shape
    zero = p.dtype.type(0)
    for i in range(m):
        y = lab[i]
        if y == ignore:
            for k in range(c):
                dx[i, k] = zero
        else:
            for k in range(c):
                dx[i, k] = p[i, k] * coef
            dx[i, y] -= coef


# --- the variant of ``cross_entropy_checked`` -------------------------------------------------------------------

class CrossEntropyFastCache(NamedTuple):
    """The one-pass forward's: softmax p, int64 labels, the ignored label, the mean's divisor, the reduction."""
    p: np.ndarray
    lab: np.ndarray
    ignore_index: int
    denom: float
    reduction: str


def _applies(logits, target, ignore_index=-100, reduction="mean") -> bool:
    return L.plain_label_case(logits, target, reduction) and _jit.enabled()


def cross_entropy_fast_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int = -100,
                               reduction: str = "mean") -> Optional[Tuple[float, CrossEntropyFastCache]]:
    """(loss, cache) of ``cross_entropy_checked_forward``'s case in one pass (``_ce_forward``), or None for bad input
    (a label out of range, a non-finite logit) or when every label is ignored, as the reference."""
    x = np.ascontiguousarray(logits)
    lab = target if target.dtype == np.int64 else target.astype(np.int64)
    p = np.empty_like(x)
    status, total, count = _ce_forward.compiled()(x, lab, ignore_index, p)
    if status != OK or count == 0:
        return None
    denom = float(count)
    value = total / denom if reduction == "mean" else total
    return value, CrossEntropyFastCache(p, lab, ignore_index, denom, reduction)


def cross_entropy_fast_backward(dout, cache: CrossEntropyFastCache) -> np.ndarray:
    """∂C/∂x of the one-pass forward (§6, softmax + cross-entropy: dout·(p − onehot(y))/denominator) by
    ``_ce_backward``."""
    p, lab, ignore_index, denom, reduction = cache
    coef = L.upstream_coef(dout, reduction, denom, p.dtype)
    dx = np.empty_like(p)
    _ce_backward(p, lab, ignore_index, p.dtype.type(coef), dx)
    return dx


def _examples() -> List[dispatch.Example]:
    g = np.random.default_rng(0)
    out = []
    for dt in (np.float32, np.float64):
        for reduction in ("mean", "sum"):
            x = (g.standard_normal((37, 10)) * 4).astype(dt)
            y = g.integers(0, 10, 37)
            y[[3, 8]] = -100                                          # ignored rows
            out.append(dispatch.Example((x, y), dict(reduction=reduction)))
        out.append(dispatch.Example((g.standard_normal((5, 4)).astype(dt), g.integers(0, 4, 5).astype(np.int32))))
    return out


dispatch.register(dispatch.Variant(
    op="cross_entropy_checked", name="numba one pass", forward=cross_entropy_fast_forward, applies=_applies,
    backward=cross_entropy_fast_backward, caches=(CrossEntropyFastCache,), priority=1,
    # softmax as e^{s}/Σe^{s} (the reference: exp of the log-softmax) and the loss summed in float64: p differs by
    # a few float32 ulps, so the loss by ~1e-7 relative and the gradient p − 1 at the label by a few 1e-8 absolute
    # (relative error unbounded where p ≈ 1: hence atol); float64 agrees to ~1e-14
    exact=False, rtol=1e-5, atol=1e-6, examples=_examples, mirrors="functional.loss.cross_entropy_checked_forward",
    doc="checks the labels and the logits' finiteness while computing softmax and loss in one pass"))
