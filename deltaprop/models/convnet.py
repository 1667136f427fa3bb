"""Small convolutional networks with batch norm: ``convnet`` (digits) and ``convbn`` (the 3×64×64
conv-BN-leaky benchmark network of bench/cnn.py)."""
from __future__ import annotations

from typing import List, Optional, Sequence

from .. import nn
from . import register


def _block(cin: int, cout: int, activation: str, negative_slope: float, fused: bool, fuse_pool: bool,
           dtype) -> List[nn.Module]:
    """conv 3×3 pad 1 (no bias: BN's β replaces it) → batch norm → activation → maxpool 2. ``fused``: batch norm
    and activation as one ``BatchNormAct2d``; ``fuse_pool`` too: the pooling joins it (``BatchNormActPool2d``)."""
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False, dtype=dtype)]
    if fused and fuse_pool:
        return layers + [nn.BatchNormActPool2d(cout, activation, negative_slope, dtype=dtype)]
    if fused:
        layers.append(nn.BatchNormAct2d(cout, activation, negative_slope, dtype=dtype))
    else:
        layers.append(nn.BatchNorm2d(cout, dtype=dtype))
        layers.append(nn.LeakyReLU(negative_slope) if activation == "leaky" else nn.ReLU())
    layers.append(nn.MaxPool2d(2))
    return layers


def _net(in_channels: int, num_classes: int, widths: Sequence[int], input_size: int, activation: str,
         negative_slope: float, fused: bool, dtype, fuse_pool: bool = False) -> nn.Sequential:
    if activation not in ("relu", "leaky"):
        raise ValueError(f"activation must be 'relu' or 'leaky', got {activation!r}")
    layers: List[nn.Module] = []
    cin, size = int(in_channels), int(input_size)
    for w in widths:
        layers += _block(cin, int(w), activation, negative_slope, fused, fuse_pool, dtype)
        cin, size = int(w), size // 2
    if size < 1:
        raise ValueError(f"input_size {input_size} is too small for {len(widths)} pooling stages")
    layers += [nn.Flatten(), nn.Linear(cin * size * size, int(num_classes), dtype=dtype)]
    model = nn.Sequential(*layers)
    model[0].needs_input_grad = False
    return model


@register("convnet")
def convnet(in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32), input_size: int = 28,
            activation: str = "relu", fused: bool = True, dtype: Optional[str] = None) -> nn.Sequential:
    """Per width: conv 3×3 → batch norm → ReLU → maxpool 2; then flatten → linear. For 1×28×28 digits by default."""
    return _net(in_channels, num_classes, widths, input_size, activation, 0.01, fused, dtype)


@register("convbn")
def convbn(in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64), input_size: int = 64,
           negative_slope: float = 0.1, fused: bool = True, dtype: Optional[str] = None) -> nn.Sequential:
    """The conv-BN-leaky ×3 + pools benchmark net on 3×64×64: filters 16/32/64, Darknet's leaky slope 0.1,
    then flatten (64·8·8) → linear. ``fused``: each block is conv → ``BatchNormActPool2d`` (batch norm, leaky
    ReLU and the 2×2 max pooling in one layer; the same numbers as BatchNorm2d, LeakyReLU, MaxPool2d)."""
    return _net(in_channels, num_classes, widths, input_size, "leaky", negative_slope, fused, dtype, fuse_pool=True)
