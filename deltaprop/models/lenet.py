"""``lenet``: LeNet-5 in its modern form (ReLU, max pooling) for 1×28×28 digits."""
from __future__ import annotations

from typing import Optional

from .. import nn
from . import register


@register("lenet")
def lenet(in_channels: int = 1, num_classes: int = 10, dtype: Optional[str] = None) -> nn.Sequential:
    """conv 6@5×5 pad 2 → ReLU → maxpool 2 → conv 16@5×5 → ReLU → maxpool 2 → flatten → 120 → 84 → classes.

    Input (N, in_channels, 28, 28). The first convolution skips its input gradient (nothing needs it).
    """
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, dtype=dtype), nn.ReLU(),
        nn.Linear(120, 84, dtype=dtype), nn.ReLU(),
        nn.Linear(84, num_classes, dtype=dtype),
    )
    model[0].needs_input_grad = False
    return model
