"""Mini-batches, train/validation splits and input normalisation.

Shuffling is reproducible: the order of epoch ``e`` is a permutation drawn from a generator seeded with
``(seed, e)``, so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from .. import backend
from ..errors import ShapeError

MNIST_MEAN = 0.1307  # of the training images scaled to [0, 1]
MNIST_STD = 0.3081


class DataLoader:
    """Batches ``(X[idx], y[idx])`` of ``batch_size`` rows.

    ``shuffle`` draws a new order every epoch from ``(seed, epoch)``; ``set_epoch(e)`` selects the epoch
    (the fit loop does; otherwise each full pass advances it by one). ``drop_last`` skips a short final batch.
    ``seed=None`` takes one from the global generator (``deltaprop.manual_seed`` makes it repeatable).
    """

    def __init__(self, X: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 64,
                 shuffle: bool = False, seed: Optional[int] = None, drop_last: bool = False) -> None:
        if y is not None and len(X) != len(y):
            raise ShapeError(f"DataLoader: {len(X)} inputs but {len(y)} targets")
        if batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be positive, got {batch_size}")
        self.X, self.y = X, y
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(backend.rng().integers(2 ** 31)) if seed is None else int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples per epoch (after drop_last)."""
        return len(self) * self.batch_size if self.drop_last else len(self.X)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration uses."""
        self.epoch = int(epoch)

    def order(self, epoch: Optional[int] = None) -> np.ndarray:
        """The sample order of ``epoch`` (the current one by default)."""
        n = len(self.X)
        if not self.shuffle:
            return np.arange(n)
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, e]).permutation(n)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        idx = self.order()
        self.epoch += 1
        n, bs = len(idx), self.batch_size
        stop = n - n % bs if self.drop_last else n
        contiguous = not self.shuffle
        for s in range(0, stop, bs):
            if contiguous:
                sl = slice(s, min(s + bs, n))
                yield self.X[sl], (None if self.y is None else self.y[sl])
            else:
                b = idx[s:s + bs]
                yield self.X[b], (None if self.y is None else self.y[b])


def train_val_split(X: np.ndarray, y: np.ndarray, val_fraction: float = 0.1, seed: int = 0,
                    stratify: bool = False) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Split into ((X_train, y_train), (X_val, y_val)) with ``round(val_fraction·N)`` validation rows,
    chosen by a generator seeded with ``seed`` (per class in proportion when ``stratify``)."""
    n = len(X)
    if len(y) != n:
        raise ShapeError(f"train_val_split: {n} inputs but {len(y)} targets")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    g = np.random.default_rng(seed)
    if stratify:
        classes, counts = np.unique(y, return_counts=True)
        want = val_fraction * counts
        quota = np.floor(want).astype(np.int64)
        extra = int(round(val_fraction * n)) - int(quota.sum())  # largest remainders get one more
        quota[np.argsort(-(want - quota), kind="stable")[:max(extra, 0)]] += 1
        val_idx = []
        for c, k in zip(classes, quota):
            members = np.flatnonzero(y == c)
            val_idx.append(g.permutation(members)[:k])
        val = np.sort(np.concatenate(val_idx)) if val_idx else np.array([], dtype=np.int64)
    else:
        val = np.sort(g.permutation(n)[:int(round(val_fraction * n))])
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask)
    return (X[train], y[train]), (X[val], y[val])


# --- normalisation -----------------------------------------------------------------------

def scale01(images: np.ndarray, dtype=None) -> np.ndarray:
    """uint8 pixels 0..255 -> floats in [0, 1] (float32 unless ``dtype``)."""
    dt = np.dtype(dtype or backend.get_default_dtype())
    return np.asarray(images).astype(dt) * dt.type(1.0 / 255.0)


def standardize(X: np.ndarray, mean: Optional[float] = None, std: Optional[float] = None
                ) -> Tuple[np.ndarray, float, float]:
    """(X − mean)/std with the given statistics, or X's own when None; returns (X', mean, std)."""
    if mean is None:
        mean = float(X.mean(dtype=np.float64))
    if std is None:
        std = float(X.std(dtype=np.float64)) or 1.0
    dt = X.dtype.type
    return (X - dt(mean)) * dt(1.0 / std), float(mean), float(std)


def preprocess(images: np.ndarray, spec: Optional[Dict[str, float]] = None, dtype=None,
               channels_first: bool = True) -> np.ndarray:
    """uint8 images (N, H, W) -> float (N, 1, H, W): ``(pixel·scale − mean)/std`` as ``spec`` says
    (default: MNIST's, ``{"scale": 1/255, "mean": 0.1307, "std": 0.3081}``; checkpoints store it)."""
    spec = dict(default_preprocess() if spec is None else spec)
    dt = np.dtype(dtype or backend.get_default_dtype())
    x = np.asarray(images).astype(dt) * dt.type(spec.get("scale", 1.0))
    x = (x - dt.type(spec.get("mean", 0.0))) * dt.type(1.0 / spec.get("std", 1.0))
    if channels_first and x.ndim == 3:
        x = x[:, None]
    return x


def default_preprocess() -> Dict[str, float]:
    """MNIST's normalisation: scale to [0, 1], then standardise with the training set's mean and std."""
    return {"scale": 1.0 / 255.0, "mean": MNIST_MEAN, "std": MNIST_STD}
