"""Matrix products on numba's threads, each product (or block of its rows) on one thread of the BLAS library.

The inference plan runs its products between numba kernels (Winograd's transforms, the epilogues). With NumPy's
OpenBLAS that puts two pools of threads on the same cores: OpenBLAS's spin for a while after each product and
take the core the next kernel needs; stopping them (``runtime.threads.before_parallel_kernel``) costs a restart at
the next product. On the 2-vCPU EPYC, yolov3-tiny's Winograd products ran no faster on two of OpenBLAS's threads
than on one inside the plan (docs/inference.md). ONNX Runtime and OpenVINO run everything on one pool; so does
this module: a product ``C[k] = A[k] B[k]`` (a batch of them, Winograd's 16, or one split into blocks of rows)
is a parallel loop of numba over the (product, row block) pairs, each calling the library's ``cblas_?gemm`` on
one thread. OpenBLAS is held to one thread meanwhile (``openblas_set_num_threads``, restored after); MKL is asked
for one thread per caller (``MKL_Set_Num_Threads_Local``).

The library is the one ``runtime.blas`` chose (MKL or NumPy's OpenBLAS), found through ``runtime.machine``'s list
of loaded libraries; its ``cblas_?gemm`` is compiled into the loop (numba calls it as cheaply as C would; the
address is compiled in, so the loop is compiled once per process and not cached on disk). Each product's numbers
are the library's for that product on one thread: the rows of a block are computed as in the whole product.
Operands may be any row-major views whose rows are contiguous (a channel slice of a concatenation included).
"""
from __future__ import annotations

import ctypes
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..runtime import blas, machine, numba_loader, threads

_ROW_MAJOR, _NO_TRANS = 101, 111
_kernels: Dict[Tuple[str, str, bool], Callable] = {}
_library: Optional[dict] = None


def _find_library() -> dict:
    """The cblas_?gemm functions of the library in use and how to hold it to one thread."""
    name = blas.ensure()
    if name == "mkl":
        lib = next(ctypes.CDLL(p) for p in machine.mkl_candidates() if os.path.exists(p))
        return {"name": "mkl", "lib": lib, "gemm": {"s": lib.cblas_sgemm, "d": lib.cblas_dgemm}, "int": ctypes.c_int,
                "local": lib.MKL_Set_Num_Threads_Local}
    path = next((p for p in machine.loaded_library_paths() if "openblas" in os.path.basename(p).lower()), None)
    if path is None:
        raise RuntimeError("split_products: NumPy's BLAS is not OpenBLAS")
    lib = ctypes.CDLL(path)
    for s, d, integer, setn, getn in (
            ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", ctypes.c_int64, "scipy_openblas_set_num_threads64_",
             "scipy_openblas_get_num_threads64_"),
            ("cblas_sgemm64_", "cblas_dgemm64_", ctypes.c_int64, "openblas_set_num_threads64_",
             "openblas_get_num_threads64_"),
            ("scipy_cblas_sgemm", "scipy_cblas_dgemm", ctypes.c_int, "scipy_openblas_set_num_threads",
             "scipy_openblas_get_num_threads"),
            ("cblas_sgemm", "cblas_dgemm", ctypes.c_int, "openblas_set_num_threads", "openblas_get_num_threads")):
        if all(hasattr(lib, f) for f in (s, d, setn, getn)):
            set_threads, get_threads = getattr(lib, setn), getattr(lib, getn)
            set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
            get_threads.argtypes, get_threads.restype = [], ctypes.c_int
            return {"name": "openblas", "lib": lib, "gemm": {"s": getattr(lib, s), "d": getattr(lib, d)},
                    "int": integer, "set_threads": set_threads, "get_threads": get_threads}
    raise RuntimeError(f"split_products: {path} has no cblas_sgemm this module knows")


def available() -> bool:
    """Whether the products can run this way: numba, and a library with the functions needed."""
    global _library
    if numba_loader.numba_module() is None:
        return False
    if _library is None:
        try:
            _library = _find_library()
        except (RuntimeError, OSError, StopIteration, AttributeError):
            _library = {"name": None}
    return _library["name"] is not None


