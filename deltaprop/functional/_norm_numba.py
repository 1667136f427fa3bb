"""Fused batch norm + activation with numba (extra ``deltaprop[fast]``), used by ``norm.batchnorm_act_*``.

The per-channel sums stay the NumPy path's BLAS products; numba fuses the elementwise passes around them:
forward ``z − μ`` (one pass), then ``ẑ = (z − μ)·inv_std``, ``y = γẑ + β``, ``a = σ(y)`` (one pass, writing ẑ
for the backward and a); backward ``δ = dout ⊙ σ'(y)`` with y recomputed from ẑ (one pass) and the input
gradient (one pass). Each value goes through the same float operations in the same order as the NumPy
path, so the two give the same numbers bit for bit.
"""
from __future__ import annotations

import numpy as np

from . import _numba
from ._numba import jit
from .norm import _check_m, channel_dot, channel_sum, channel_view, update_running_stats

_CODES = {"linear": 0, "relu": 1, "leaky": 2}


@jit
def _center(x3, mean, out):
    n, c, s = x3.shape
    for b in range(n):
        for ch in range(c):
            mu = mean[ch]
            for k in range(s):
                out[b, ch, k] = x3[b, ch, k] - mu


@jit
def _apply(xhat, inv_std, gamma, beta, code, slope, out):
    n, c, s = xhat.shape
    for b in range(n):
        for ch in range(c):
            iv = inv_std[ch]
            g = gamma[ch]
            bt = beta[ch]
            for k in range(s):
                xh = xhat[b, ch, k] * iv
                xhat[b, ch, k] = xh
                y = xh * g
                y = y + bt
                if code == 0 or y > 0:
                    out[b, ch, k] = y
                elif code == 2:
                    out[b, ch, k] = y * slope
                else:
                    out[b, ch, k] = 0


@jit
def _act_grad(dout, xhat, gamma, beta, code, slope, out):
    n, c, s = xhat.shape
    for b in range(n):
        for ch in range(c):
            g = gamma[ch]
            bt = beta[ch]
            for k in range(s):
                y = xhat[b, ch, k] * g
                y = y + bt
                d = dout[b, ch, k]
                if code == 0 or y > 0:
                    out[b, ch, k] = d
                elif code == 2:
                    out[b, ch, k] = d * slope
                else:
                    out[b, ch, k] = 0


@jit
def _input_grad(dz, xhat, k1, k2, k3):
    """In place: dz ← (dz·k1 − ẑ·k2) − k3 per channel (``norm.bn_input_grad``'s operations)."""
    n, c, s = dz.shape
    for b in range(n):
        for ch in range(c):
            a1 = k1[ch]
            a2 = k2[ch]
            a3 = k3[ch]
            for k in range(s):
                v = dz[b, ch, k] * a1
                v = v - xhat[b, ch, k] * a2
                dz[b, ch, k] = v - a3


@jit
def _scale(dz, k1):
    n, c, s = dz.shape
    for b in range(n):
        for ch in range(c):
            a1 = k1[ch]
            for k in range(s):
                dz[b, ch, k] = dz[b, ch, k] * a1


def bn_act_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, activation, negative_slope):
    x3 = channel_view(x)
    dt = x3.dtype
    t = dt.type
    xhat = np.empty_like(x3)
    if training or running_mean is None:
        m = _check_m(x3, x.shape)
        mean = channel_sum(x3) / t(m)
        _center(x3, mean, xhat)
        var = channel_dot(xhat, xhat) / t(m)
        if training and running_mean is not None:
            update_running_stats(running_mean, running_var, mean, var, m, momentum)
        batch = True
    else:
        mean = running_mean.astype(dt, copy=False)
        var = running_var.astype(dt, copy=False)
        _center(x3, mean, xhat)
        batch = False
    inv_std = (1.0 / np.sqrt(var + t(eps))).astype(dt, copy=False)
    code = _CODES[activation]
    slope = t(negative_slope)
    gamma = gamma.astype(dt, copy=False)
    beta = beta.astype(dt, copy=False)
    out = np.empty_like(x3)
    _apply(xhat, inv_std, gamma, beta, code, slope, out)
    return out.reshape(x.shape), ("numba", xhat, inv_std, gamma, beta, batch, code, slope, x.shape)


def bn_act_backward(dout, cache, need_dx=True):
    _, xhat, inv_std, gamma, beta, batch, code, slope, shape = cache
    d3 = channel_view(dout)
    dz = np.empty_like(d3)
    if _numba.enabled():
        _act_grad(d3, xhat, gamma, beta, code, slope, dz)
    else:  # numba switched off since the forward: the same operations in NumPy
        y = xhat * gamma[:, None]
        y += beta[:, None]
        dz[...] = d3 if code == 0 else d3 * np.where(y > 0, slope.dtype.type(1), slope if code == 2 else 0)
    dbeta = channel_sum(dz)
    dgamma = channel_dot(dz, xhat)
    if not need_dx:
        return None, dgamma, dbeta
    t = dz.dtype.type
    k1 = gamma * inv_std
    if batch:
        m = t(dz.shape[0] * dz.shape[2])
        k2 = k1 * dgamma / m
        k3 = k1 * dbeta / m
        if _numba.enabled():
            _input_grad(dz, xhat, k1, k2, k3)
        else:
            dz *= k1[:, None]
            dz -= xhat * k2[:, None]
            dz -= k3[:, None]
    elif _numba.enabled():
        _scale(dz, k1)
    else:
        dz *= k1[:, None]
    return dz.reshape(shape), dgamma, dbeta
