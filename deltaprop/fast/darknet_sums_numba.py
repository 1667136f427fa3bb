"""Numba loops for Darknet's summation order (``functional.darknet_sums``): the same float operations in the
same order as the references, without their Python loop (``sequential_square_sum`` steps once per value) or
their temporaries (``sequential_gemm`` multiplies a whole row block per k). The j loop of the product runs
over independent outputs, so the compiler may vectorise it without changing any sum's order; no fast-math,
so no fused multiply-add. Bit-identical to the references (tests/test_variants.py).
"""
from __future__ import annotations

import numpy as np

from .. import dispatch
from ..functional.darknet_sums import _by_channel
from ..runtime import jit as _jit
from ..runtime.jit import jit


@jit
def _gemm_kernel(a, b, out):
    """out[i, j] = Σ_k a[i, k]·b[k, j], k in order, each product rounded (``gemm_nn``)."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for kk in range(k):
            av = a[i, kk]
            for j in range(n):
                out[i, j] += av * b[kk, j]


@jit
def _dot_nt_kernel(a, bt, out, acc):
    """out[i, j] = Σ_k a[i, k]·b[j, k], k in order (``gemm_nt``); ``bt`` is b transposed (K, N) so that the j loop
    (independent sums) is the inner one."""
    m, k = a.shape
    n = bt.shape[1]
    for i in range(m):
        for j in range(n):
            acc[j] = 0
        for kk in range(k):
            av = a[i, kk]
            for j in range(n):
                acc[j] += av * bt[kk, j]
        for j in range(n):
            out[i, j] = acc[j]


@jit
def _square_sum_kernel(flat, mean, out):
    """``variance_cpu``'s sum per row: v = (float)((double)v + (double)(x − μ)²), value after value."""
    c, m = flat.shape
    for i in range(c):
        v = np.float64(0.0)
        mu = mean[i]
        for k in range(m):
            d = flat[i, k] - mu
            dd = np.float64(d)
            v = np.float64(np.float32(v + dd * dd))
        out[i] = np.float32(v)


def _gemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    _gemm_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def _dot_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    _dot_nt_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b.T), out, np.empty(b.shape[0], np.float32))
    return out


def _square_sum(x3: np.ndarray, mean: np.ndarray) -> np.ndarray:
    out = np.zeros(x3.shape[1], dtype=np.float32)
    _square_sum_kernel(_by_channel(x3), np.ascontiguousarray(mean, dtype=np.float32), out)
    return out


def _f32(*arrays) -> bool:
    return _jit.enabled() and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)


def _gemm_examples():
    rs = np.random.default_rng(0)
    return [dispatch.Example((rs.standard_normal((m, k)).astype(np.float32),
                              rs.standard_normal((k, n)).astype(np.float32)))
            for m, k, n in ((3, 27, 50), (16, 300, 17), (1, 1, 1))]


def _square_examples():
    rs = np.random.default_rng(1)
    out = []
    for shape in ((2, 3, 40), (1, 5, 1000)):
        x = (rs.standard_normal(shape) * 0.05 + 0.3).astype(np.float32)
        out.append(dispatch.Example((x, x.mean(axis=(0, 2)).astype(np.float32))))
    return out


dispatch.register(dispatch.Variant(
    op="darknet_sums.sequential_gemm", name="numba loops", forward=_gemm, applies=_f32, exact=True,
    examples=_gemm_examples, mirrors="functional.darknet_sums.sequential_gemm",
    doc="gemm_nn's loops compiled: per output a sum over k in order (float32)"))
dispatch.register(dispatch.Variant(
    op="darknet_sums.sequential_dot_nt", name="numba loops", forward=_dot_nt, applies=_f32, exact=True,
    examples=lambda: [dispatch.Example((a, b.T.copy())) for a, b in (e.args for e in _gemm_examples())],
    mirrors="functional.darknet_sums.sequential_dot_nt",
    doc="gemm_nt's loops compiled: per output a sum over k in order (float32)"))
dispatch.register(dispatch.Variant(
    op="darknet_sums.sequential_square_sum", name="numba loop", forward=_square_sum, applies=_f32, exact=True,
    examples=_square_examples, mirrors="functional.darknet_sums.sequential_square_sum",
    doc="variance_cpu's sum compiled: the double step and float rounding per value (float32)"))
