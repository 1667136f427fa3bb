"""Data-parallel training under a real ``mpirun -n 2`` (deltaprop.distributed, docs/distributed.md).

Each test launches tests/distributed_worker.py with mpirun and compares with the same training run in this
process (one rank). They skip only where mpi4py or mpirun is missing (``pip install -e .[mpi]``; CI installs it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distributed_worker as worker

HERE = Path(__file__).resolve().parent


def _mpi_missing() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e .[mpi])"
    if shutil.which("mpirun") is None:
        return "mpirun is not on PATH (pip install -e .[mpi] brings Open MPI's)"
    return ""


pytestmark = pytest.mark.skipif(bool(_mpi_missing()), reason=_mpi_missing() or "mpi")


def mpirun(scenario: str, out: Path, n: int = 2, timeout: float = 150, env=None) -> subprocess.CompletedProcess:
    """``mpirun -n n python distributed_worker.py scenario out``; one BLAS thread per rank (tiny models)."""
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
             OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=str(HERE.parent),
             **(env or {}))
    cmd = ["mpirun", "-n", str(n), "--oversubscribe"]
    for k in ("DELTAPROP_DIST_TIMEOUT", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "NUMBA_NUM_THREADS", "PYTHONPATH"):
        cmd += ["-x", k]
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd + [sys.executable, str(HERE / "distributed_worker.py"), scenario, str(out)], env=e,
                          capture_output=True, text=True, timeout=timeout)


def assert_same_weights(one, two_path: Path, rtol: float, atol: float) -> None:
    two = np.load(two_path)
    ref = one.state_dict()
    assert sorted(ref) == sorted(two.files)
    for k, v in ref.items():
        np.testing.assert_allclose(two[k], v, rtol=rtol, atol=atol, err_msg=f"{two_path.name}: {k}")


@pytest.fixture(scope="module")
def equality_run(tmp_path_factory):
    """One mpirun for every equality check (each launch costs seconds)."""
    out = tmp_path_factory.mktemp("mpi_equal")
    r = mpirun("equality", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (out / "mpirun.log").write_text(r.stdout)
    return out


@pytest.fixture(autouse=True)
def _one_blas_thread():
    from deltaprop.runtime.threads import limit_blas_threads
    with limit_blas_threads(1):
        yield


@pytest.mark.parametrize("name,dtype,tol", [("mlp", "float32", (2e-5, 2e-6)), ("mlp", "float64", (0, 1e-12)),
                                            ("lenet", "float32", (2e-5, 2e-6))])
def test_two_ranks_train_the_one_process_weights(equality_run, tmp_path, name, dtype, tol):
    """50 SGD steps (momentum, weight decay, cosine schedule) on global batches of 16 split 8 + 8."""
    model = worker.train_fit(name, dtype, tmp_path)
    assert_same_weights(model, equality_run / f"{name}{dtype[-2:]}.npz", *tol)


def test_synchronised_batch_norm_matches_one_process(equality_run, tmp_path):
    """With sync_bn the statistics are the global batch's: weights and running statistics match."""
    model = worker.train_fit("bn_mlp", "float64", tmp_path, sync_bn=True)
    assert_same_weights(model, equality_run / "bn_mlp64.npz", 0, 1e-12)


def test_darknet_cfg_two_ranks_match_one_process(equality_run):
    """mnist-tiny (4 conv + Darknet batch norm, subdivisions 2) through DarknetTrainer, 50 updates."""
    net = worker.train_darknet("float64")
    assert_same_weights(net, equality_run / "darknet64.npz", 0, 1e-12)


def test_cli_two_ranks_match_one_process(equality_run, tmp_path):
    """``deltaprop train`` unchanged under mpirun: rank 0 alone writes the run; the model is one process's."""
    from deltaprop.cli import main
    worker.write_fake_mnist(tmp_path / "mnist")
    assert main(worker.CLI_ARGS + ["--data", str(tmp_path / "mnist"), "--out", str(tmp_path / "run")]) == 0
    one, two = np.load(tmp_path / "run" / "model.npz"), np.load(equality_run / "cli" / "model.npz")
    for k in one.files:
        if one[k].dtype.kind == "f":
            np.testing.assert_allclose(two[k], one[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert sorted(p.name for p in (equality_run / "cli").iterdir()) == \
        sorted(p.name for p in (tmp_path / "run").iterdir())
    assert (equality_run / "mpirun.log").read_text().count("test accuracy") == 1   # printed once


def test_resume_with_another_number_of_processes(equality_run, tmp_path):
    """2 epochs on 2 ranks, then resumed in one process to 5 epochs: the uninterrupted one-process weights."""
    resumed = worker.train_fit("mlp", "float64", equality_run, ckpt_dir=equality_run / "ckpt",
                               resume=equality_run / "ckpt" / "last.npz")
    straight = worker.train_fit("mlp", "float64", tmp_path)
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=k)


def _ends_with_checkpoint(out: Path, r: subprocess.CompletedProcess, elapsed: float, limit: float) -> None:
    from deltaprop.io import load_checkpoint
    assert r.returncode != 0
    assert elapsed < limit, f"the job took {elapsed:.0f} s to end"
    ck = load_checkpoint(out / "ckpt" / "last.npz")
    assert ck.epoch == 1                                    # epoch 1's checkpoint, whole
    assert not list((out / "ckpt").glob(".*.tmp"))


def test_an_exception_on_one_rank_ends_every_rank_with_its_message(tmp_path):
    t0 = time.monotonic()
    r = mpirun("raise", tmp_path)
    text = r.stdout + r.stderr
    assert "rank 1 of 2: RuntimeError: injected failure on rank 1 at step 15; ending every rank" in text, text[-3000:]
    _ends_with_checkpoint(tmp_path, r, time.monotonic() - t0, 120)


def test_a_killed_rank_ends_the_job(tmp_path):
    t0 = time.monotonic()
    r = mpirun("sigkill", tmp_path)
    text = r.stdout + r.stderr
    assert "rank 1" in text and ("signal 9" in text or "Killed" in text), text[-3000:]
    _ends_with_checkpoint(tmp_path, r, time.monotonic() - t0, 120)


def test_a_silent_rank_is_named_after_the_timeout(tmp_path):
    t0 = time.monotonic()
    r = mpirun("silent", tmp_path, env={"DELTAPROP_DIST_TIMEOUT": "3"})
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert "rank 0 of 2: rank 1 has not answered for 3 s: it has not reached the gradient allreduce this rank " \
           "waits in at step 3" in text, text[-3000:]
    assert time.monotonic() - t0 < 100          # rank 1 sleeps 120 s: the job did not wait for it
