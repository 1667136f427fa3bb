"""Synchronised batch norm: the batch statistics of the GLOBAL batch, summed over the ranks (PyTorch's
``SyncBatchNorm`` rule), so N ranks normalise exactly as one process on the whole batch. Off by default.

Every batch-norm module (``nn.normalization.BatchNormBase``: ``BatchNorm1d``/``2d``, ``BatchNormAct2d``,
``BatchNormActPool2d``, the batch norm + activation of Darknet's layers) passes its ``allsum`` to its kernels;
``convert_sync_batchnorm`` sets it to a float64 allreduce over the communicator. The kernels do the rest, on
whichever path (NumPy, fused, numba) computes the call:

- forward (training): Σz and the count m are summed over the ranks, μ = Σz/M; then Σ(z − μ)² is summed,
  σ² = Σ(z − μ)²/M (Darknet: /(M − 1)); the running statistics move with the global μ, σ² and M
  (``functional.norm.bn_statistics``, ``functional.norm_darknet.batchnorm_darknet_forward``);
- backward: the forward's cache keeps ``allsum`` and M; Σδ and Σδ·ẑ are summed over the ranks and BN 2.1–2.3 take
  them with M (``functional.norm.bn_grad_coefs``; Darknet's ``darknet_bn_deltas``). The parameter gradients
  (BN 2.5, 2.6) stay local sums: the gradient allreduce adds them like every other gradient.

Each layer costs two small allreduces forward and one backward (2C + 1, C and 2C values). Evaluation normalises
with the running statistics and communicates nothing.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..functional.norm import AllSum
from ..nn.module import Module
from ..nn.normalization import BatchNorm2d, BatchNormBase, DarknetBatchNorm
from .comm import Communicator, world


def comm_allsum(comm: Communicator) -> AllSum:
    """The kernels' ``allsum`` over ``comm``: a float64 copy of the vector, summed over the ranks."""
    def allsum(v: np.ndarray) -> np.ndarray:
        return comm.allreduce_sum(np.array(v, dtype=np.float64))
    return allsum


def convert_sync_batchnorm(model: Module, comm: Optional[Communicator] = None) -> Module:
    """Synchronise every batch-norm module of ``model`` (each ``BatchNormBase``, fused ones and Darknet's
    included) over ``comm`` (default: ``world()``): their training statistics become the global batch's. The
    modules, their parameters, buffers and state-dict keys stay as they are; returns ``model``."""
    allsum = comm_allsum(comm or world())
    for mod in model.modules():
        if isinstance(mod, BatchNormBase):
            mod.allsum = allsum
    return model


class SyncBatchNorm(BatchNorm2d):
    """A batch norm over (N, C), (N, C, L) or (N, C, H, W) synchronised over ``world()`` from the start
    (``convert_sync_batchnorm`` synchronises the batch norms of a built model, over any communicator)."""
    _dims = (2, 3, 4)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.allsum = comm_allsum(world())


class SyncDarknetBatchNorm(DarknetBatchNorm):
    """Darknet's batch norm (either numerics) synchronised over ``world()`` from the start: μ = Σz/M, unbiased
    σ² = Σ(z − μ)²/(M − 1) in Darknet's numerics."""

    def __init__(self, channels: int, numerics: str = "darknet", dtype=None) -> None:
        super().__init__(channels, numerics, dtype)
        self.allsum = comm_allsum(world())
