"""``nn.Conv2d`` and ``nn.Conv1d``: thin wrappers around ``functional.conv`` (Conv-1, Conv-2, Conv-3)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .. import backend
from ..errors import ShapeError
from ..functional import conv as F
from ..functional.im2col import padding4, pair
from . import init
from .module import Module
from .parameter import Parameter

IntOrPair = Union[int, Sequence[int]]


class Conv2d(Module):
    """2-D convolution with PyTorch's semantics: weight (out, in/groups, kh, kw), bias (out,).

    ``kernel_size``, ``stride``, ``dilation``: int or pair; ``padding``: int, pair, (top, bottom, left,
    right) or ``"same"`` (stride 1; the odd pixel goes bottom/right as PyTorch). Input (N, C, H, W) or (C, H, W).
    Extra options, off by default: ``mode="convolution"`` (true convolution, kernel flipped in the forward
    pass; seed 003) and ``untied_bias=(H_out, W_out)`` (one bias per output position, Conv-2 alternative).
    PyTorch's default initialisation U(±1/√fan_in) for weight and bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 mode: str = "cross_correlation", untied_bias: Optional[Sequence[int]] = None, dtype=None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        if min(self.in_channels, self.out_channels, self.groups) < 1:
            raise ValueError(f"{type(self).__name__}: channels and groups must be positive, got "
                             f"in={in_channels}, out={out_channels}, groups={groups}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ShapeError(f"{type(self).__name__}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        F.check_mode(mode)
        self.kernel_size = self._tuple(kernel_size, "kernel_size")
        self.stride = self._tuple(stride, "stride")
        self.dilation = self._tuple(dilation, "dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size, stride and dilation must be ≥ 1, got "
                             f"{self.kernel_size}, {self.stride}, {self.dilation}")
        self.mode = mode
        self.padding = self._padding(padding)
        self.untied_bias = None if untied_bias is None else self._tuple(untied_bias, "untied_bias")
        dt = np.dtype(dtype or backend.get_default_dtype())
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels // self.groups) + self.kernel_size,
                                         dtype=dt))
        if bias:
            shape = (self.out_channels,) + (self.untied_bias or ())
            self.bias = Parameter(np.empty(shape, dtype=dt))
        else:
            if untied_bias is not None:
                raise ValueError(f"{type(self).__name__}: untied_bias needs bias=True")
            self.bias = None
        init.default_layer_init_(self.weight, self.bias)

    # 2-D specifics (Conv1d overrides _tuple, _pad4_of, _spatial, _forward, _backward)
    def _tuple(self, v, name: str) -> tuple:
        return pair(v, name)

    def _padding(self, padding):
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding != "same":
                raise ValueError(f"{type(self).__name__}: padding must be an int, a tuple, 'valid' or 'same', "
                                 f"got {padding!r}")
        if padding == "same":
            if any(s != 1 for s in self.stride):
                raise ValueError(f"{type(self).__name__}: padding='same' needs stride 1, got stride={self.stride}")
            p = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                p += [total // 2, total - total // 2]
            self._p4 = tuple(p) if len(p) == 4 else (0, 0) + tuple(p)
            return "same"
        self._p4 = self._pad4_of(padding)
        return tuple(int(p) for p in padding) if isinstance(padding, (tuple, list)) else int(padding)

    @staticmethod
    def _pad4_of(padding) -> Tuple[int, int, int, int]:
        """(top, bottom, left, right) from an int, a pair or a 4-tuple."""
        return padding4(padding)

    def _spatial(self) -> str:
        return "H, W"

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.weight.data
        self._check_dtype(x, w.dtype)
        nd = 2 + len(self.kernel_size)
        single = x.ndim == nd - 1
        if single:
            x = x[None]
        if x.ndim != nd or x.shape[1] != self.in_channels:
            got = x.shape[1:] if single else x.shape
            raise ShapeError(f"{self._name()}: expected input (N, {self.in_channels}, {self._spatial()}) with "
                             f"{self.in_channels} channels, got shape {tuple(got)}")
        out, cache = self._forward(x, w, None if self.bias is None else self.bias.data)
        self._save((cache, single))
        return out[0] if single else out

    def _forward(self, x, w, b):
        if self.untied_bias is not None:
            self._check_untied(x)
        return F.conv2d_forward(x, w, b, self.stride, self._p4, self.dilation, self.groups, self.mode)

    def _check_untied(self, x: np.ndarray) -> None:
        (pt, pb, pl, pr), (kh, kw) = self._p4, (self.kernel_size if len(self.kernel_size) == 2
                                                 else (1,) + self.kernel_size)
        s, d = ((1,) * (2 - len(self.stride)) + self.stride, (1,) * (2 - len(self.dilation)) + self.dilation)
        hw = x.shape[2:] if x.ndim == 4 else (1,) + x.shape[2:]
        ho = (hw[0] + pt + pb - d[0] * (kh - 1) - 1) // s[0] + 1
        wo = (hw[1] + pl + pr - d[1] * (kw - 1) - 1) // s[1] + 1
        got = (ho, wo) if len(self.untied_bias) == 2 else (wo,)
        if got != self.untied_bias:
            raise ShapeError(f"{self._name()}: the untied bias is for outputs {self.untied_bias}, but input "
                             f"{tuple(x.shape)} gives outputs {got}")

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        cache, single = self._take()
        if single:
            dout = dout[None]
        dx, dw, db = self._backward(dout, cache)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        if dx is not None and single:
            dx = dx[0]
        return dx

    def _backward(self, dout, cache):
        return F.conv2d_backward(dout, cache, need_dx=self.needs_input_grad)

    def _name(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in (0, (0, 0), (0,)):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.mode != "cross_correlation":
            s += f", mode={self.mode!r}"
        if self.untied_bias is not None:
            s += f", untied_bias={self.untied_bias}"
        return s


class Conv1d(Conv2d):
    """1-D convolution on (N, C, L) (or (C, L)): weight (out, in/groups, k); the 2-D kernel on (N, C, 1, L).
    ``padding``: int, (left, right) or "same"; ``untied_bias=(L_out,)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 mode: str = "cross_correlation", untied_bias: Optional[Sequence[int]] = None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, mode,
                         untied_bias, dtype)

    def _tuple(self, v, name: str) -> tuple:
        t = (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(u) for u in v)
        if len(t) != 1:
            raise ValueError(f"Conv1d: {name} must be an int or a 1-tuple, got {v!r}")
        return t

    @staticmethod
    def _pad4_of(padding) -> Tuple[int, int, int, int]:
        """(0, 0, left, right) from an int, (p,) or (left, right)."""
        if isinstance(padding, (tuple, list)):
            if len(padding) == 1:
                return 0, 0, int(padding[0]), int(padding[0])
            if len(padding) == 2:
                return 0, 0, int(padding[0]), int(padding[1])
            raise ValueError(f"Conv1d: padding must be an int, (p,) or (left, right), got {padding!r}")
        return 0, 0, int(padding), int(padding)

    def _spatial(self) -> str:
        return "L"

    def _forward(self, x, w, b):
        if self.untied_bias is not None:
            self._check_untied(x)
        return F.conv1d_forward(x, w, b, self.stride, self._p4[2:], self.dilation, self.groups, self.mode)

    def _backward(self, dout, cache):
        return F.conv1d_backward(dout, cache, need_dx=self.needs_input_grad)
