"""Each rank's shard of every global batch.

The global batches are the one-process ones (``DataLoader.order``: a permutation drawn from ``(seed, epoch)``,
cut into ``batch_size`` rows). Rank r of N takes rows ``⌊n·r/N⌋ .. ⌊n·(r+1)/N⌋`` of each global batch of n rows:
the shards are disjoint, their union is the global batch, and only the shard's rows are read.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from ..data.loader import DataLoader


def shard_bounds(n: int, rank: int, size: int) -> Tuple[int, int]:
    """Rows [lo, hi) of a global batch of ``n`` rows that rank ``rank`` of ``size`` takes."""
    return (n * rank) // size, (n * (rank + 1)) // size


def shard_batches(loader: DataLoader, rank: int, size: int
                  ) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray], int]]:
    """``(x_shard, y_shard, n_global)`` for each global batch of ``loader``'s current epoch (advances the
    epoch as iterating the loader does)."""
    idx = loader.order()
    loader.epoch += 1
    n, bs = len(idx), loader.batch_size
    stop = n - n % bs if loader.drop_last else n
    for s in range(0, stop, bs):
        rows = idx[s:min(s + bs, n)]
        lo, hi = shard_bounds(len(rows), rank, size)
        mine = rows[lo:hi]
        if not loader.shuffle:
            mine = slice(s + lo, s + hi)       # a contiguous view, as the loader itself gives
        yield loader.X[mine], (None if loader.y is None else loader.y[mine]), len(rows)
