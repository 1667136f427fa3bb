"""The work ``deltaprop.tune()`` times to choose the library of the matrix products (``runtime.calibrate``):
the products a training step makes, each followed by the numba kernels a step runs between them (the ReLU, and
one SGD-momentum update at the end). Registered with the runtime at import, so that the runtime imports no
kernel."""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np

from ..runtime import blas, calibrate
from . import elementwise_numba as ew
from .sgd_numba import sgd_momentum_update

# (m, k, n) of the products timed: MLP 784-256-128-10 at batch 64 forward and weight gradients, a LeNet
# conv2 im2col product (64·10·10 positions × 150) and a conv-BN conv2 one (16·32·32 × 144 → 32)
SHAPES: List[Tuple[int, int, int]] = [(64, 784, 256), (256, 64, 784), (64, 256, 128), (128, 64, 256),
                                      (6400, 150, 16), (16384, 144, 32)]


def _step_work(shapes, seed: int = 0):
    """The operands of the timed products and the buffers of the kernels in between."""
    g = np.random.default_rng(seed)
    prods = []
    for m, k, n in shapes:
        a = g.standard_normal((m, k)).astype(np.float32)
        b = g.standard_normal((n, k)).astype(np.float32).T      # a transposed view, as a layer's weight
        prods.append((a, b))
    w = g.standard_normal(784 * 256).astype(np.float32) * np.float32(0.01)
    return prods, (w, np.zeros_like(w), np.zeros_like(w))


def _run_step(prods, sgd) -> None:
    """Each product, then the ReLU of its result; one SGD-momentum pass over a 784×256 weight at the end (the
    NumPy path's passes where numba is off)."""
    for a, b in prods:
        c = blas.matmul(a, b)
        if ew.relu_forward(c) is None:
            np.maximum(c, 0, out=c)
    w, grad, buf = sgd
    if not sgd_momentum_update(w, grad, buf, 0.0, 0.9, 0.0, 0.0, False, False):
        buf *= np.float32(0.9)
        buf += grad


def make_step(shapes=SHAPES) -> Callable[[], None]:
    """``step()``: one pass over the products of ``shapes`` and the kernels between them, on fixed operands."""
    prods, sgd = _step_work(shapes)
    return lambda: _run_step(prods, sgd)


calibrate.register_blas_workload(make_step)
