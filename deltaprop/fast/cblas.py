"""The BLAS library's ``cblas_?gemm`` called from inside numba kernels, one thread per call.

The inference plan runs its products between numba kernels; with NumPy's OpenBLAS that puts two pools of threads
on the same cores (OpenBLAS's spin after each product on the core the next kernel needs, and stopping them costs
a restart at the next product: docs/runtime.md, "Threads"). On the 2-vCPU EPYC, yolov3-tiny's Winograd products
ran no faster on two of OpenBLAS's threads than on one inside the plan (docs/inference.md). ONNX Runtime and
OpenVINO run everything on one pool; so does the plan: a numba kernel's parallel loop calls the library for each
of its independent products (``gemm``), and the library is held to one thread meanwhile (``one_thread``).

The library is the one ``runtime.blas`` chose: MKL (``cblas_?gemm``, 32-bit sizes) or NumPy's OpenBLAS (its
``cblas_?gemm`` under the names its build exports, 32- or 64-bit sizes), found in ``runtime.machine``'s list of
loaded libraries. Kernels receive the function's address as an argument and call it through ``call_address``
(an LLVM call through the pointer), so they stay cached on disk. A kernel that calls ``gemm`` must live in this
package, and a change to ``call_address`` or ``gemm`` needs its callers recompiled (numba's cache checks the
kernel's own file only): edit their files too.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Iterator, Optional

import numpy as np

from ..runtime import blas, machine, numba_loader, threads
from ..runtime.jit import inline

_library: Optional[dict] = None

# names of (sgemm, dgemm, set threads, get threads, 64-bit sizes) in OpenBLAS builds, NumPy's wheels' first
_OPENBLAS_NAMES = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_set_num_threads64_",
     "scipy_openblas_get_num_threads64_", True),
    ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_set_num_threads64_", "openblas_get_num_threads64_", True),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", "scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads",
     False),
    ("cblas_sgemm", "cblas_dgemm", "openblas_set_num_threads", "openblas_get_num_threads", False),
)


def _address(fn) -> int:
    return int(ctypes.cast(fn, ctypes.c_void_p).value)


def _find() -> dict:
    """The library in use: its gemm addresses, the width of its sizes and its thread setters."""
    name = blas.ensure()
    if name == "mkl":
        lib = next(ctypes.CDLL(p) for p in machine.mkl_candidates() if os.path.exists(p))
        setn, getn = lib.MKL_Set_Num_Threads, lib.MKL_Get_Max_Threads
        setn.argtypes, setn.restype = [ctypes.c_int], None
        getn.argtypes, getn.restype = [], ctypes.c_int
        return {"name": "mkl", "s": _address(lib.cblas_sgemm), "d": _address(lib.cblas_dgemm), "is64": False,
                "set": setn, "get": getn}
    path = next((p for p in machine.loaded_library_paths() if "openblas" in os.path.basename(p).lower()), None)
    if path is None:
        return {"name": None, "why": "NumPy's BLAS is not OpenBLAS"}
    lib = ctypes.CDLL(path)
    for s, d, setname, getname, is64 in _OPENBLAS_NAMES:
        if all(hasattr(lib, f) for f in (s, d, setname, getname)):
            setn, getn = getattr(lib, setname), getattr(lib, getname)
            setn.argtypes, setn.restype = [ctypes.c_int], None
            getn.argtypes, getn.restype = [], ctypes.c_int
            return {"name": "openblas", "s": _address(getattr(lib, s)), "d": _address(getattr(lib, d)),
                    "is64": is64, "set": setn, "get": getn}
    return {"name": None, "why": f"{os.path.basename(path)} exports no cblas_sgemm this module knows"}


def library() -> Optional[dict]:
    """{"name": "mkl" | "openblas", "s"/"d": the addresses of cblas_sgemm/dgemm, "is64": 64-bit sizes, ...}, or
    None without numba or without a library this module can call."""
    global _library
    if numba_loader.numba_module() is None:
        return None
    if _library is None:
        try:
            _library = _find()
        except (OSError, StopIteration, AttributeError) as exc:
            _library = {"name": None, "why": f"{type(exc).__name__}: {exc}"}
    return _library if _library["name"] is not None else None


def gemm_address(dtype) -> int:
    """The address of cblas_sgemm (float32) or cblas_dgemm (float64) of the library in use."""
    return library()["s" if np.dtype(dtype) == np.float32 else "d"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """The library on one thread inside this block (the kernels' threads call it), as it was after. OpenBLAS's
    threads still spinning after an earlier product are stopped first (``runtime.threads``), so that the kernels
    inside run in parallel whatever their size (no product inside starts them again)."""
    lib = library()
    threads.before_parallel_kernel(threads.RELEASE_BEFORE_KERNEL)
    before = lib["get"]() if lib is not None else 1
    if before != 1:
        lib["set"](1)
    try:
        yield
    finally:
        if before != 1:
            lib["set"](before)


def _intrinsic():
    """numba's ``intrinsic`` decorator (imported with numba, when the first kernel compiles)."""
    return numba_loader.numba_module().extending.intrinsic


def _call_address_typer(typingctx, addr, args):
    """``call_address(addr, args)``: call the C function at the integer address ``addr`` with the values of the
    tuple ``args`` (their numba types are the C types), returning nothing."""
    from llvmlite import ir
    nb = numba_loader.numba_module()
    sig = nb.types.void(addr, args)

    def codegen(context, builder, signature, llargs):
        values = [builder.extract_value(llargs[1], i) for i in range(len(args))]
        fnty = ir.FunctionType(ir.VoidType(), [context.get_value_type(t) for t in args])
        builder.call(builder.inttoptr(llargs[0], fnty.as_pointer()), values)
        return context.get_dummy_value()
    return sig, codegen


class _Lazy:
    """``call_address`` made an intrinsic on first use (numba is imported only then)."""
    fn = None


def call_address(addr, args):  # pragma: no cover - replaced by the intrinsic inside kernels
    raise RuntimeError("call_address runs inside numba kernels only")


def bind() -> None:
    """Make ``call_address`` numba's intrinsic (before the first kernel that calls ``gemm`` compiles)."""
    global call_address
    if _Lazy.fn is None:
        _Lazy.fn = _intrinsic()(_call_address_typer)
        call_address = _Lazy.fn
        gemm.__globals__["call_address"] = _Lazy.fn


@inline
def gemm(addr, is64, m, n, k, alpha, pa, lda, pb, ldb, pc, ldc):
    """C (m×n, row stride ldc) = A (m×k, lda) · B (k×n, ldb), row-major, by the library's cblas_?gemm at ``addr``
    (pointers as integers, alpha 1 or 0 of the operands' float type: beta is 0)."""
    zero = alpha - alpha
    if is64:
        call_address(addr, (np.int32(101), np.int32(111), np.int32(111), np.int64(m), np.int64(n), np.int64(k),
                            alpha, np.int64(pa), np.int64(lda), np.int64(pb), np.int64(ldb), zero, np.int64(pc),
                            np.int64(ldc)))
    else:
        call_address(addr, (np.int32(101), np.int32(111), np.int32(111), np.int32(m), np.int32(n), np.int32(k),
                            alpha, np.int64(pa), np.int32(lda), np.int64(pb), np.int32(ldb), zero, np.int64(pc),
                            np.int32(ldc)))
