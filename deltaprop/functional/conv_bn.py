"""Batch norm in evaluation folded into a scale and shift per channel, then the activation, in one pass (Darknet's
``fuse``): the inference tail of a convolution → batch norm → activation layer.

In evaluation the batch norm is an affine map per channel with constants (docs/equations.md, BN forward with the
running statistics): ``y = γ·(z − r_μ)/d + β`` with d = √(r_σ² + ε) (standard numerics, PyTorch's) or √r_σ² + 1e-6
(Darknet's ``normalize_cpu``). Written as ``y = z·scale + shift`` with ``scale = γ/d`` and
``shift = β − r_μ·scale``, it joins the activation in ONE pass over the convolution's output, in place: nothing
is cached and no normalised copy is made. Darknet's ``fuse_conv_batchnorm`` folds the same two constants into
the kernel and the bias; here they are applied to the output instead (the same function, and the weights are
never rewritten, so training may resume at any time). The numbers agree with the unfused layer to float32
rounding (the order of the multiplications differs).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .. import dispatch
from .activation import leaky_relu_into

#: activations the one-pass tail applies (others: the caller applies its own after the affine map)
TAIL_ACTIVATIONS = {"linear": 0, "relu": 1, "leaky": 2}


def bn_scale_shift(gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray,
                   eps: float, eps_outside_root: bool = False, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per channel of the batch norm in evaluation (BN forward with the running statistics):
    scale = γ/d, shift = β − r_μ·scale, with d = √(r_σ² + ε), or √r_σ² + ε when ``eps_outside_root`` (Darknet's
    forward). Computed in float64, returned in ``dtype``."""
    rv = running_var.astype(np.float64)
    d = np.sqrt(rv) + eps if eps_outside_root else np.sqrt(rv + eps)
    scale = gamma.astype(np.float64) / d
    shift = beta.astype(np.float64) - running_mean.astype(np.float64) * scale
    return scale.astype(dtype), shift.astype(dtype)


def _checked(z: np.ndarray, activation: str) -> np.ndarray:
    """z as an (N, C, S) view, after checking that ``affine_act_`` can work on it in place."""
    if activation not in TAIL_ACTIVATIONS:
        raise ValueError(f"affine_act_: activation must be one of {tuple(TAIL_ACTIVATIONS)}, got {activation!r}")
    if not z.flags.c_contiguous:
        raise ValueError("affine_act_ works in place on a C-contiguous array")
    return z.reshape(z.shape[0], z.shape[1], -1)


@dispatch.op("affine_act")
def affine_act_(z: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str = "linear",
                slope: float = 0.1) -> np.ndarray:
    """In place on a C-contiguous z (N, C, ...): z ← σ(z·scale + shift) per channel (axis 1), the batch norm in
    evaluation (BN forward) then σ, one of ``TAIL_ACTIVATIONS``, by ``activation.leaky_relu_into`` (ReLU is its
    slope 0: max(y, 0·y); leaky: y for y > 0, else slope·y). Returns z."""
    z3 = _checked(z, activation)
    z3 *= np.asarray(scale, dtype=z.dtype)[:, None]
    z3 += np.asarray(shift, dtype=z.dtype)[:, None]
    if activation != "linear":
        leaky_relu_into(z3, slope if activation == "leaky" else 0.0, z3)
    return z
