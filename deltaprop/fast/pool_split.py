"""Max pooling's NumPy passes split over the batch (``fast.split``): a variant of the op ``max_pool2d``
(``functional.pool``) for the NumPy path.

The forward (``pool.max_pool_into``) and the backward (``pool.max_unpool_into``) run on slices of the batch at
once, each slice by the reference's own code into its rows of the output: every element is computed by the same
operations on the same operands, so the numbers are the reference's bit for bit. ``split.map_batch`` decides,
call by call, whether to cut (numba off, a pass of at least ``split.SPLIT_MIN`` elements, the products' threads
released) and otherwise runs the whole batch as one slice; the variant therefore takes every call the numba
variant leaves. It owns the reference's cache type ``MaxPoolCache``: whichever made it, its backward is split
the same way.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .. import dispatch
from ..functional import pool as P
from ..functional.pool_geometry import index_dtype, pool_geometry, unpad
from . import split


def _always(*args, **kwargs) -> bool:
    return True


def max_pool2d_forward_split(x: np.ndarray, kernel_size, stride=None, padding=0, dilation=1,
                             ceil_mode: bool = False) -> Tuple[np.ndarray, P.MaxPoolCache]:
    """``pool.max_pool2d_forward`` with ``max_pool_into`` run on slices of the batch (§4, max pooling)."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    n = x.shape[0]
    out = np.empty(x.shape[:2] + (g.ho, g.wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=index_dtype(g))
    split.map_batch(lambda lo, hi: P.max_pool_into(x[lo:hi], g, out[lo:hi], idx[lo:hi]), n, x.size)
    return out, P.MaxPoolCache(idx, g, x.shape)


def max_pool2d_backward_split(dout: np.ndarray, cache: P.MaxPoolCache) -> np.ndarray:
    """``pool.max_pool2d_backward`` with ``max_unpool_into`` run on slices of the batch (§4, max pooling)."""
    idx, g, shape = cache
    n = shape[0]
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc(tuple(shape[:2]) + (g.hp, g.wp), dtype=dout.dtype)
    split.map_batch(lambda lo, hi: P.max_unpool_into(dout[lo:hi], idx[lo:hi], g, dxp[lo:hi]), n, dxp.size)
    return unpad(dxp, g)


def _examples() -> List[dispatch.Example]:
    g = np.random.default_rng(0)
    out = []
    for dt in (np.float32, np.float64):
        x = g.standard_normal((5, 3, 11, 12)).astype(dt)
        x[:, :, ::3, ::2] = 0.25                                      # ties: the first maximum wins
        for args in ((2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, (0, 1, 0, 1))):
            out.append(dispatch.Example((x.copy(),) + args))
        out.append(dispatch.Example((x.copy(), 2), dict(ceil_mode=True)))
        out.append(dispatch.Example((x.copy(), 2, 1), dict(dilation=2)))
    return out


dispatch.register(dispatch.Variant(
    op="max_pool2d", name="batch split", forward=max_pool2d_forward_split, applies=_always,
    backward=max_pool2d_backward_split, caches=(P.MaxPoolCache,), priority=0, exact=True, examples=_examples,
    mirrors="functional.pool.max_pool2d_forward",
    doc="the reference's passes on slices of the batch, on parallel threads (NumPy path)"))
