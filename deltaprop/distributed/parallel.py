"""Data parallelism for a training loop: the same model on every rank, each rank its shard of every
global batch, gradients summed over the ranks before each update.

With B rows in the global batch and b_r on rank r, the mean loss of the global batch is Σ_r (b_r/B)·C_r
(C_r the mean loss of rank r's shard). ``DataParallel.backward`` therefore scales rank r's loss gradient
by b_r/B before the backward pass, and the bucketed allreduce sums the parameter gradients: the result is
∂C/∂w of the global batch, the one-process gradient (update-1), also for uneven shards and with
synchronised batch norm. A loss with ``reduction="sum"`` (or Darknet's summed deltas) is not scaled.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any, Iterator, Optional, Tuple

import numpy as np

from ..runtime.settings import env_flag
from ..errors import ConfigError
from .comm import Communicator, LocalComm, world
from .data import shard_batches
from .reducer import GradientReducer
from .sync_batchnorm import convert_sync_batchnorm


def broadcast_state(model, optimizer=None, comm: Optional[Communicator] = None, root: int = 0) -> None:
    """Give every rank rank ``root``'s parameters, buffers and optimizer state (in place)."""
    comm = comm or world()
    if comm.size == 1:
        return
    for p in model.parameters():
        comm.broadcast(p.data, root)
    for mname, mod in model.named_modules():
        for bname in mod._buffers:
            val = mod.__dict__.get(bname)
            if isinstance(val, np.ndarray):
                if not val.flags.writeable or not val.flags.c_contiguous:
                    val = np.ascontiguousarray(val).copy()
                    object.__setattr__(mod, bname, val)
                comm.broadcast(val, root)
    if optimizer is not None:
        optimizer.load_state_dict(comm.broadcast_object(optimizer.state_dict(), root))


class DataParallel:
    """Glue between a training loop and a communicator.

    ``for x, y, n in dp.batches(loader)`` gives this rank's shard and the global batch size; ``dp.backward(
    model, loss, n_local, n_global)`` runs the backward pass with the bucketed allreduce; ``dp.totals(...)``
    sums epoch counters over the ranks. ``sync_bn=True`` (or ``DELTAPROP_SYNC_BN=1``, for the command
    line) synchronises the batch-norm statistics.
    """

    def __init__(self, model, comm: Optional[Communicator] = None, *, sync_bn: bool = False,
                 bucket_bytes: Optional[int] = None, overlap: bool = True) -> None:
        self.comm = comm or world()
        self.model = model
        self.step = 0
        self.sync_bn = bool(sync_bn) or env_flag("DELTAPROP_SYNC_BN", False)
        self.reducer: Optional[GradientReducer] = None
        if self.comm.size > 1:
            if self.sync_bn:
                convert_sync_batchnorm(model, self.comm)
            self.reducer = GradientReducer(model, self.comm, bucket_bytes=bucket_bytes, overlap=overlap)

    @property
    def active(self) -> bool:
        return self.comm.size > 1

    @property
    def is_main(self) -> bool:
        return self.comm.is_main

    def batches(self, loader) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray], int]]:
        """This rank's shard of each global batch of ``loader``, with the global batch's size."""
        if not self.active:
            for x, y in loader:
                yield x, y, len(x)
            return
        for x, y, n in shard_batches(loader, self.comm.rank, self.comm.size):
            if self.sync_bn and n < self.comm.size:
                raise ConfigError(f"a batch of {n} rows cannot be shared by {self.comm.size} ranks with "
                                  f"synchronised batch norm (every rank needs rows): use drop_last, or a data "
                                  f"set whose size leaves a last batch of at least {self.comm.size} rows")
            self.step += 1
            self.comm.set_step(self.step)
            yield x, y, n

    def backward(self, model, dout: Optional[np.ndarray], n_local: int, n_global: int,
                 scale: bool = True) -> None:
        """``model.backward(dout·b_r/B)`` (unscaled when ``scale`` is False), then the gradient sum over the
        ranks. A rank with an empty shard (``dout`` None) contributes zeros."""
        if not self.active:
            if dout is not None:
                model.backward(dout)
            return
        if dout is not None:
            if scale and n_local != n_global:
                dout = dout * dout.dtype.type(n_local / n_global)
            model.backward(dout)
        self.reducer.finish()

    def totals(self, *values: float) -> Tuple[float, ...]:
        """Σ over the ranks of each value (epoch counters: samples, loss sums, correct predictions)."""
        if not self.active:
            return tuple(values)
        return tuple(float(v) for v in self.comm.allreduce_sum(np.array(values, dtype=np.float64)))

    def broadcast_state(self, optimizer=None) -> None:
        broadcast_state(self.model, optimizer, self.comm)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Within the block, an exception or SIGTERM on this rank ends every rank with this rank's error."""
        with failure_guard(self.comm):
            yield


@contextlib.contextmanager
def failure_guard(comm: Optional[Communicator] = None) -> Iterator[None]:
    """When several ranks run, an exception (or SIGTERM, or Ctrl-C) escaping the block is printed with this
    rank's number and ends the whole job (``MPI_Abort``): no rank is left waiting in a collective."""
    comm = comm or world()
    if comm.size == 1 or isinstance(comm, LocalComm):
        yield
        return
    previous = _on_sigterm()
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - every failure must end the other ranks
        if isinstance(e, SystemExit) and not e.code:
            raise
        comm.abort(f"{describe_failure(e)}; ending every rank", code=_exit_code(e))
        raise
    finally:
        _restore_sigterm(previous)


class Terminated(Exception):
    """This rank received SIGTERM."""


def describe_failure(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(e, Terminated):
        return "terminated (SIGTERM)"
    from ..errors import DeltapropError
    if isinstance(e, DeltapropError):
        return f"error: {e}"
    return f"{type(e).__name__}: {e}"


def _exit_code(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, Terminated):
        return 143
    if isinstance(e, SystemExit) and isinstance(e.code, int):
        return e.code
    return 1


def _on_sigterm() -> Any:
    if sys.platform == "win32":  # pragma: no cover
        return None
    try:
        def raise_terminated(signum, frame):
            raise Terminated("SIGTERM")
        return signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread: leave the signal alone
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)

