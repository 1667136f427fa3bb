"""The counter-hash start of the Darknet reference steps (tools/darknet_harness/step_*.c ``hash_init``), bit for bit:
every [convolutional] and [connected] parameter set from murmur3's finaliser over (layer, array, index), so a test
rebuilds the 35 MB ``init.weights`` of yolov3-tiny from nothing.

    weights = sqrt(2 / fan_in) · u,  biases = 0.1 u,  scales = 1 + 0.25 u,  rolling_mean = 0.1 u,
    rolling_variance = 1 + 0.5 u,    u = hash(layer, array, k) in [-1, 1) with 24 bits (exact in float32)
"""
from __future__ import annotations

import numpy as np

_M = np.uint32(0xFFFFFFFF)


def hash_uniform(layer: int, array: int, n: int) -> np.ndarray:
    """u(layer, array, k) for k = 0..n-1 as float32, as the C harness computes it (uint32 wrap-around)."""
    k = np.arange(n, dtype=np.uint64)
    h = (np.uint64(layer) * np.uint64(0x9E3779B1) + np.uint64(array) * np.uint64(0x7F4A7C15)
         + k * np.uint64(0x85EBCA77) + np.uint64(0x165667B1)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return ((h >> np.uint64(8)).astype(np.float32) / np.float32(16777216.0) * np.float32(2.0) - np.float32(1.0))


def fill(net) -> None:
    """Set every convolutional/connected parameter of a ``deltaprop.darknet`` network as ``hash_init`` does."""
    for i, layer in enumerate(net.layers):
        if layer.kind not in ("convolutional", "connected"):
            continue
        names = [name for name, _ in layer.weight_layout()]
        w = layer.get_darknet_array("weights")
        if layer.kind == "convolutional":
            fan = layer.size * layer.size * layer.in_shape[0] // layer.groups
        else:
            fan = w.size // len(layer.get_darknet_array("biases"))
        scale = np.float32(np.sqrt(np.float32(2.0) / np.float32(fan)))
        layer.set_darknet_array("weights", scale * hash_uniform(i, 0, w.size))
        c = layer.get_darknet_array("biases").size
        layer.set_darknet_array("biases", np.float32(0.1) * hash_uniform(i, 1, c))
        if "scales" in names:
            layer.set_darknet_array("scales", np.float32(1) + np.float32(0.25) * hash_uniform(i, 2, c))
            layer.set_darknet_array("rolling_mean", np.float32(0.1) * hash_uniform(i, 3, c))
            layer.set_darknet_array("rolling_variance", np.float32(1) + np.float32(0.5) * hash_uniform(i, 4, c))