def _kernel(t: str, parallel: bool) -> Callable:
    """The loop over (product, row block) pairs calling the library's ``cblas_?gemm``, for float type ``t``."""
    key = (_library["name"], t, parallel)
    k = _kernels.get(key)
    if k is not None:
        return k
    nb = numba_loader.numba_module()
    real = ctypes.c_float if t == "s" else ctypes.c_double
    integer = _library["int"]
    # the pointers travel as 64-bit integers (the same registers as pointers on x86-64 and arm64)
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer, real,
                             ctypes.c_int64, integer, ctypes.c_int64, integer, real, ctypes.c_int64, integer)
    gemm = proto(ctypes.cast(_library["gemm"][t], ctypes.c_void_p).value)
    one, zero = (np.float32(1), np.float32(0)) if t == "s" else (1.0, 0.0)
    if _library["name"] == "mkl":
        local = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(ctypes.cast(_library["local"], ctypes.c_void_p).value)
    else:
        local = None
    prange = nb.prange if parallel else range

    def body(pa, pb, pc, sa, sb, sc, lda, ldb, ldc, m, n, k, count, blocks, size):
        for t in prange(count * blocks):
            q = t // blocks
            r = t - q * blocks
            m0 = (m * r) // blocks
            m1 = (m * (r + 1)) // blocks
            if m1 > m0:
                gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m1 - m0, n, k, one, pa + (q * sa + m0 * lda) * size, lda,
                     pb + q * sb * size, ldb, zero, pc + (q * sc + m0 * ldc) * size, ldc)

    def body_mkl(pa, pb, pc, sa, sb, sc, lda, ldb, ldc, m, n, k, count, blocks, size):
        for t in prange(count * blocks):
            q = t // blocks
            r = t - q * blocks
            m0 = (m * r) // blocks
            m1 = (m * (r + 1)) // blocks
            if m1 > m0:
                before = local(1)
                gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m1 - m0, n, k, one, pa + (q * sa + m0 * lda) * size, lda,
                     pb + q * sb * size, ldb, zero, pc + (q * sc + m0 * ldc) * size, ldc)
                local(before)
    fn = body_mkl if local is not None else body
    k = _kernels[key] = nb.njit(parallel=parallel, nogil=True, cache=False)(fn)
    return k


def _rows(x: np.ndarray) -> Optional[int]:
    """The leading dimension (elements between rows) of a 2-D view with contiguous rows, else None."""
    s = x.itemsize
    if x.strides[1] != s and x.shape[1] > 1 or x.strides[0] % s or x.strides[0] < 0:
        return None
    return max(x.strides[0] // s, x.shape[1], 1)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, blocks: int = 0) -> np.ndarray:
    """out[q] = a[q] @ b[q] for 3-D operands (a 2-D one is shared by every q), out (Q, M, N) or (M, N), each
    product split into ``blocks`` blocks of rows (0: enough blocks for every thread to have work), the
    (product, block) pairs on numba's threads, each on one thread of the library. Falls back to
    ``runtime.blas.matmul`` for what it cannot take (no numba, other dtypes, rows that are not contiguous)."""
    a3, b3, c3 = (x if x.ndim == 3 else x[None] for x in (a, b, out))
    count = c3.shape[0]
    t = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(a.dtype)
    lds = [_rows(x[0]) for x in (a3, b3, c3)] if t is not None else [None]
    if (t is None or not available() or None in lds or not (a.dtype == b.dtype == out.dtype)
            or a3.shape[-1] != b3.shape[-2] or c3.shape[-2:] != (a3.shape[-2], b3.shape[-1])):
        return blas.matmul(a, b, out=out)
    m, k = a3.shape[1:]
    n = b3.shape[2]
    size = a.itemsize
    sa = a3.strides[0] // size if a.ndim == 3 else 0
    sb = b3.strides[0] // size if b.ndim == 3 else 0
    sc = c3.strides[0] // size
    nthreads = threads.max_threads()
    if blocks <= 0:
        blocks = max(1, -(-nthreads // count)) if nthreads > 1 else 1
    parallel = count * blocks > 1 and nthreads > 1 and threads.parallel_build(None)
    if parallel:
        threads.start_kernels()                      # numba's pool as the runtime sets it up
        parallel = not threads.serial_only()
    _threads_one()
    try:
        _kernel(t, parallel)(a3.ctypes.data, b3.ctypes.data, c3.ctypes.data, sa, sb, sc, lds[0], lds[1], lds[2],
                             m, n, k, count, blocks, size)
    finally:
        _threads_back()
    return out


_held = [0]


def _threads_one() -> None:
    """OpenBLAS on one thread while the loop runs (its threads would otherwise serve each call)."""
    if _library["name"] == "openblas":
        _held[0] = _library["get_threads"]()
        if _held[0] != 1:
            _library["set_threads"](1)


def _threads_back() -> None:
    if _library["name"] == "openblas" and _held[0] not in (0, 1):
        _library["set_threads"](_held[0])
