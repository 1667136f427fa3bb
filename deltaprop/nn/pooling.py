"""Pooling layers (docs/equations.md §4): thin wrappers around ``functional.pool``; no parameters.

Inputs (N, C, H, W) or unbatched (C, H, W). ``padding`` may be an int, a pair or a 4-tuple
(top, bottom, left, right); Darknet's ``[maxpool]`` geometry comes from
``functional.pool_geometry.darknet_maxpool_padding``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ..functional import pool as F
from ..functional.pool_geometry import pool_padding
from .module import Module

IntOr2 = Union[int, Sequence[int]]


def _norm(v):
    return None if v is None else (int(v) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v))


class _Pool2d(Module):
    """Shared forward/backward: batch the (C, H, W) case, keep the kernel's cache."""

    def _kernel(self, x: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: np.ndarray) -> np.ndarray:
        squeeze = isinstance(x, np.ndarray) and x.ndim == 3
        if squeeze:
            x = x[None]
        y, cache = self._kernel(x)
        self._save((cache, squeeze))
        return y[0] if squeeze else y

    def _backward_kernel(self, dout: np.ndarray, cache) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache, squeeze = self._take()
        if not self.needs_input_grad:
            return None
        dx = self._backward_kernel(dout[None] if squeeze else dout, cache)
        return dx[0] if squeeze else dx


class MaxPool2d(_Pool2d):
    """Max over each window; backward routes each delta to the window's arg-max (first maximum in
    row-major order wins ties, as PyTorch and Darknet); padded cells are −∞."""

    def __init__(self, kernel_size: IntOr2, stride: Optional[IntOr2] = None, padding: Union[int, Sequence[int]] = 0,
                 dilation: IntOr2 = 1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = _norm(kernel_size)
        self.stride = _norm(stride) if stride is not None else self.kernel_size
        self.padding = _norm(padding)
        self.dilation = _norm(dilation)
        self.ceil_mode = bool(ceil_mode)
        pool_padding(self.padding)  # validate now, not at the first forward

    def _kernel(self, x):
        return F.max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def _backward_kernel(self, dout, cache):
        return F.max_pool2d_backward(dout, cache)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(_Pool2d):
    """Mean over each window (padded cells are 0 and count in the divisor when ``count_include_pad``)."""

    def __init__(self, kernel_size: IntOr2, stride: Optional[IntOr2] = None, padding: Union[int, Sequence[int]] = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = _norm(kernel_size)
        self.stride = _norm(stride) if stride is not None else self.kernel_size
        self.padding = _norm(padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        pool_padding(self.padding)

    def _kernel(self, x):
        return F.avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                    self.count_include_pad)

    def _backward_kernel(self, dout, cache):
        return F.avg_pool2d_backward(dout, cache)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}, count_include_pad={self.count_include_pad}")


class LPPool2d(_Pool2d):
    """g = (Σ_window |x|^p)^{1/p}, p = ``norm_type`` ≥ 1 (∞ allowed); gradient with the sign kept (§4).
    PyTorch's LPPool2d agrees for x ≥ 0 or even p, on windows inside the input."""

    def __init__(self, norm_type: float, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        if not float(norm_type) >= 1:
            raise ValueError(f"LPPool2d: norm_type must be ≥ 1, got {norm_type!r}")
        self.norm_type = float(norm_type)
        self.kernel_size = _norm(kernel_size)
        self.stride = _norm(stride) if stride is not None else self.kernel_size
        self.ceil_mode = bool(ceil_mode)

    def _kernel(self, x):
        return F.lp_pool2d_forward(x, self.norm_type, self.kernel_size, self.stride, 0, self.ceil_mode)

    def _backward_kernel(self, dout, cache):
        return F.lp_pool2d_backward(dout, cache)

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        if cfg["norm_type"] == float("inf"):
            cfg["norm_type"] = "inf"  # JSON has no infinity; float("inf") reads it back
        return cfg

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class AdaptiveAvgPool2d(_Pool2d):
    """Average over PyTorch's adaptive windows to a fixed ``output_size`` (int, pair, None = keep);
    ``AdaptiveAvgPool2d(1)`` is the global average (Darknet's ``[avgpool]``)."""

    def __init__(self, output_size: Union[int, Sequence[Optional[int]], None]) -> None:
        super().__init__()
        if output_size is None or isinstance(output_size, (int, np.integer)):
            self.output_size = None if output_size is None else int(output_size)
        else:
            self.output_size = tuple(None if v is None else int(v) for v in output_size)

    def _kernel(self, x):
        return F.adaptive_avg_pool2d_forward(x, self.output_size)

    def _backward_kernel(self, dout, cache):
        return F.adaptive_avg_pool2d_backward(dout, cache)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
