"""Helpers of the hostile-file tests: a bad input must end in the project's own error, quickly and cheaply."""
from __future__ import annotations

import contextlib
import time
import tracemalloc
from typing import Callable, Iterator, Optional, Type

import pytest

from deltaprop.errors import DeltapropError
from fuzz.targets import gzip_bomb  # noqa: F401  (one home: the fuzz targets use it too)

MAX_SECONDS = 1.0
MAX_BYTES = 100 * 2 ** 20


@contextlib.contextmanager
def cheaply(what: str, seconds: float = MAX_SECONDS, nbytes: int = MAX_BYTES) -> Iterator[None]:
    """The block must end within ``seconds`` and with a peak of traced Python/NumPy allocations under
    ``nbytes`` (``what`` names it in the failure)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"{what} took {elapsed:.2f} s"
    assert peak < nbytes, f"{what} allocated {peak / 2 ** 20:.1f} MiB"


def raises_cheaply(error: Type[DeltapropError], fn: Callable[[], object], match: Optional[str] = None,
                   seconds: float = MAX_SECONDS, nbytes: int = MAX_BYTES) -> DeltapropError:
    """Call ``fn``; it must raise ``error`` (message matching ``match``) within ``seconds`` and with a
    peak of traced Python/NumPy allocations under ``nbytes``. Returns the exception."""
    with cheaply(f"reaching its {error.__name__}", seconds, nbytes):
        with pytest.raises(error, match=match) as info:
            fn()
    return info.value


# --- a command in a fresh process, timed and measured -------------------------------------------------

_MEASURED = r"""
import contextlib, io, json, os, resource, sys, time
sys.path.insert(0, {repo!r})
os.chdir({cwd!r})
{warm}
from deltaprop.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + {limit}, vm + {limit}))
out, err = io.StringIO(), io.StringIO()
t = time.perf_counter()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        rc = main({argv!r})
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rc": rc, "seconds": seconds, "mib": (peak - base) / 1024, "peak_mib": peak / 1024,
                  "out": out.getvalue(), "err": err.getvalue()}}))
"""

#: What a measured command imports (and sets up: ``deltaprop.tune()``, which the CLI calls first) before its
#: baseline is taken.
WARM = ("import numpy, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin\n"
        "import deltaprop, deltaprop.cli, deltaprop.data.detection, deltaprop.data.images, deltaprop.darknet\n"
        "deltaprop.tune()\n")


def measured(argv, cwd, limit_mib: int = 1024, warm: str = WARM, timeout: float = 120) -> dict:
    """``deltaprop ARGV`` in a fresh process, every import done first: ``{"rc", "seconds", "mib", "peak_mib",
    "out", "err"}`` where ``seconds`` is the command's own time, ``mib`` the growth of its peak resident memory
    over the warmed process and ``peak_mib`` the process's peak. The process may not grow its address space by more than ``limit_mib`` (a
    runaway allocation ends in MemoryError instead of taking the machine); ``timeout`` ends one that blocks."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = str(Path(__file__).resolve().parents[1])
    code = _MEASURED.format(repo=repo, cwd=str(cwd), warm=warm, limit=limit_mib * 2 ** 20,
                            argv=[str(a) for a in argv])
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1])


def one_line_error(res: dict, *names: str, seconds: float = 2.0, mib: float = 200.0) -> str:
    """The command of ``measured`` failed with one line of the project's error (no traceback, no "internal
    error") naming each of ``names``, within ``seconds`` and ``mib``; returns the line."""
    err = res["err"].strip().splitlines()
    assert res["rc"] == 1 and len(err) == 1, res
    line = err[0]
    assert line.startswith("deltaprop ") and ": error: " in line and "internal error" not in line, line
    for name in names:
        assert str(name) in line, (name, line)
    assert res["seconds"] < seconds, f"{res['seconds']:.2f} s: {line}"
    assert res["mib"] < mib, f"{res['mib']:.0f} MiB: {line}"
    return line
