"""What this machine is, read without changing anything: the CPU, the usable cores, NumPy's BLAS as built, the
shared libraries mapped into the process, where ``libmkl_rt`` is installed, and numba's version. The calibration
cache keys and ``deltaprop info`` are made of these."""
from __future__ import annotations

import ctypes.util
import functools
import os
import platform
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from . import settings


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def cpu_vendor() -> str:
    """'intel', 'amd' or 'other' (from /proc/cpuinfo, else the platform string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return "intel" if v == "GenuineIntel" else "amd" if v == "AuthenticAMD" else "other"
    except OSError:
        pass
    p = platform.processor().lower()
    return "intel" if "intel" in p else "amd" if "amd" in p else "other"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask; the CPU count where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def numpy_blas() -> str:
    """NumPy's BLAS as its build records it (name and version), without loading anything."""
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        b = deps.get("blas", {})
        return f"{b.get('name', '?')} {b.get('version', '?')}"
    except Exception:  # noqa: BLE001 - older NumPy: its version names its bundled BLAS
        return "numpy " + np.__version__


def numba_version() -> str:
    """numba's installed version, "off" under ``DELTAPROP_NUMBA=0``, "absent" when not installed (not imported)."""
    if not settings.get("DELTAPROP_NUMBA"):
        return "off"
    try:
        from importlib.metadata import version
        return version("numba")
    except Exception:  # noqa: BLE001 - not installed
        return "absent"


def loaded_library_paths() -> List[str]:
    """Paths of the shared libraries mapped into this process, in the order they were mapped, each once (Linux
    ``/proc/self/maps``; empty elsewhere)."""
    out: Dict[str, None] = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and ".so" in parts[-1]:
                    out[parts[-1]] = None
    except OSError:
        pass
    return list(out)


def mkl_candidates() -> List[str]:
    """Places where pip, conda or the system put ``libmkl_rt`` (existing files, most specific first)."""
    names = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "mkl_rt.2.dll", "mkl_rt.dll", "libmkl_rt.dylib"]
    dirs = []
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, sys.exec_prefix]):
        dirs += [Path(prefix) / "lib", Path(prefix) / "Library" / "bin"]
    try:
        import site
        dirs.append(Path(site.getuserbase()) / "lib")
    except Exception:  # pragma: no cover - site can be unusual in embedded interpreters
        pass
    out = [str(d / n) for d in dirs for n in names if (d / n).exists()]
    found = ctypes.util.find_library("mkl_rt")
    if found:
        out.append(found)
    return out
