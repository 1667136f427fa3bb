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


#: A small classifier holding every kind of weights a .weights file has, in Darknet's order: a conv with batch
#: norm, a conv with biases, a connected layer with biases, a connected layer with batch norm (input 4×4×2).
CLS_CFG = """[net]
width=4
height=4
channels=2

[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
activation=leaky

[convolutional]
filters=2
size=1
activation=linear

[maxpool]
size=2
stride=2

[connected]
output=5
activation=relu

[connected]
batch_normalize=1
output=4
activation=linear

[softmax]
"""
#: .weights header versions (major, minor, revision): ``seen`` as int64 (0.2 and later) or int32, connected
#: weights transposed (major or minor ≥ 1000).
WEIGHTS_VERSIONS = [(0, 1, 0), (0, 2, 0), (1, 0, 0), (0, 1001, 3), (2000, 0, 0)]


def small_net(seed: int = 0, cfg: str = CLS_CFG):
    """``cfg`` (the small classifier by default) built with ``seeded_weights(seed)``."""
    net = darknet.load_cfg_text(cfg)
    seeded_weights(net, seed)
    return net


def weights_bytes(version=(0, 2, 0), seed: int = 0, seen: int = 77, cfg: str = CLS_CFG) -> bytes:
    """The .weights file of ``small_net(seed, cfg)`` after ``seen`` images, with the header ``version``."""
    net = small_net(seed, cfg)
    net.seen = seen
    return darknet.weights_to_bytes(net, version=version)


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


def read_cost_file(path) -> dict:
    """A reference step's ``cost.txt``: {layer index: cost, "net_cost": …, "reported_loss": …}."""
    out = {}
    for line in Path(path).read_text().splitlines():
        w = line.split()
        if w[0] == "layer":
            out[int(w[1])] = float(w[4])
        elif w[0] in ("net_cost", "reported_loss"):
            out[w[0]] = float(w[1])
    return out


def yolo_section(mask, anchors: str, classes: int = 2, **keys) -> str:
    """A ``[yolo]`` cfg section (all ``num`` anchors given as cfg text), extra keys as ``key=value`` lines."""
    num = len(anchors.split(",")) // 2
    lines = [f"mask={','.join(str(m) for m in mask)}", f"anchors={anchors}", f"classes={classes}", f"num={num}"]
    lines += [f"{k}={v}" for k, v in keys.items()]
    return "[yolo]\n" + "\n".join(lines) + "\n"
