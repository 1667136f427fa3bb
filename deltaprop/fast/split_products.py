"""Matrix products on numba's threads, each product (or block of its rows) on one thread of the BLAS library.

``matmul(a, b, out)``: out[q] = a[q] b[q] for a batch of products (Winograd's 16), or one product split into
blocks of rows, as a parallel loop of numba over the (product, row block) pairs, each a call of the library's
``cblas_?gemm`` on one thread (``fast/cblas.py``: why one pool of threads, and how the library is called). Each
row of the result is computed as the library computes it in the whole product on one thread. Operands may be any
views whose rows are contiguous (a channel slice of a concatenation included); what does not fit goes to
``runtime.blas.matmul``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..runtime import blas, threads
from ..runtime.jit import jit, prange
from . import cblas
from .cblas import gemm

#: multiply-adds of a product that weigh as one element of a pass when the parallel build is chosen
#: (``runtime.jit``: from ``PARALLEL_MIN`` elements): a 1×1 convolution's product of 256×1024 by 1024×100 is
#: 26M multiply-adds but 25,600 outputs; counted by its outputs it ran on one thread, 2.4× slower at batch 1
MACS_PER_ELEMENT = 64


@jit(parallel=True)
def _products(addr, is64, alpha, pa, pb, pc, sa, sb, sc, lda, ldb, ldc, m, n, k, count, blocks, size):
    """out[q, rows of block r] = a[q, rows of block r] b[q] for every (q, r), one cblas call each; the operands
    are addresses, their batch strides (sa, sb, sc) and row strides (lda, ldb, ldc) in elements."""
    for t in prange(count * blocks):
        q = t // blocks
        r = t - q * blocks
        m0 = (m * r) // blocks
        m1 = (m * (r + 1)) // blocks
        if m1 > m0:
            gemm(addr, is64, m1 - m0, n, k, alpha, pa + (q * sa + m0 * lda) * size, lda, pb + q * sb * size, ldb,
                 pc + (q * sc + m0 * ldc) * size, ldc)


@jit(parallel=True)
def _products_bias_act(addr, is64, alpha, pa, pb, c, sa, sb, lda, ldb, ldc, m, n, k, blocks, size, bias, slope,
                       act):
    """``_products`` into the array c (Q, M, N), each row block finished in the same iteration: c[q, i] + bias[i],
    then max(o, slope·o) when ``act`` (the epilogue of a 1×1 convolution or a dense layer, while its rows are in
    the core's cache)."""
    count = c.shape[0]
    pc = c.ctypes.data
    sc = c.strides[0] // size
    for t in prange(count * blocks):
        q = t // blocks
        r = t - q * blocks
        m0 = (m * r) // blocks
        m1 = (m * (r + 1)) // blocks
        if m1 > m0:
            gemm(addr, is64, m1 - m0, n, k, alpha, pa + (q * sa + m0 * lda) * size, lda, pb + q * sb * size, ldb,
                 pc + (q * sc + m0 * ldc) * size, ldc)
            for i in range(m0, m1):
                b = bias[i]
                for j in range(n):
                    o = c[q, i, j] + b
                    if act:
                        e = o * slope
                        o = o if o > e else e
                    c[q, i, j] = o


def _row_stride(x: np.ndarray) -> Optional[int]:
    """Elements between the rows of a 2-D view whose rows are contiguous (else None)."""
    s = x.itemsize
    if (x.shape[1] > 1 and x.strides[1] != s) or x.strides[0] % s or x.strides[0] < 0:
        return None
    return max(x.strides[0] // s, x.shape[1], 1)


def matmul_bias_act(a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray, slope: float, act: bool,
                    blocks: int = 0) -> np.ndarray:
    """``matmul`` with its epilogue: out[q] = a[q] @ b[q] + bias[:, None], then max(o, slope·o) when ``act``,
    each row block finished by the thread that computed it. Without numba or a callable library: the product by
    ``runtime.blas.matmul``, then the same arithmetic in NumPy."""
    plan = _plan(a, b, out, blocks)
    if plan is None:
        blas.matmul(a, b, out=out)
        o = out if out.ndim == 3 else out[None]
        o += bias[:, None]
        if act:
            np.maximum(o, o * out.dtype.type(slope), out=o)
        return out
    addr, is64, (a3, b3, c3), lds, (sa, sb, sc), (m, n, k), count, blocks, size = plan
    with cblas.one_thread():
        kernel = _products_bias_act.compiled(count * m * n * k // MACS_PER_ELEMENT)
        kernel(addr, is64, a.dtype.type(1), a3.ctypes.data, b3.ctypes.data, c3, sa, sb, lds[0], lds[1], lds[2], m,
               n, k, blocks, size, bias, out.dtype.type(slope), act)
    return out


def _plan(a: np.ndarray, b: np.ndarray, out: np.ndarray, blocks: int):
    """What the kernels need for out[q] = a[q] b[q], or None when they cannot take it."""
    a3, b3, c3 = (x if x.ndim == 3 else x[None] for x in (a, b, out))
    lib = cblas.library()
    ok = (lib is not None and a.dtype in (np.float32, np.float64) and a.dtype == b.dtype == out.dtype
          and a3.shape[-1] == b3.shape[-2] and c3.shape[-2:] == (a3.shape[-2], b3.shape[-1]) and min(c3.shape) > 0
          and a3.shape[-1] > 0)
    lds = [_row_stride(x[0]) for x in (a3, b3, c3)] if ok else [None]
    if not ok or None in lds:
        return None
    cblas.bind()
    size = a.itemsize
    count = c3.shape[0]
    if blocks <= 0:
        blocks = max(1, -(-threads.kernel_threads() // count))
    strides = (a3.strides[0] // size if a.ndim == 3 else 0, b3.strides[0] // size if b.ndim == 3 else 0,
               c3.strides[0] // size)
    return (cblas.gemm_address(a.dtype), lib["is64"], (a3, b3, c3), lds, strides,
            (a3.shape[1], b3.shape[2], a3.shape[2]), count, blocks, size)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, blocks: int = 0) -> np.ndarray:
    """out[q] = a[q] @ b[q] for 3-D operands (a 2-D operand is shared by every q; out (Q, M, N), or (M, N) for
    one product), each product split into ``blocks`` blocks of rows (0: as many as the threads need to have
    work), the (product, block) pairs on numba's threads. ``runtime.blas.matmul`` takes what this cannot (no
    numba or no callable library, other dtypes, rows that are not contiguous, shapes that do not match)."""
    plan = _plan(a, b, out, blocks)
    if plan is None:
        return blas.matmul(a, b, out=out)
    addr, is64, (a3, b3, c3), lds, (sa, sb, sc), (m, n, k), count, blocks, size = plan
    with cblas.one_thread():
        kernel = _products.compiled(count * m * n * k // MACS_PER_ELEMENT)
        kernel(addr, is64, a.dtype.type(1), a3.ctypes.data, b3.ctypes.data, c3.ctypes.data, sa, sb, sc, lds[0],
               lds[1], lds[2], m, n, k, count, blocks, size)
    return out
