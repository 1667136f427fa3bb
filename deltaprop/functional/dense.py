"""Fully connected layer (docs/equations.md §1): FC forward, FC-1, FC-2, FC-3. Weight layout (out, in), as PyTorch
and Darknet: ``z = x Wᵀ + b`` for a batch ``x`` of shape (N, in). The reference: one product per equation, through
the product hook (``dispatch.matmul``); the loops ``*_naive`` are the tests' independent check."""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from .. import dispatch
from ..dispatch import matmul

Grads = Tuple[Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]


class LinearCache(NamedTuple):
    """``linear_forward``'s (and ``linear_forward_naive``'s): the input x (N, in), the weights W (out, in),
    whether the layer has a bias."""
    x: np.ndarray
    w: np.ndarray
    has_bias: bool


@dispatch.op("linear")
def linear_forward(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> Tuple[np.ndarray, LinearCache]:
    """z = x Wᵀ + b (FC forward, the batch form of ``z^l = W^l a^{l-1} + b^l``). x (N, in), w (out, in), b (out,)."""
    z = matmul(x, w.T)
    if b is not None:
        z += b
    return z, LinearCache(x, w, b is not None)


@dispatch.backward("linear")
def linear_backward(dz: np.ndarray, cache: LinearCache, need_dx: bool = True) -> Grads:
    """Returns (dx, dw, db).

    FC-1 (without σ', which the activation layer applies): dx = δ W.
    FC-3: dW = Σ_x δ^x (a^x)ᵀ = δᵀ x.  FC-2: db = Σ_x δ^x, computed as ones @ δ (a matrix-vector
    product: faster and more accurate in float32 than a row-by-row sum).
    """
    x, w, has_b = cache
    dw = matmul(dz.T, x)
    db = matmul(np.ones(dz.shape[0], dtype=dz.dtype), dz) if has_b else None
    dx = matmul(dz, w) if need_dx else None
    return dx, dw, db


def linear_forward_naive(x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray]) -> Tuple[np.ndarray, LinearCache]:
    """Reference loop for FC forward: z_j = Σ_k W_jk a_k + b_j, sample by sample."""
    n, _ = x.shape
    out_f, in_f = w.shape
    z = np.zeros((n, out_f), dtype=x.dtype)
    for s in range(n):
        for j in range(out_f):
            acc = 0.0
            for k in range(in_f):
                acc += w[j, k] * x[s, k]
            z[s, j] = acc + (b[j] if b is not None else 0.0)
    return z, LinearCache(x, w, b is not None)


def linear_backward_naive(dz: np.ndarray, cache: LinearCache, need_dx: bool = True) -> Grads:
    """Reference loops for FC-1 (δ^{l-1}_k = Σ_j W_jk δ_j), FC-2 (∂C/∂b_j = Σ_x δ_j) and
    FC-3 (∂C/∂W_jk = Σ_x a_k δ_j)."""
    x, w, has_b = cache
    n, in_f = x.shape
    out_f = w.shape[0]
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    db = np.zeros(out_f, dtype=dz.dtype)
    for s in range(n):
        for j in range(out_f):
            db[j] += dz[s, j]
            for k in range(in_f):
                dw[j, k] += x[s, k] * dz[s, j]
                dx[s, k] += w[j, k] * dz[s, j]
    return (dx if need_dx else None), dw, (db if has_b else None)
