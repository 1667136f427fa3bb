"""The run folder of a training run: a lock held while the run writes there, and the numbering that keeps a new
run out of a folder an earlier run used.

``RunLock(folder)`` holds ``folder/.lock`` (the pid and the host): a second live run into the same folder gets a
ConfigError naming that pid before it writes anything; a lock left by a dead process is taken over. The lock is
re-entrant within a process (the command line takes it before the loop, the loop takes it again).
``run_directory(folder)`` is where a new run writes: the folder when it is missing or empty, else the first free
``folder-2``, ``folder-3``...; an earlier run's files are never replaced unless the caller says so.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Dict, Optional, Union

from ..errors import ConfigError
from .loop import Callback, Loop

PathLike = Union[str, "os.PathLike[str]"]
LOCK_NAME = ".lock"

_HELD: Dict[Path, int] = {}          # folder (resolved) -> how many holders in this process


def _lock_owner(folder: Path) -> Optional[int]:
    """The pid holding ``folder``'s lock if that process is alive (on this host), else None."""
    try:
        text = (folder / LOCK_NAME).read_text(encoding="utf-8", errors="replace").split()
        pid, host = int(text[0]), (text[1] if len(text) > 1 else "")
    except (OSError, ValueError, IndexError):
        return None
    if host and host != socket.gethostname():
        return pid  # another machine's run: cannot check, assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def occupied(folder: PathLike) -> bool:
    """Whether ``folder`` exists and holds something (a file in the way counts)."""
    folder = Path(folder)
    return folder.exists() and (not folder.is_dir() or any(folder.iterdir()))


def run_directory(out: PathLike, exist_ok: bool = False, option: str = "--out") -> Path:
    """Where a new run writes: ``out`` when it is missing or empty (or with ``exist_ok``), else the first free
    ``out-2``, ``out-3``... An earlier run's files are never overwritten unless ``exist_ok`` says so."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: exists and is not a directory")
    if exist_ok or not occupied(out):
        return out
    named = out if out.name not in ("", ".", "..") else out.resolve()    # "." -> the folder's own name
    if not named.name:
        raise ConfigError(f"{option} {out}: holds files and has no name to number; pass --exist-ok or another "
                          f"{option}")
    for k in range(2, 10_000):
        cand = named.with_name(f"{named.name}-{k}")
        if not occupied(cand):
            return cand
    raise ConfigError(f"{option} {out}: 10,000 numbered run directories exist already; pass --exist-ok or "
                      f"another {option}")


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.lock`` for the run (see the module docstring)."""

    def __init__(self, folder: PathLike, option: str = "--out") -> None:
        self.folder = Path(folder)
        self.option = option
        self.path = self.folder / LOCK_NAME
        self.held = False

    def _key(self) -> Path:
        return self.folder.resolve()

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"{self.option} {self.folder}: a file is in the way (it, or a folder above it, "
                              f"exists and is not a directory)") from None
        except OSError as e:
            raise ConfigError(f"{self.option} {self.folder}: cannot create the directory ({e.strerror or e})"
                              ) from None
        key = self._key()
        if _HELD.get(key):                       # this process holds it already: nest
            _HELD[key] += 1
            self.held = True
            return self
        text = f"{os.getpid()} {socket.gethostname()}\n".encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = _lock_owner(self.folder)
                if owner is not None:
                    raise ConfigError(f"{self.option} {self.folder}: another run (pid {owner}) is writing "
                                      f"there (lock file {self.path}); wait for it or choose another "
                                      f"{self.option}") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(text)
            _HELD[key] = 1
            self.held = True
            return self
        raise ConfigError(f"{self.option} {self.folder}: cannot take the lock file {self.path}")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = self._key()
        _HELD[key] = _HELD.get(key, 1) - 1
        if _HELD[key] <= 0:
            _HELD.pop(key, None)
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """``with RunFolder(out):`` the run lock of ``out`` (rank 0 only, under ``mpirun``) for a command's whole run;
    a folder this run created and left empty (it failed before writing) is removed again, so a refused run
    leaves nothing behind."""

    def __init__(self, out: PathLike, option: str = "--out", main: bool = True) -> None:
        self.out = Path(out)
        self.created = not self.out.exists()
        self.lock = RunLock(self.out, option)
        self.main = main

    def __enter__(self) -> "RunFolder":
        if self.main:
            self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()
        if self.created:
            try:
                self.out.rmdir()  # only when empty
            except OSError:
                pass


class FolderLock(Callback):
    """The loop's hold on its run folder: taken (rank 0) before anything is written, released when the loop
    ends, however it ends. Once held, the temporary files of atomic writes that a killed run left
    (``.NAME.XXXX.tmp``) are removed."""

    def __init__(self, folder: PathLike, option: str = "--out") -> None:
        self.lock = RunLock(folder, option)

    def on_start(self, loop: Loop) -> None:
        if loop.is_main:
            self.lock.acquire()
            for stale in self.lock.folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def on_close(self, loop: Loop) -> None:
        self.lock.release()


__all__ = ["RunLock", "RunFolder", "FolderLock", "run_directory", "occupied", "LOCK_NAME"]
