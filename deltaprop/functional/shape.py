"""Kernels that move or mask values without weights: flatten, inverted dropout, nearest upsampling, each the
reference of its op (``dispatch.op``). Each backward sends every gradient entry back to the input entry that
produced it (docs/equations.md §2, P2 with f' = 1 or the dropout mask)."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .. import dispatch
from ..errors import ShapeError


class FlattenCache(NamedTuple):
    """``flatten_forward``'s: the input's shape."""
    shape: Tuple[int, ...]


class DropoutCache(NamedTuple):
    """``dropout_forward``'s: the kept-and-scaled mask m / (1 − p); None for the identity (evaluation, p = 0)."""
    mask: Optional[np.ndarray]


class UpsampleCache(NamedTuple):
    """``upsample_nearest_forward``'s (and the naive twin's): the input's shape and the two factors."""
    shape: Tuple[int, int, int, int]
    sh: int
    sw: int


@dispatch.op("flatten")
def flatten_forward(x: np.ndarray, start_dim: int = 1, end_dim: int = -1) -> Tuple[np.ndarray, FlattenCache]:
    """Merge dimensions start_dim..end_dim (PyTorch's ``flatten``); a view when x is contiguous."""
    nd = x.ndim
    s, e = start_dim % nd if nd else 0, end_dim % nd if nd else 0
    if s > e:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {x.shape}")
    shape = x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:]
    return x.reshape(shape), FlattenCache(x.shape)


@dispatch.backward("flatten")
def flatten_backward(dout: np.ndarray, cache: FlattenCache) -> np.ndarray:
    """The gradient reshaped back to the input's shape."""
    return dout.reshape(cache.shape)


@dispatch.op("dropout")
def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator) -> Tuple[np.ndarray, DropoutCache]:
    """Inverted dropout: y = x ⊙ m / (1 − p) with m ~ Bernoulli(1 − p), so E[y] = x and eval is the identity."""
    if p >= 1.0:
        mask = np.zeros_like(x)
    else:
        keep = rng.random(x.shape, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64) >= p
        mask = np.multiply(keep, x.dtype.type(1.0 / (1.0 - p)), dtype=x.dtype)
    return x * mask, DropoutCache(mask)


@dispatch.backward("dropout")
def dropout_backward(dout: np.ndarray, cache: DropoutCache) -> np.ndarray:
    """∂y/∂x = m / (1 − p): the same scaled mask (1 for the identity)."""
    return dout if cache.mask is None else dout * cache.mask


def _scale_pair(scale: Union[int, float, Sequence]) -> Tuple[int, int]:
    t = (scale, scale) if np.isscalar(scale) else tuple(scale)
    if len(t) != 2 or any(float(s) != int(s) or int(s) < 1 for s in t):
        raise ValueError(f"upsample: scale_factor must be a positive integer or a pair of them, got {scale!r}")
    return int(t[0]), int(t[1])


@dispatch.op("upsample_nearest")
def upsample_nearest_forward(x: np.ndarray, scale) -> Tuple[np.ndarray, UpsampleCache]:
    """Nearest-neighbour upsampling by integer factors: y[n,c,i,j] = x[n,c,⌊i/s_h⌋,⌊j/s_w⌋]."""
    if x.ndim != 4:
        raise ShapeError(f"upsample: input must be (N, C, H, W), got shape {x.shape}")
    sh, sw = _scale_pair(scale)
    n, c, h, w = x.shape
    y = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw)).reshape(n, c, h * sh, w * sw)
    if not y.flags.owndata:  # the reshape made no copy (factors of 1, or 1×1 rows): a read-only view of x
        y = y.copy()
    return y, UpsampleCache(x.shape, sh, sw)


@dispatch.backward("upsample_nearest")
def upsample_nearest_backward(dout: np.ndarray, cache: UpsampleCache) -> np.ndarray:
    """Each input pixel feeds an s_h×s_w block, so its gradient is the block's sum."""
    (n, c, h, w), sh, sw = cache
    return dout.reshape(n, c, h, sh, w, sw).sum(axis=(3, 5))


def upsample_nearest_forward_naive(x: np.ndarray, scale) -> Tuple[np.ndarray, UpsampleCache]:
    """Reference loops: y[n,c,i,j] = x[n,c,i // s_h, j // s_w]."""
    sh, sw = _scale_pair(scale)
    n, c, h, w = x.shape
    y = np.zeros((n, c, h * sh, w * sw), dtype=x.dtype)
    for a in range(n):
        for b in range(c):
            for i in range(h * sh):
                for j in range(w * sw):
                    y[a, b, i, j] = x[a, b, i // sh, j // sw]
    return y, UpsampleCache(x.shape, sh, sw)


def upsample_nearest_backward_naive(dout: np.ndarray, cache: UpsampleCache) -> np.ndarray:
    """Reference loops: dx[n,c,y,x] = Σ of dout over the block that copied x[n,c,y,x]."""
    (n, c, h, w), sh, sw = cache
    dx = np.zeros((n, c, h, w), dtype=dout.dtype)
    for a in range(n):
        for b in range(c):
            for i in range(h * sh):
                for j in range(w * sw):
                    dx[a, b, i // sh, j // sw] += dout[a, b, i, j]
    return dx
