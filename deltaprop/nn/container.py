"""``Sequential``: layers applied in order; backward walks them in reverse (a loop, never recursion)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Optional, Union

import numpy as np

from .. import backend
from ..errors import BackwardError
from . import eval_program
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
        if not self.training and not backend.is_grad_enabled() and eval_program.plannable(self, x):
            return eval_program.planned_forward(self, x)     # inference: docs/inference.md
        if self.keeps_cache:
            eval_program.refold(self)                        # the weights may change after this forward
        for layer in self._modules.values():
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        layers = list(self._modules.items())
        for i in range(len(layers) - 1, -1, -1):
            dout = layers[i][1].backward(dout)
            if dout is None and i > 0:
                # a layer with needs_input_grad=False (e.g. the first Linear after a Flatten): the layers
                # before it get no gradient, which is only right if none of them has a trainable parameter
                for name, earlier in layers[:i]:
                    if any(p.requires_grad for p in earlier.parameters()):
                        raise BackwardError(f"Sequential: layer {layers[i][0]!r} returned no input gradient "
                                            f"(needs_input_grad=False) but layer {name!r} before it has "
                                            f"trainable parameters")
                for _, earlier in layers[:i]:
                    object.__setattr__(earlier, "_cache", None)
                break
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
