"""``import deltaprop`` leaves the process alone (issue 18): glibc's malloc thresholds, the loaded libraries and
the environment are as they were; ``deltaprop.tune()`` (or the first use) applies the malloc tuning, after which
freed large arrays are reused instead of being faulted in again every step."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Allocates a 64 MiB array (above glibc's largest dynamic mmap threshold, 32 MiB) and reports from glibc's
# mallinfo2 how much was mmapped while it lived (``hblkhd``: all of it with glibc's defaults, none once tuned) and
# how much heap is left after it was freed (``arena``: trimmed back with the defaults, kept once tuned).
_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(k, ctypes.c_size_t) for k in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def libs():
        with open("/proc/self/maps") as f:
            return sorted({os.path.basename(l.split()[-1]) for l in f if ".so" in l.split()[-1]})

    def malloc_use():
        a = np.ones(16 << 20, np.float32)
        mmapped = libc.mallinfo2().hblkhd
        del a
        return {"mmapped_mb": mmapped / 2 ** 20, "heap_after_free_mb": libc.mallinfo2().arena / 2 ** 20}

    env0, libs0 = dict(os.environ), libs()
    if sys.argv[1] != "none":
        import deltaprop
    out = {"malloc": malloc_use(), "new_libs": sorted(set(libs()) - set(libs0)), "env_same": dict(os.environ) == env0,
           "numba_imported": "numba" in sys.modules}
    if sys.argv[1] == "tune":
        out["tune"] = deltaprop.tune()["malloc_tuned"]
        out["malloc_after_tune"] = malloc_use()
        out["env_same_after_tune"] = dict(os.environ) == env0
    print(json.dumps(out))
""")

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps and glibc are Linux's")


def _probe(mode: str, **env) -> dict:
    e = dict(os.environ)
    e.pop("DELTAPROP_MALLOC", None)
    e.update(DELTAPROP_CALIBRATE="0", **env)
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_only
def test_import_changes_neither_malloc_nor_libraries_nor_environment():
    plain, imported = _probe("none"), _probe("import")
    assert plain["malloc"]["mmapped_mb"] >= 64                 # glibc's defaults: the array is mmapped
    assert imported["malloc"]["mmapped_mb"] == plain["malloc"]["mmapped_mb"]     # and still is after the import,
    assert imported["malloc"]["heap_after_free_mb"] < 32                          # and the heap is trimmed back
    bad = [lib for lib in imported["new_libs"]
           if lib.startswith(("libgomp", "libiomp", "libomp", "libmkl", "libtbb", "libllvmlite", "omppool",
                              "tbbpool", "workqueue"))]
    assert bad == [], f"import deltaprop loaded {bad}"
    assert imported["env_same"] and not imported["numba_imported"]


@linux_only
def test_tune_keeps_freed_memory_and_starts_the_threads():
    r = _probe("tune", DELTAPROP_BLAS="numpy")
    assert r["tune"] is True
    assert r["malloc"]["mmapped_mb"] >= 64                     # before: mmapped, and given back when freed
    assert r["malloc_after_tune"]["mmapped_mb"] < 1             # after: from the heap ...
    assert r["malloc_after_tune"]["heap_after_free_mb"] >= 64   # ... which keeps it for the next step
    assert r["env_same_after_tune"]                      # OMP_WAIT_POLICY was set only while libgomp loaded


@linux_only
def test_malloc_tuning_can_be_turned_off():
    r = _probe("tune", DELTAPROP_MALLOC="0", DELTAPROP_BLAS="numpy")
    assert r["tune"] is False
    assert r["malloc_after_tune"]["mmapped_mb"] >= 64
