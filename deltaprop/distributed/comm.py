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

Objects (an optimizer's state) travel as JSON with their arrays sent apart (``io.encode_value``), never pickled:
a rank unpickles nothing. When ``mpirun`` is interrupted (Ctrl-C) it stops relaying its ranks' output at once,
then sends them SIGCONT and SIGTERM: a rank's last words would be lost. ``MPIComm`` therefore keeps a handle on
the launcher's own standard error (Linux: ``/proc/<launcher>/fd/2``, when the parent process is the launcher)
and writes a termination's line there too (``abort`` with status 130 or 143, and SIGTERM outside a guarded
block). ``rank_prefix()`` is the ``rank r of n: `` that names a rank in any message of a multi-process run.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

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


def rank_prefix() -> str:
    """``"rank r of n: "`` in a run of several processes (from the launcher's environment, MPI not touched),
    ``""`` in one process: the start of an error message that must say which rank failed."""
    n = world_size_from_env()
    return f"rank {rank_from_env()} of {n}: " if n > 1 else ""


#: Names of launcher processes whose standard error a rank may write to when the launcher stops relaying.
LAUNCHERS = ("mpirun", "mpiexec", "prterun", "orterun", "prted", "orted", "hydra_pmi_proxy", "mpiexec.hydra")


def launcher_stderr() -> Optional[int]:
    """A file descriptor on the launcher's standard error (Linux), when this process's parent is the launcher
    (:data:`LAUNCHERS`); else None."""
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/comm", encoding="utf-8") as f:
            name = f.read().strip()
        if name not in LAUNCHERS:
            return None
        return os.open(f"/proc/{ppid}/fd/2", os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


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
        """Rank ``root``'s ``obj`` on every rank: JSON values, tuples, dicts and NumPy arrays
        (``io.encode_value``; never pickled)."""
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
        self._launcher_fd = launcher_stderr()

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
        from ..io import decode_value, encode_value
        arrays: Dict[str, np.ndarray] = {}
        if self.rank == root:
            value = encode_value(obj, "o", arrays)
            head = json.dumps({"value": value, "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()]})
        data = self._broadcast_bytes(head.encode("utf-8") if self.rank == root else b"", root)
        if self.rank != root:
            doc = json.loads(data.decode("utf-8"))
            value = doc["value"]
            for key, dtype, shape in doc["arrays"]:
                if np.dtype(dtype).kind not in "biufc":
                    raise ConfigError(f"rank {root} sent an array of dtype {dtype} (numbers only)")
                arrays[key] = np.empty(shape, dtype=dtype)
        for key in sorted(arrays):
            buf = arrays[key] if self.rank != root else np.ascontiguousarray(arrays[key])
            self.broadcast(buf.reshape(-1).view(np.uint8), root)
            arrays[key] = buf
        return obj if self.rank == root else decode_value(value, arrays)

    def _broadcast_bytes(self, data: bytes, root: int) -> bytes:
        n = np.array([len(data)], dtype=np.int64)
        self.broadcast(n, root)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        self.broadcast(buf, root)
        return buf.tobytes()

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
        line = f"deltaprop: rank {self.rank} of {self.size}: {message}"
        print(line, file=sys.stderr, flush=True)
        if code in (130, 143):          # interrupted or terminated: mpirun may no longer relay this rank's stderr
            self.tell_launcher(line)
        self.comm.Abort(code)

    def tell_launcher(self, line: str) -> bool:
        """Write ``line`` on the launcher's own standard error (see the module docstring); False when there is
        no such handle."""
        if self._launcher_fd is None:
            return False
        try:
            os.write(self._launcher_fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
            return True
        except OSError:
            return False

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
            _on_sigterm_outside_guards(comm)
            _WORLD = comm
        else:
            _WORLD = LocalComm()
    return _WORLD


def set_world(comm: Optional[Communicator]) -> None:
    """Replace the communicator ``world()`` returns (tests; ``None`` to detect again)."""
    global _WORLD
    _WORLD = comm


def _on_sigterm_outside_guards(comm: MPIComm) -> None:
    """Where no ``failure_guard`` has its own handler (loading data, writing files), SIGTERM from the launcher
    ends this rank with a line on the launcher's standard error (and status 143), not in silence."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return                              # the host program has its own handler
    def terminated(signum, frame):
        line = f"deltaprop: rank {comm.rank} of {comm.size}: terminated (SIGTERM): the launcher is ending the job"
        if not comm.tell_launcher(line):
            print(line, file=sys.stderr, flush=True)
        os._exit(143)                       # the launcher kills the job: no barrier or MPI call to wait in
    try:
        signal.signal(signal.SIGTERM, terminated)
    except ValueError:                      # not the main thread: leave the signal alone
        pass


def _exit_barrier(comm: MPIComm) -> None:
    """At exit, wait (bounded) for the other ranks: a rank that leaves early after an error it reported
    ends the job instead of leaving the others waiting in a collective forever."""
    comm.barrier()
    comm.close()
