"""The calibration caches: what was measured on this machine, kept in JSON files under ``settings.cache_dir()``
(``blas.json``, ``direct_conv.json``, ...), each entry under a key of what the measurement depends on.

A key holds the CPU model and usable cores, NumPy and its BLAS, the MKL library found (path, size, modification
time), numba's version and the OpenMP/BLAS environment (``machine_key``), plus what its user adds (the library in
use, the kernels' version): another machine, core count or library set measures again. An unreadable or corrupt
file reads as empty and is rewritten whole (atomically) on the next measurement; an unwritable one only costs a
measurement per process."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np

from . import machine, settings
from ..atomic import atomic_writer

SCHEMA = 1


def path(name: str) -> Path:
    """The cache file ``name`` (``"blas.json"``) in ``$DELTAPROP_CACHE_DIR`` or ``$XDG_CACHE_HOME/deltaprop``."""
    return settings.cache_dir() / name


def machine_key() -> Dict[str, object]:
    """What a measurement depends on: CPU model and usable cores, NumPy and its BLAS, the MKL library found
    (path, size, modification time), numba, and the variables that change the libraries' threads."""
    mkl = []
    for p in machine.mkl_candidates():
        try:
            st = os.stat(p)
            mkl.append(f"{os.path.realpath(p)}:{st.st_size}:{int(st.st_mtime)}")
        except OSError:
            continue
    return {"schema": SCHEMA, "cpu": machine.cpu_model(), "cores": machine.usable_cores(), "numpy": np.__version__,
            "numpy_blas": machine.numpy_blas(), "mkl": sorted(set(mkl)), "numba": machine.numba_version(),
            "omp_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")}}


def key_id(key: Dict[str, object]) -> str:
    """A short, stable name of ``key`` (the entry's name in the file)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read(file: Path, field: str, allowed: Iterable[Any]) -> Dict[str, dict]:
    """The file's entries whose ``field`` is one of ``allowed``, or {} when the file is missing, unreadable or not
    what this module writes."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
        return {}
    allowed = list(allowed)
    return {k: v for k, v in data["entries"].items() if isinstance(v, dict) and v.get(field) in allowed}


def lookup(file: Path, key: Dict[str, object], field: str, allowed: Iterable[Any]) -> Optional[Dict[str, object]]:
    """The cached entry of ``key`` as its user reports it (``cached`` True, ``cache`` the file), or None."""
    hit = read(file, field, allowed).get(key_id(key))
    return None if hit is None else dict(hit, cached=True, cache=str(file))


def store(file: Path, key: Dict[str, object], entry: Dict[str, object], field: str, allowed: Iterable[Any],
          t0: float) -> Dict[str, object]:
    """Add a fresh measurement (stamped with its key, its duration since ``t0`` and the date) to the file's valid
    entries, write the file atomically, and return the entry as its user reports it (``cached`` False; a
    ``cache_error`` when the file could not be written)."""
    entry = dict(entry, key=key, calibration_s=round(time.perf_counter() - t0, 3),
                 date=time.strftime("%Y-%m-%dT%H:%M:%S"))
    entries = read(file, field, allowed)
    entries[key_id(key)] = entry
    out = dict(entry, cached=False, cache=str(file))
    try:
        with atomic_writer(file, "w") as f:
            json.dump({"schema": SCHEMA, "entries": entries}, f, indent=1, sort_keys=True)
    except OSError as exc:
        out["cache_error"] = f"{file}: {exc.strerror or exc}"
    return out


def remove(file: Path) -> bool:
    """Delete the cache file; True when there was one."""
    try:
        file.unlink()
        return True
    except FileNotFoundError:
        return False
