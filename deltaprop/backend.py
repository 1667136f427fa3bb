"""Default dtype, random numbers, the gradient-recording mode and the input checks.

NumPy is the array library. float32 is the default dtype; float64 is available everywhere for
checks. One global ``numpy.random.Generator`` serves initialisation, shuffling and dropout;
``manual_seed`` resets it. ``check_array`` names what is wrong with an input; its scan for NaN and infinite
values is the op ``count_nonfinite`` (a one-pass numba variant registers from ``deltaprop.fast``).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import numpy as np

from . import dispatch
from .errors import DTypeError, NonFiniteError, ShapeError

_DEFAULT_DTYPE = np.dtype(np.float32)
_rng = np.random.default_rng()
_state = threading.local()


def get_default_dtype() -> np.dtype:
    """The dtype new parameters are created with (float32 unless changed)."""
    return _DEFAULT_DTYPE


def set_default_dtype(dtype) -> None:
    """Set the dtype of new parameters: float32 or float64."""
    global _DEFAULT_DTYPE
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise DTypeError(f"default dtype must be float32 or float64, got {dt}")
    _DEFAULT_DTYPE = dt


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the global generator used for initialisation, shuffling and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def rng() -> np.random.Generator:
    """The global random generator."""
    return _rng


def get_rng_state() -> dict:
    """The global generator's state (a JSON-able dict), for checkpoints."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    """Restore a state returned by ``get_rng_state``."""
    _rng.bit_generator.state = state


# --- gradient mode -------------------------------------------------------------------------
# None: layers keep caches when in training mode; False: never (no_grad); True: always (enable_grad).

def _grad_mode() -> Optional[bool]:
    return getattr(_state, "grad_mode", None)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside this block forward passes keep no caches: inference only, no backward."""
    prev = _grad_mode()
    _state.grad_mode = False
    try:
        yield
    finally:
        _state.grad_mode = prev


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Inside this block forward passes keep caches even in eval() mode (e.g. sensitivity maps)."""
    prev = _grad_mode()
    _state.grad_mode = True
    try:
        yield
    finally:
        _state.grad_mode = prev


def keeps_cache(training: bool) -> bool:
    """Whether a module in the given training mode should keep what its backward needs."""
    mode = _grad_mode()
    return training if mode is None else mode


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return _grad_mode() is not False



# --- input validation ----------------------------------------------------------------------

@dispatch.op("count_nonfinite")
def count_nonfinite(x: np.ndarray) -> int:
    """The number of NaN or infinite entries of the float array ``x``: its size less its finite entries."""
    return int(x.size - np.count_nonzero(np.isfinite(x)))


def check_array(x, name: str = "input", ndim=None, dtype=None, finite: bool = False) -> np.ndarray:
    """Return ``x`` if it is a float ndarray of the right rank/dtype, else raise a named error."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise DTypeError(f"{name} must be a floating-point array, got dtype {x.dtype} "
                         f"(convert with x.astype(np.float32))")
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(f"{name} has dtype {x.dtype} but the module's parameters are {np.dtype(dtype)} "
                         f"(convert the input, or the model with .float()/.double())")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ShapeError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {x.shape}")
    bad = count_nonfinite(x) if finite else 0
    if bad:
        raise NonFiniteError(f"{name} contains {bad} NaN or infinite value(s) (shape {x.shape})")
    return x
