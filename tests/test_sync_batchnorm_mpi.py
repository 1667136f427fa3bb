"""``mpirun -n 2 deltaprop train --cfg mnist-tiny`` with ``DELTAPROP_SYNC_BN=1`` trains the one-process weights, in
the standard numerics (the batch norm + activation of each ``[convolutional]`` layer as one op) and in Darknet's.

Local statistics leave the saved ``.weights`` 1.7e-2 (relative) away after these four batches; synchronised,
the two runs differ by float32 rounding only (a few 1e-7; the same run with another number of BLAS threads moves
them by ~2e-6). Skips only where mpi4py or mpirun is missing, as tests/test_distributed_mpi.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distributed_worker import write_fake_mnist

HERE = Path(__file__).resolve().parent
ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _mpi_missing() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e .[mpi])"
    return "" if shutil.which("mpirun") else "mpirun is not on PATH (pip install -e .[mpi] brings Open MPI's)"


pytestmark = pytest.mark.skipif(bool(_mpi_missing()), reason=_mpi_missing() or "mpi")


NUMERICS = ("standard", "darknet")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The fake MNIST, and one ``mpirun -n 2`` (each launch costs seconds) that trains in both numerics with
    ``DELTAPROP_SYNC_BN=1`` into ``two-<numerics>/``."""
    root = tmp_path_factory.mktemp("sync_bn")
    write_fake_mnist(root / "mnist", n_train=256, n_test=64)
    env = dict(os.environ, DELTAPROP_SYNC_BN="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(HERE.parent), **{k: "1" for k in ONE_THREAD})
    cmd = ["mpirun", "-n", "2", "--oversubscribe"]
    for k in ("DELTAPROP_SYNC_BN", "PYTHONPATH") + ONE_THREAD:
        cmd += ["-x", k]
    trainings = [_train_args(n, root / "mnist", root / f"two-{n}") for n in NUMERICS]
    script = f"import sys; from deltaprop.cli import main; sys.exit(max(main(a) for a in {trainings!r}))"
    r = subprocess.run(cmd + [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root


def _train_args(numerics: str, data: Path, out: Path) -> list:
    """Four batches of 64 (mnist-tiny's batch) of the fake MNIST."""
    return ["train", "--cfg", "mnist-tiny", "--numerics", numerics, "--limit", "256", "--epochs", "1",
            "--data", str(data), "--out", str(out), "--no-progress"]


def _weights(path: Path) -> np.ndarray:
    """The floats of a ``.weights`` file (after its 20-byte header)."""
    return np.frombuffer(path.read_bytes()[20:], np.float32).astype(np.float64)


@pytest.mark.parametrize("numerics", NUMERICS)
def test_two_ranks_with_sync_bn_train_the_one_process_weights(numerics, runs, monkeypatch):
    from deltaprop.cli import main
    monkeypatch.delenv("DELTAPROP_SYNC_BN", raising=False)
    assert main(_train_args(numerics, runs / "mnist", runs / f"one-{numerics}")) == 0
    one = _weights(runs / f"one-{numerics}" / "mnist-tiny_final.weights")
    two = _weights(runs / f"two-{numerics}" / "mnist-tiny_final.weights")
    assert one.shape == two.shape
    assert np.max(np.abs(two - one)) <= 1e-4 * np.max(np.abs(one))
