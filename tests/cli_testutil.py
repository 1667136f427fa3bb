"""Helpers of the command-line tests (tests/test_cli_*.py): the CLI in-process or as a subprocess, a tiny
synthetic MNIST directory (no download, no ../shared), and snapshots that show whether a file changed."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from deltaprop.cli import main
from deltaprop.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]


def cli(*argv: str) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``deltaprop ARGV`` run in this process (argparse's exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def cli_subprocess(*argv: str, cwd=None, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    """``python -m deltaprop ARGV`` as a real process (its own interpreter, exit status and streams)."""
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "deltaprop", *map(str, argv)], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def write_tiny_mnist(directory: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """The four MNIST files with a learnable synthetic digit set: class k is a bright bar at row 2k."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for k in range(n):
            x[k, 2 * y[k]:2 * y[k] + 8, 4:24] = 250
        write_idx(directory / f"{split}-images-idx3-ubyte", x)
        write_idx(directory / f"{split}-labels-idx1-ubyte", y)
    return directory


def snapshot(directory: Path) -> Dict[str, Tuple[str, int, int]]:
    """{relative path: (sha1, mtime_ns, mode)} of every file under ``directory``."""
    snap = {}
    for p in sorted(Path(directory).rglob("*")):
        if p.is_file():
            st = p.stat()
            snap[str(p.relative_to(directory))] = (hashlib.sha1(p.read_bytes()).hexdigest(), st.st_mtime_ns,
                                                   st.st_mode)
    return snap


def leftovers(directory: Path) -> list:
    """Temporary files of an interrupted atomic write (``.NAME.XXXX.tmp``) under ``directory``."""
    return [str(p) for p in Path(directory).rglob(".*.tmp")]
