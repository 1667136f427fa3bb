"""The SGD update of one parameter (docs/equations.md §7, update-1 to update-4), PyTorch's form: the reference of
the op ``sgd_update`` (``dispatch.op``), which ``optim.SGD`` calls for each parameter. The numba kernel that does
the same operations in one pass over memory is a variant of it (``fast.sgd_numba``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import dispatch


def decayed_gradient(grad: np.ndarray, w: np.ndarray, weight_decay: float) -> np.ndarray:
    """update-4: ``g + λw``, the gradient of C + (λ/2)·Σw² (PyTorch's ``weight_decay=λ``), a new array in the
    parameter's dtype (λ is a Python float: NumPy casts it to w's dtype)."""
    return grad + weight_decay * w


@dispatch.op("sgd_update")
def sgd_update(w: np.ndarray, grad: np.ndarray, buf: Optional[np.ndarray], lr: float, momentum: float = 0.0,
               dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
               maximize: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One step of SGD on the parameter ``w``, in place, in PyTorch's order (§7):

    - ``g ← −g`` to maximise;
    - update-4, weight decay: ``g ← g + λw`` (``decayed_gradient``);
    - update-2/3, momentum γ with dampening τ (PyTorch's form): ``b ← g`` at the first step (``buf`` None), then
      ``b ← γb + (1 − τ)g``; the step direction is ``g + γb`` with Nesterov, else ``b``;
    - update-1: ``w ← w − α·direction``.

    ``buf`` is the momentum buffer (in w's dtype; updated in place), None before the first step. Returns
    ``(w, buf)``: the parameter and the momentum buffer, new at the first step, None without momentum. The
    scalars are Python floats, so a float32 parameter stays float32."""
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = decayed_gradient(g, w, weight_decay)
    if momentum != 0:
        if buf is None:
            buf = np.array(g, dtype=w.dtype, copy=True)
        else:
            buf *= momentum
            buf += g if dampening == 0 else (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    w -= lr * g
    return w, buf
