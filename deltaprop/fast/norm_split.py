"""Batch norm's elementwise passes split over the batch (``fast.split``): variants of
``functional.norm.channel_center`` (z − μ), ``functional.norm.bn_input_grad`` (BN 2.3) and
``functional.conv_bn.affine_act_`` (the batch norm in evaluation folded into a scale and shift, then σ).

Each runs its reference on slices of the batch at once, on the NumPy path's threads where ``split.map_batch``
finds it worth it (numba off, a large pass, the products' threads released), else as one call: every element
goes through the same operations, so the numbers are the references' bit for bit.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import dispatch
from ..functional import conv_bn, norm
from . import split as _split


def channel_center_split(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``norm.channel_center`` by batch slices: z − μ per channel, a new array."""
    xc = np.empty_like(x3)
    mc = mean[:, None]
    _split.map_batch(lambda lo, hi: np.subtract(x3[lo:hi], mc, out=xc[lo:hi]), x3.shape[0], x3.size)
    return xc


def bn_input_grad_split(dy: np.ndarray, c: np.ndarray, k1: np.ndarray, k2: Optional[np.ndarray],
                        k3: Optional[np.ndarray], out: Optional[np.ndarray] = None,
                        consume_c: bool = False) -> np.ndarray:
    """``norm.bn_input_grad`` (BN 2.3) by batch slices, into ``out`` (a new array when None)."""
    dz = np.empty_like(dy) if out is None else out

    def part(lo: int, hi: int) -> None:
        norm.bn_input_grad.reference(dy[lo:hi], c[lo:hi], k1, k2, k3, dz[lo:hi], consume_c)
    _split.map_batch(part, dz.shape[0], dz.size)
    return dz


def affine_act_split(z: np.ndarray, scale: np.ndarray, shift: np.ndarray, activation: str = "linear",
                     slope: float = 0.1) -> np.ndarray:
    """``conv_bn.affine_act_`` by batch slices, in place on z."""
    z3 = conv_bn._checked(z, activation)
    _split.map_batch(lambda lo, hi: conv_bn.affine_act_.reference(z3[lo:hi], scale, shift, activation, slope),
                     z3.shape[0], z3.size)
    return z


def _is_numpy(x, *_, **__) -> bool:
    return isinstance(x, np.ndarray)


def _rand(shape, dtype, k: int) -> np.ndarray:
    return np.random.default_rng(k).standard_normal(shape).astype(dtype)


_DTYPES = (np.float32, np.float64)


def _center_examples():
    return [dispatch.Example((_rand((3, 4, 10), dt, 0), _rand(4, dt, 1))) for dt in _DTYPES]


def _input_grad_examples():
    out = []
    for dt in _DTYPES:
        k = [_rand(4, dt, i) for i in (3, 4, 5)]
        dy, c = _rand((3, 4, 10), dt, 1), _rand((3, 4, 10), dt, 2)
        out += [dispatch.Example((dy, c, *k)),                                   # training
                dispatch.Example((dy, c, k[0], None, None)),                     # running statistics
                dispatch.Example((dy.copy(), c.copy(), *k), {"consume_c": True}),
                dispatch.Example((dy.copy(), c.copy(), *k), {"out": np.empty_like(dy)})]
    return out


def _affine_act_examples():
    out = []
    for dt in _DTYPES:
        for act, slope in (("linear", 0.1), ("relu", 0.1), ("leaky", 0.1), ("leaky", 1.3)):
            out.append(dispatch.Example((_rand((3, 4, 5, 6), dt, 6), _rand(4, dt, 7), _rand(4, dt, 8), act,
                                         dt(slope))))
    return out


dispatch.register(dispatch.Variant(
    op="channel_center", name="split", forward=channel_center_split, applies=_is_numpy,
    mirrors="functional.norm.channel_center", examples=_center_examples, doc=channel_center_split.__doc__))

dispatch.register(dispatch.Variant(
    op="bn_input_grad", name="split", forward=bn_input_grad_split, applies=_is_numpy,
    mirrors="functional.norm.bn_input_grad", examples=_input_grad_examples, doc=bn_input_grad_split.__doc__))

dispatch.register(dispatch.Variant(
    op="affine_act", name="split", forward=affine_act_split, applies=_is_numpy,
    mirrors="functional.conv_bn.affine_act_", examples=_affine_act_examples, doc=affine_act_split.__doc__))
