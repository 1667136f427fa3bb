"""``nn.Flatten``, ``nn.Dropout``, ``nn.Upsample``: weightless layers over ``functional.shape``."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from .. import backend
from ..functional import shape as F
from .module import Module


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` (default: all but the batch), as ``torch.nn.Flatten``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, cache = F.flatten_forward(x, self.start_dim, self.end_dim)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return F.flatten_backward(dout, self._take())

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Inverted dropout: in training each entry is zeroed with probability ``p`` and the rest scaled by
    1/(1 − p) (masks from ``deltaprop.manual_seed``'s generator); in eval() the identity."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._save(F.DropoutCache(None))     # the identity
            return x
        y, cache = F.dropout_forward(x, self.p, backend.rng())
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return F.dropout_backward(dout, self._take())

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Upsample(Module):
    """Nearest-neighbour upsampling by an integer ``scale_factor`` (or a pair); backward sums each block
    (Darknet's ``upsample`` layer)."""

    def __init__(self, scale_factor: Union[int, Sequence[int]] = 2, mode: str = "nearest") -> None:
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is implemented, got {mode!r}")
        F._scale_pair(scale_factor)
        self.scale_factor = (int(scale_factor) if np.isscalar(scale_factor)
                             else tuple(int(s) for s in scale_factor))
        self.mode = mode

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, cache = F.upsample_nearest_forward(x, self.scale_factor)
        self._save(cache)
        return y

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        return F.upsample_nearest_backward(dout, self._take())

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}"
