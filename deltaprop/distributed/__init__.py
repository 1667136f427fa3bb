"""Data-parallel training over MPI (docs/distributed.md).

``world()`` is this process's communicator (``MPIComm`` under ``mpirun -n N``/``srun``, else ``LocalComm``);
``DataParallel`` shards the global batches, scales and sums the gradients in buckets that overlap the
backward pass (``GradientReducer``), and ``failure_guard`` ends every rank when one fails;
``convert_sync_batchnorm`` synchronises batch-norm statistics across the ranks (off by default).
"""
from .comm import (Communicator, LocalComm, MPIComm, is_main_process, quiet_unless_main, rank_from_env, set_world,
                   world, world_size_from_env)
from .data import shard_batches, shard_bounds
from .parallel import DataParallel, broadcast_state, failure_guard
from .reducer import GradientReducer, default_bucket_bytes
from .sync_batchnorm import SyncBatchNorm, SyncDarknetBatchNorm, convert_sync_batchnorm

__all__ = ["Communicator", "LocalComm", "MPIComm", "world", "set_world", "world_size_from_env", "rank_from_env",
           "is_main_process", "quiet_unless_main", "shard_batches",
           "shard_bounds", "DataParallel", "broadcast_state", "failure_guard", "GradientReducer",
           "default_bucket_bytes", "SyncBatchNorm", "SyncDarknetBatchNorm", "convert_sync_batchnorm"]
