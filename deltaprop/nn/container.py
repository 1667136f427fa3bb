"""``Sequential``: layers applied in order; backward walks them in reverse (a loop, never recursion)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Optional, Union

import numpy as np

from .module import Module


class Sequential(Module):
    """``Sequential(l1, l2, ...)`` or ``Sequential(OrderedDict(name=layer))``; keys "0", "1", ... as PyTorch."""

    def __init__(self, *layers: Union[Module, "OrderedDict[str, Module]"]) -> None:
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            for name, layer in layers[0].items():
                self.add_module(name, layer)
        else:
            for i, layer in enumerate(layers):
                if not isinstance(layer, Module):
                    raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Module")
                self.add_module(str(i), layer)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._modules.values():
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        layers = list(self._modules.values())
        for layer in reversed(layers):
            dout = layer.backward(dout)
        return dout

    def append(self, layer: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), layer)
        return self

    def __getitem__(self, idx):
        items = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*items[idx])
        return items[idx]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
