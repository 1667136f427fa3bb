"""``nn.Linear``: a fully connected layer (FC-1, FC-2, FC-3)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..functional import dense
from . import init
from .module import Module
from .parameter import Parameter


class Linear(Module):
    """``y = x Wᵀ + b`` with ``weight`` (out_features, in_features) and ``bias`` (out_features,).

    Input (N, in_features) or (in_features,); PyTorch's default initialisation U(±1/√in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: features must be positive, got in={in_features}, out={out_features}")
        dt = np.dtype(dtype or backend.get_default_dtype())
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dt))
        self.bias = Parameter(np.empty(out_features, dtype=dt)) if bias else None
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.weight.data
        self._check_dtype(x, w.dtype)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}): expected input (N, {self.in_features}), "
                             f"got shape {x.shape if not squeeze else x.shape[1:]}")
        z, cache = dense.linear_forward(x, w, None if self.bias is None else self.bias.data)
        self._save((cache, squeeze))
        return z[0] if squeeze else z

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache, squeeze = self._take()
        if squeeze:
            dout = dout[None]
        dx, dw, db = dense.linear_backward(dout, cache, need_dx=self.needs_input_grad)
        self.weight.accumulate(dw, owned=True)  # dw, db are fresh products: no copy needed
        if self.bias is not None:
            self.bias.accumulate(db, owned=True)
        if dx is not None and squeeze:
            dx = dx[0]
        return dx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
