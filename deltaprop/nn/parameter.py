"""``Parameter``: a weight array with its gradient."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Optional

import numpy as np

_limit = threading.local()


@contextlib.contextmanager
def allocation_limit(nbytes: int, error: Callable[[int], Exception]) -> Iterator[None]:
    """Inside this block, creating Parameters whose arrays total more than ``nbytes`` raises ``error(total)``
    as soon as one is created, before its layer initialises (fills) it: a model rebuilt from a file's numbers
    stays within what the file can justify. ``np.empty`` of the array itself only reserves address space."""
    prev = getattr(_limit, "state", None)
    _limit.state = [int(nbytes), 0, error]
    try:
        yield
    finally:
        _limit.state = prev


def _charge(nbytes: int) -> None:
    state = getattr(_limit, "state", None)
    if state is not None:
        state[1] += nbytes
        if state[1] > state[0]:
            raise state[2](state[1])


class Parameter:
    """A trainable array. ``data`` holds the values, ``grad`` the accumulated ∂C/∂data (or None).

    Backward passes ADD into ``grad``; ``zero_grad`` clears it. A parameter with
    ``requires_grad=False`` is frozen: it receives no gradient and optimizers skip it.
    """

    __slots__ = ("data", "grad", "requires_grad", "__weakref__")

    def __init__(self, data: np.ndarray, requires_grad: bool = True) -> None:
        self.data = np.asarray(data)
        _charge(self.data.nbytes)
        self.grad: Optional[np.ndarray] = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def accumulate(self, g: np.ndarray, owned: bool = False) -> None:
        """grad += g (allocating on first use); ignored for frozen parameters.

        ``owned=True`` promises that ``g`` is a fresh array nobody else keeps (e.g. the result of the
        layer's matrix product): when there is no gradient yet it is adopted without a copy."""
        if not self.requires_grad:
            return
        if self.grad is None:
            if owned and g.dtype == self.data.dtype and g.shape == self.data.shape:
                self.grad = g
                return
            self.grad = np.array(g, dtype=self.data.dtype, copy=True).reshape(self.data.shape)
        else:
            self.grad += g.reshape(self.data.shape)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradient (to None, or to zeros with ``set_to_none=False``)."""
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad.fill(0)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, requires_grad={self.requires_grad})"
