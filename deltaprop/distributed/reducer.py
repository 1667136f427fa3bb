"""Gradient buckets that travel while the backward pass is still running.

The trainable parameters are grouped, in backward order (the reverse of registration, which is the order
a ``Sequential`` or a Darknet network runs its layers backward), into a few flat buckets of at most
``bucket_bytes`` (one dtype per bucket: float32 for float32 models; a parameter larger than the cap gets a
bucket of its own). By default the cap is a quarter of the gradient, between 64 KiB and 25 MiB (PyTorch's
bucket): about four buckets for small models, 25 MiB messages for large ones. Each module that owns parameters has
its ``backward`` wrapped (an instance attribute, the way ``train.diagnose_nonfinite`` patches layers): when it
returns, that module's parameter gradients are final (update-1: a layer adds δW once per backward). When
the last parameter of a bucket is final, the bucket is copied into its flat buffer and a non-blocking
``Iallreduce`` (Σ over the ranks) starts, so the rest of the backward pass hides it. ``finish()`` waits for
every bucket and writes the sums back into ``param.grad``.

The sum is the gradient of the global batch's loss when each rank's loss gradient was scaled by its share
of the global batch (``DataParallel.backward`` does it), so uneven shards and synchronised batch norm give
exactly the one-process gradient; with equal shards it is the usual allreduce-mean.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import BackwardError
from ..nn.parameter import Parameter
from .comm import Communicator

MIN_BUCKET_BYTES, MAX_BUCKET_BYTES = 64 << 10, 25 << 20


def default_bucket_bytes(total_bytes: int) -> int:
    """A quarter of the gradient's bytes, clamped to [64 KiB, 25 MiB]."""
    return int(min(MAX_BUCKET_BYTES, max(MIN_BUCKET_BYTES, total_bytes // 4)))


class _Bucket:
    __slots__ = ("params", "offsets", "size", "dtype", "pending", "send", "recv", "request", "launched_at",
                 "index")

    def __init__(self, index: int, params: List[Parameter], dtype: np.dtype) -> None:
        self.index = index
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.size = int(self.offsets[-1])
        self.dtype = dtype
        self.pending = 0
        self.send: Optional[np.ndarray] = None
        self.recv: Optional[np.ndarray] = None
        self.request: Any = None
        self.launched_at = 0.0

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class GradientReducer:
    """Σ-allreduce of a model's parameter gradients in buckets launched during backward.

    ``overlap=False`` launches every bucket at ``finish()`` instead (the baseline the benchmark compares with).
    ``sync=False`` (``no_sync()``) lets gradients accumulate over several backward passes without sending
    (Darknet's subdivisions); the pass after it sends the accumulated sums. Per step it records
    ``stats``: the bucket sizes, the time the buckets were in flight before ``finish()``, the backward time
    left after the first bucket left (the overlap window) and the time ``finish()`` waited (the part of the
    communication the backward pass did not hide).
    """

    def __init__(self, model, comm: Communicator, bucket_bytes: Optional[int] = None,
                 overlap: bool = True) -> None:
        self.model, self.comm = model, comm
        self.overlap = bool(overlap)
        self.sync = True
        params = [p for p in model.parameters() if p.requires_grad]
        if bucket_bytes is None:
            bucket_bytes = default_bucket_bytes(sum(p.data.nbytes for p in params))
        self.bucket_cap = int(bucket_bytes)
        self.buckets: List[_Bucket] = []
        self._where: Dict[int, _Bucket] = {}
        cur: List[Parameter] = []
        for p in reversed(params):
            if cur and (p.dtype != cur[0].dtype or sum(q.data.nbytes for q in cur) + p.data.nbytes > bucket_bytes):
                self._add_bucket(cur)
                cur = []
            cur.append(p)
        if cur:
            self._add_bucket(cur)
        self._owners: List[Any] = []
        self._ready: Dict[int, bool] = {}
        self.stats: Dict[str, Any] = {}
        self._hook_modules()
        self._reset()

    def _add_bucket(self, params: List[Parameter]) -> None:
        b = _Bucket(len(self.buckets), list(params), np.dtype(params[0].dtype))
        self.buckets.append(b)
        for p in params:
            self._where[id(p)] = b

    # --- hooks ---------------------------------------------------------------------------------------
    def _hook_modules(self) -> None:
        for name, mod in self.model.named_modules():
            own = [p for p in mod._parameters.values() if p is not None and id(p) in self._where]
            if not own:
                continue
            inner = mod.backward

            def backward(dout, _inner=inner, _own=own, _name=name or "<model>"):
                dx = _inner(dout)
                self._params_final(_own, _name)
                return dx
            object.__setattr__(mod, "backward", backward)
            self._owners.append(mod)

    def remove_hooks(self) -> None:
        """Restore the modules' own ``backward``."""
        for mod in self._owners:
            mod.__dict__.pop("backward", None)
        self._owners = []

    def _params_final(self, params: List[Parameter], module_name: str) -> None:
        if not self.sync:
            return
        for p in params:
            if self._ready.get(id(p)):
                raise BackwardError(f"module '{module_name}' ran backward twice in one step (a layer used twice "
                                    f"shares its weights): build the reducer with overlap=False")
            self._ready[id(p)] = True
            self._where[id(p)].pending -= 1
        if self.overlap:
            self._launch_ready()
        self.comm.test([b.request for b in self.buckets if b.request is not None])   # drive MPI progress

    # --- one step --------------------------------------------------------------------------------------
    def _launch_ready(self) -> None:
        """Launch the complete buckets in bucket order (every rank must start its collectives in the same
        order, and a later bucket may complete first in a graph's backward)."""
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _reset(self) -> None:
        self._next = 0
        self._ready = {}
        for b in self.buckets:
            b.pending = len(b.params)
            b.request = None
            b.recv = None

    def _launch(self, b: _Bucket) -> None:
        if b.send is None:
            b.send = np.empty(b.size, dtype=b.dtype)
        for p, lo, hi in zip(b.params, b.offsets[:-1], b.offsets[1:]):
            if p.grad is None:
                b.send[lo:hi] = 0
            else:
                b.send[lo:hi] = p.grad.reshape(-1)
        b.recv = np.empty_like(b.send)
        b.launched_at = time.perf_counter()
        b.request = self.comm.iallreduce_sum(b.send, b.recv)

    def finish(self) -> None:
        """Launch what backward did not, wait for every bucket, put the sums into ``param.grad``."""
        t0 = time.perf_counter()
        early = [b for b in self.buckets if b.request is not None]
        in_flight = sum(t0 - b.launched_at for b in early)
        window = t0 - min(b.launched_at for b in early) if early else 0.0
        for b in self.buckets[self._next:]:
            self._launch(b)
        self.comm.wait([b.request for b in self.buckets], "gradient allreduce")
        waited = time.perf_counter() - t0
        for b in self.buckets:
            for p, lo, hi in zip(b.params, b.offsets[:-1], b.offsets[1:]):
                p.grad = b.recv[lo:hi].reshape(p.shape)
        self.stats = {"bucket_bytes": [b.nbytes for b in self.buckets], "launched_early": len(early),
                      "in_flight_before_finish_s": in_flight, "overlap_window_s": window, "wait_s": waited}
        self._reset()

    def no_sync(self):
        """``with reducer.no_sync(): ...backward...``: accumulate gradients without sending them."""
        return _NoSync(self)


class _NoSync:
    def __init__(self, reducer: GradientReducer) -> None:
        self.reducer = reducer

    def __enter__(self):
        self.reducer.sync = False
        return self.reducer

    def __exit__(self, *exc) -> None:
        self.reducer.sync = True
