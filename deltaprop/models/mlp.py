"""``mlp``: the 784-256-128-10 ReLU multilayer perceptron for MNIST."""
from __future__ import annotations

from typing import Optional, Sequence

from .. import nn
from . import register


@register("mlp")
def mlp(in_features: int = 784, hidden: Sequence[int] = (256, 128), num_classes: int = 10,
        dtype: Optional[str] = None) -> nn.Sequential:
    """Flatten, then Linear + ReLU for each ``hidden`` width, then Linear to ``num_classes`` logits.
    Takes (N, 1, 28, 28) or (N, 784) inputs."""
    layers = [nn.Flatten()]
    prev = int(in_features)
    for h in hidden:
        layers += [nn.Linear(prev, int(h), dtype=dtype), nn.ReLU()]
        prev = int(h)
    layers.append(nn.Linear(prev, int(num_classes), dtype=dtype))
    model = nn.Sequential(*layers)
    # The input is data: skip its gradient (dx = δW of the first layer, a third of that layer's backward).
    model[1].needs_input_grad = False
    return model
