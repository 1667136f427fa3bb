"""deltaprop._malloc: freed large arrays are reused instead of being faulted in again every step."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import deltaprop  # noqa: F401  (applies the tuning on import)
from deltaprop import _malloc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_large_temporaries_do_not_page_fault_again():
    resource = pytest.importorskip("resource")
    if not _malloc.applied:
        pytest.skip("not glibc, or DELTAPROP_MALLOC=0")
    a = np.ones(4 << 20, np.float32)   # 16 MiB, above glibc's default mmap threshold
    del a
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        a = np.ones(4 << 20, np.float32)
        del a
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5
    assert faults < 50                 # ~1000 per 16 MiB without the tuning


def test_can_be_turned_off():
    code = "import deltaprop._malloc as m; print(m.applied)"
    env = dict(os.environ, DELTAPROP_MALLOC="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
