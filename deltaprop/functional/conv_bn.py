"""Inference tail of a conv → batch norm → activation layer, with the batch norm folded (Darknet's ``fuse``).

In evaluation the batch norm is an affine map per channel with constants (docs/equations.md §8, BN in
evaluation): ``y = γ·(z − r_μ)/d + β`` with d = √(r_σ² + ε) (standard numerics, PyTorch's) or √r_σ² + 1e-6
(Darknet's ``normalize_cpu``). Written as ``y = z·scale + shift`` with ``scale = γ/d`` and
``shift = β − r_μ·scale``, it joins the activation in ONE pass over the convolution's output, in place:
nothing is cached and no normalised copy is made. Darknet's ``fuse_conv_batchnorm`` folds the same two
constants into the kernel and the bias; here they are applied to the output instead (the same function, and
the weights are never rewritten, so training may resume at any time). The numbers agree with the unfused layer
to float32 rounding (the order of the multiplications differs).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..runtime import jit as _numba
from ..fast import split as _split
from .activation import leaky_relu_into

#: activations the one-pass tail applies (others: the caller applies its own after ``affine_``)
TAIL_ACTIVATIONS = {"linear": 0, "relu": 1, "leaky": 2}


def bn_scale_shift(gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                   eps: float, eps_outside_root: bool = False, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel of the evaluation batch norm: scale = γ/d, shift = β − r_μ·scale, with
    d = √(r_σ² + ε), or √r_σ² + ε when ``eps_outside_root`` (Darknet's forward). Computed in float64,
    returned in ``dtype``."""
    rv = running_var.astype(np.float64)
    d = np.sqrt(rv) + eps if eps_outside_root else np.sqrt(rv + eps)
    scale = gamma.astype(np.float64) / d
    shift = beta.astype(np.float64) - running_mean.astype(np.float64) * scale
    return scale.astype(dtype), shift.astype(dtype)


def _affine_act_np(z3: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str, slope: float) -> None:
    """The NumPy path of ``affine_act_``: the affine map, then σ in place by ``activation.leaky_relu_into``
    (ReLU is its slope 0: max(y, 0·y)), split over the batch."""
    sc, sh = scale[:, None], shift[:, None]
    neg = slope if activation == "leaky" else 0.0

    def part(lo, hi):
        v = z3[lo:hi]
        v *= sc
        v += sh
        if activation != "linear":
            leaky_relu_into(v, neg, v)
    _split.map_batch(part, z3.shape[0], z3.size)


def affine_act_(z: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str = "linear",
                slope: float = 0.1) -> np.ndarray:
    """In place on a C-contiguous z (N, C, ...): z ← σ(z·scale + shift) per channel (axis 1), σ one of
    ``TAIL_ACTIVATIONS`` (ReLU: max(y, 0); leaky: y for y > 0, else slope·y). One parallel numba pass with
    the ``fast`` extra (``_norm_numba._affine_act``), else NumPy passes split over the batch (σ by
    ``activation.leaky_relu_into``). Returns z."""
    if activation not in TAIL_ACTIVATIONS:
        raise ValueError(f"affine_act_: activation must be one of {tuple(TAIL_ACTIVATIONS)}, got {activation!r}")
    if not z.flags.c_contiguous:
        raise ValueError("affine_act_ works in place on a C-contiguous array")
    z3 = z.reshape(z.shape[0], z.shape[1], -1)
    dt = z.dtype
    scale = np.ascontiguousarray(scale, dtype=dt)
    shift = np.ascontiguousarray(shift, dtype=dt)
    kernel = None
    if _numba.enabled():
        from ..fast import norm_numba as _norm_numba  # σ's numba home (``_affine_sigma``), loaded with the first kernel
        kernel = _norm_numba._affine_act.compiled(z.size)
    if kernel is not None:
        kernel(z3, scale, shift, TAIL_ACTIVATIONS[activation], dt.type(slope))
    else:
        _affine_act_np(z3, scale, shift, activation, slope)
    return z
