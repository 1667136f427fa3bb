"""Max pooling across channels (AlexeyAB's ``[maxpool] maxpool_depth=1 out_channels=G``, ``maxpool_layer.c``;
docs/equations.md §4, "Channel max pooling").

Output channel g of G, at every position, is the maximum of the input channels g, g + G, g + 2G, ... (< C):
``y[n, g, i, j] = max_k x[n, g + kG, i, j]``. The first maximum in channel order wins a tie (Darknet's strict
``>``), and only it receives the delta: ``dx[n, g + k*G, i, j] = dy[n, g, i, j]`` for the winning k, 0 for the
others (the same routing as spatial max pooling, §4).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np

from ..errors import ShapeError


class ChannelMaxCache(NamedTuple):
    """The winning input channel of every output value (N, G, H, W) and the input's shape."""
    argmax: np.ndarray
    shape: tuple


def channel_maxpool_forward(x: np.ndarray, out_channels: int) -> Tuple[np.ndarray, ChannelMaxCache]:
    """Channel max pooling (§4, Channel max pooling) of x (N, C, H, W) into ``out_channels`` channels."""
    if x.ndim != 4:
        raise ShapeError(f"channel max pooling needs (N, C, H, W) input, got shape {x.shape}")
    n, c, h, w = x.shape
    if not 1 <= out_channels <= c:
        raise ShapeError(f"channel max pooling: out_channels={out_channels} must lie in 1..{c} (the input's channels)")
    y = x[:, :out_channels].copy()
    arg = np.broadcast_to(np.arange(out_channels)[None, :, None, None], y.shape).copy()
    for k in range(out_channels, c):            # channel k competes in group k mod G, in channel order
        g = k % out_channels
        better = x[:, k] > y[:, g]              # strict: the first maximum wins a tie
        y[:, g] = np.where(better, x[:, k], y[:, g])
        arg[:, g] = np.where(better, k, arg[:, g])
    return y, ChannelMaxCache(arg, x.shape)


def channel_maxpool_backward(dy: np.ndarray, cache: ChannelMaxCache) -> np.ndarray:
    """The delta of each output value to its winning input channel (§4, Channel max pooling), 0 elsewhere."""
    dx = np.zeros(cache.shape, dtype=dy.dtype)
    ni, _, hi, wi = np.indices(dy.shape, sparse=True)
    dx[ni, cache.argmax, hi, wi] = dy           # each input value wins for at most one output value
    return dx
