"""Helpers shared by the Darknet tests (not a test module)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import deltaprop
from deltaprop import darknet

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / "tests" / "fixtures" / "darknet" / "cfg"                         # Darknet's own cfgs
REFERENCE = ROOT / "tests" / "fixtures" / "darknet" / "reference" / "tiny_cls"   # the real Darknet's step


def seeded_weights(net, seed: int = 0) -> None:
    """Plausible trained-looking parameters: He-scaled weights, small biases, positive rolling variances."""
    rs = np.random.default_rng(seed)
    for layer in net.layers:
        for name, count in layer.weight_layout(False):
            if name == "weights":
                fan_in = count // max(getattr(layer, "filters", getattr(layer, "out_features", 1)), 1)
                v = rs.standard_normal(count) * np.sqrt(2.0 / fan_in)
            elif name == "rolling_variance":
                v = rs.uniform(0.5, 1.5, count)
            elif name == "scales":
                v = rs.uniform(0.8, 1.2, count)
            else:
                v = rs.normal(0, 0.1, count)
            layer.set_darknet_array(name, v.astype(np.float32))


TINY_GRAPH_CFG = """[net]
width=6
height=6
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=4
size=1
stride=1
activation=tanh

[shortcut]
from=-2
activation=linear

[upsample]
stride=2

[route]
layers=-1,0

[convolutional]
batch_normalize=1
filters=3
size=1
stride=1
activation=logistic

[maxpool]
size=2
stride=1

[shortcut]
from=-2
activation=leaky
"""
