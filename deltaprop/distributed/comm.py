"""Communicators: who this process is (``rank`` of ``size``) and the collectives data-parallel training needs.

``LocalComm`` is the one-process communicator (needs nothing, every collective is the identity).
``MPIComm`` runs over mpi4py (Open MPI, MPICH, Slurm's ``srun``): broadcast from rank 0, allreduce (blocking
or non-blocking ``Iallreduce``), barrier. Every wait is bounded: a collective that has not completed after
``timeout`` seconds ends the whole job and names the rank that has not answered: a rank still waiting after
half a second sends the number of collectives it has reached (and its training step) to rank 0, and rank 0
to every rank, on a communicator of their own; when the time is up, a rank that never said it reached this
collective is the one behind. Collectives that complete at once send nothing. ``world()`` picks the
communicator of this process: MPI when it was launched by ``mpirun``/``mpiexec``/``srun`` with more than one
process, else ``LocalComm``.
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any, List, Optional, Sequence

import numpy as np

from ..runtime.settings import env_int
from ..errors import ConfigError

#: seconds a collective may wait for the other ranks before the job is ended (``DELTAPROP_DIST_TIMEOUT``)
DEFAULT_TIMEOUT_S = 300
_HEARTBEAT_TAG = 7107


def world_size_from_env() -> int:
    """The number of processes a launcher started, from its environment (1 when not launched by one)."""
    for key in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS"):
        raw = os.environ.get(key, "").strip()
        if raw.isdigit():
            if key == "SLURM_NTASKS" and "SLURM_STEP_ID" not in os.environ:
                continue  # inside an allocation but not inside `srun`: one process
            return int(raw)
    return 1


def rank_from_env() -> int:
    """This process's rank as its launcher set it (0 when not launched by one); MPI is not initialised."""
    if world_size_from_env() <= 1:
        return 0
    for key in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        raw = os.environ.get(key, "").strip()
        if raw.isdigit():
            return int(raw)
    return 0


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that prints and writes files."""
    return rank_from_env() == 0


def quiet_unless_main() -> None:
    """On ranks other than 0, send standard output to the null device (their errors still reach stderr),
    so a command run under ``mpirun -n N`` prints once."""
    if not is_main_process():
        sys.stdout.flush()
        sys.stdout = open(os.devnull, "w")


class Communicator:
    """The collectives of data-parallel training. ``rank`` in 0..size-1; rank 0 is the main rank."""

    rank: int = 0
    size: int = 1
    timeout: float = float(DEFAULT_TIMEOUT_S)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # collectives: arrays are reduced in place
    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Σ over the ranks of ``buf``, in place; returns ``buf``."""
        self.wait([self.iallreduce_sum(buf, buf)], "allreduce")
        return buf

    def allreduce_mean(self, buf: np.ndarray) -> np.ndarray:
        """(1/size)·Σ over the ranks of ``buf``, in place (the gradient rule of data parallelism)."""
        self.allreduce_sum(buf)
        if self.size > 1:
            buf *= buf.dtype.type(1.0 / self.size)
        return buf

    def iallreduce_sum(self, send: np.ndarray, recv: np.ndarray) -> Any:
        """Start Σ of ``send`` over the ranks into ``recv``; returns a request for ``test``/``wait``."""
        raise NotImplementedError

    def test(self, requests: Sequence[Any]) -> bool:
        """Whether every request has completed (also drives MPI's progress engine)."""
        raise NotImplementedError

    def wait(self, requests: Sequence[Any], what: str = "collective") -> None:
        """Wait for ``requests``; after ``timeout`` seconds end the job naming the rank that did not answer."""
        raise NotImplementedError

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``buf`` with rank ``root``'s values (in place); returns ``buf``."""
        return buf

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj`` (pickled) on every rank."""
        return obj

    def barrier(self) -> None:
        """Return when every rank has called it."""

    def set_step(self, step: int) -> None:
        """The training step this rank is at (named in a report of a silent rank)."""

    def abort(self, message: str, code: int = 1) -> None:
        """Print ``message`` (prefixed by the rank) and end every rank of the job with exit status ``code``."""
        print(f"deltaprop: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code)

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"


class LocalComm(Communicator):
    """One process: rank 0 of 1; every collective returns its input."""

    def iallreduce_sum(self, send: np.ndarray, recv: np.ndarray) -> Any:
        if recv is not send:
            recv[...] = send
        return None

    def test(self, requests: Sequence[Any]) -> bool:
        return True

    def wait(self, requests: Sequence[Any], what: str = "collective") -> None:
        return None


class MPIComm(Communicator):
    """Data-parallel collectives over an mpi4py communicator (``MPI.COMM_WORLD`` by default)."""

    def __init__(self, comm=None, timeout: Optional[float] = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise ConfigError(f"MPI training needs mpi4py ({e}): pip install 'deltaprop[mpi]'") from None
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(env_int("DELTAPROP_DIST_TIMEOUT", DEFAULT_TIMEOUT_S, minimum=1)
                             if timeout is None else timeout)
        self._hb = self.comm.Dup()            # heartbeats never mix with the training's collectives
        self.step = 0
        self.seq = 0                           # collectives this rank has waited for
        self.last_seen = {r: (-1, -1) for r in self._peers()}   # peer -> (seq, step)
        self._recv_bufs = {r: np.zeros(2, dtype=np.int64) for r in self._peers()}
        self._recvs = {r: self._hb.Irecv(self._recv_bufs[r], source=r, tag=_HEARTBEAT_TAG) for r in self._peers()}
        self._sends: List[Any] = []
        self._closed = False

    def _peers(self) -> List[int]:
        """Heartbeats run in a star: rank 0 hears every rank, every rank hears rank 0."""
        return list(range(1, self.size)) if self.rank == 0 else [0]

    # --- collectives ---------------------------------------------------------------------------------
    def iallreduce_sum(self, send: np.ndarray, recv: np.ndarray) -> Any:
        MPI = self.MPI
        return self.comm.Iallreduce(MPI.IN_PLACE if recv is send else send, recv, op=MPI.SUM)

    def test(self, requests: Sequence[Any]) -> bool:
        return bool(self.MPI.Request.Testall(list(requests)))

    def wait(self, requests: Sequence[Any], what: str = "collective") -> None:
        reqs = [r for r in requests if r is not None]
        if not reqs:
            return
        MPI = self.MPI
        self.seq += 1
        if MPI.Request.Testall(reqs):
            return
        start = time.monotonic()
        deadline = start + self.timeout
        beat_at = start + min(0.5, self.timeout / 4)
        spin_until = start + 2e-3               # poll freely for 2 ms (a step's allreduce ends within it),
        pause = 5e-5                            # then sleep between polls, up to 1 ms
        while not MPI.Request.Testall(reqs):
            now = time.monotonic()
            if now < spin_until:
                time.sleep(0)
                continue
            if beat_at and now > beat_at:
                self._heartbeat()               # "I have reached collective #seq"
                beat_at = 0.0
            if now > deadline:
                self._not_answered(what, now - start)
                deadline = now + min(self.timeout, 10.0)   # rank 0's report is on its way: a last grace
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        self.wait([self.comm.Ibcast(buf, root=root)], "broadcast")
        return buf

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        import pickle
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.rank == root else b""
        n = np.array([len(data)], dtype=np.int64)
        self.broadcast(n, root)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.broadcast(buf, root)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def barrier(self) -> None:
        self.wait([self.comm.Ibarrier()], "barrier")

    # --- faults ----------------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        self.step = int(step)

    def _heartbeat(self) -> None:
        self._sends = [s for s in self._sends if not s.Test()]
        msg = np.array([self.seq, self.step], dtype=np.int64)
        for r in self._peers():
            self._sends.append(self._hb.Isend(msg, dest=r, tag=_HEARTBEAT_TAG))
        self._drain()

    def _drain(self) -> None:
        """Read every heartbeat that has arrived (the latest step of each peer)."""
        for r, req in self._recvs.items():
            while req.Test():
                seen = (int(self._recv_bufs[r][0]), int(self._recv_bufs[r][1]))
                self.last_seen[r] = max(self.last_seen[r], seen)
                req = self._hb.Irecv(self._recv_bufs[r], source=r, tag=_HEARTBEAT_TAG)
                self._recvs[r] = req

    def _not_answered(self, what: str, waited: float) -> None:
        """Name the rank(s) behind this rank's step and end the job; a non-main rank that finds rank 0 up to
        date returns to wait for rank 0's report, which names the rank."""
        self._drain()
        behind = sorted(r for r, (seq, _) in self.last_seen.items() if seq < self.seq)
        if behind:
            names = " and ".join(f"rank {r}" for r in behind)
            self.abort(f"{names} has not answered for {waited:.0f} s: it has not reached the {what} this rank "
                       f"waits in at step {self.step}; ending the job (DELTAPROP_DIST_TIMEOUT={self.timeout:g} s)")
        if self.rank == 0 or getattr(self, "_graced", False):
            self.abort(f"the {what} at step {self.step} did not complete within {waited:.0f} s although every "
                       f"rank reached it; ending the job (DELTAPROP_DIST_TIMEOUT={self.timeout:g} s)")
        self._graced = True

    def abort(self, message: str, code: int = 1) -> None:
        print(f"deltaprop: rank {self.rank} of {self.size}: {message}", file=sys.stderr, flush=True)
        self.comm.Abort(code)

    def close(self) -> None:
        """Cancel the posted heartbeat receives (before MPI_Finalize)."""
        if self._closed:
            return
        self._closed = True
        for req in self._recvs.values():
            try:
                req.Cancel()
                req.Wait()
            except Exception:  # noqa: BLE001 - a request that completed meanwhile cannot be cancelled
                pass
        for s in self._sends:
            s.Wait()


_WORLD: Optional[Communicator] = None


def world() -> Communicator:
    """This process's communicator: ``MPIComm`` over ``COMM_WORLD`` when a launcher started more than one
    process (mpi4py is imported only then), else ``LocalComm``. Created once."""
    global _WORLD
    if _WORLD is None:
        n = world_size_from_env()
        if n > 1:
            try:
                import mpi4py  # noqa: F401
            except ImportError:
                raise ConfigError(f"this process was launched as one of {n} MPI processes but mpi4py is not "
                                  f"installed: pip install 'deltaprop[mpi]'") from None
            comm = MPIComm()
            atexit.register(_exit_barrier, comm)
            _WORLD = comm
        else:
            _WORLD = LocalComm()
    return _WORLD


def set_world(comm: Optional[Communicator]) -> None:
    """Replace the communicator ``world()`` returns (tests; ``None`` to detect again)."""
    global _WORLD
    _WORLD = comm


def _exit_barrier(comm: MPIComm) -> None:
    """At exit, wait (bounded) for the other ranks: a rank that leaves early after an error it reported
    ends the job instead of leaving the others waiting in a collective forever."""
    comm.barrier()
    comm.close()
