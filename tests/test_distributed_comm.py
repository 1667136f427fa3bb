"""The communicator's own duties (issue 30): objects travel between ranks as JSON with their arrays apart, never
pickled; a rank names itself in its messages; when ``mpirun`` is interrupted, each rank's last line still reaches
the launcher's standard error. The mpirun tests skip only where mpi4py or mpirun is missing."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mpi_missing() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e .[mpi])"
    return "" if shutil.which("mpirun") else "mpirun is not on PATH"


needs_mpi = pytest.mark.skipif(bool(_mpi_missing()), reason=_mpi_missing() or "mpi")


def mpirun_cmd(code: str, n: int = 2):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONPATH=str(ROOT))
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS",
           sys.executable, "-c", code]
    return cmd, env


def test_rank_prefix_names_the_rank_of_a_launched_process(monkeypatch):
    """``rank r of n: `` from the launcher's environment (no MPI call), empty in one process: the start of a
    message that must say which rank failed (a rank whose data folder is missing)."""
    from deltaprop.distributed.comm import rank_prefix
    for key in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                "SLURM_NTASKS", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert rank_prefix() == ""
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert rank_prefix() == "rank 3 of 4: "


_BROADCAST = r"""
import json, sys
import numpy as np
from deltaprop import nn, optim
from deltaprop.distributed import world
c = world()
m = nn.Linear(3, 2)
opt = optim.SGD(m.parameters(), lr=0.1 * (c.rank + 1), momentum=0.9)
x = np.full((4, 3), c.rank + 1.0, np.float32)
out = m(x); m.backward(np.ones_like(out)); opt.step()
obj = {"state": opt.state_dict(), "t": (1, "a", None), "ints": {1: np.float64(c.rank), (2, "b"): [np.arange(3) * c.rank]},
       "empty": np.zeros((0, 2), np.int32), "scalar": np.array(7.5 * (c.rank + 1))}
got = c.broadcast_object(obj if c.rank == 0 else {"other": c.rank}, root=0)
st = got["state"]
print(json.dumps({"rank": c.rank, "lr": st["param_groups"][0]["lr"],
                  "mom": [np.asarray(v["momentum_buffer"]).tolist() for v in st["state"].values()],
                  "t": list(got["t"]), "tuple": isinstance(got["t"], tuple), "ints": sorted(map(str, got["ints"])),
                  "arr": got["ints"][(2, "b")][0].tolist(), "empty": list(got["empty"].shape),
                  "dtype": str(got["empty"].dtype), "scalar": float(got["scalar"])}))
"""


@needs_mpi
def test_broadcast_object_is_json_and_arrays_not_pickle():
    """Rank 0's optimizer state (momentum arrays, int keys), tuples and NumPy scalars arrive whole on rank 1."""
    cmd, env = mpirun_cmd(_BROADCAST)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = sorted((json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")), key=lambda d: d["rank"])
    assert len(res) == 2
    zero, one = res
    assert one == {**zero, "rank": 1}
    assert zero["lr"] == pytest.approx(0.1) and zero["tuple"] and zero["t"] == [1, "a", None]
    assert zero["arr"] == [0, 0, 0] and zero["empty"] == [0, 2] and zero["dtype"] == "int32" and zero["scalar"] == 7.5
    assert len(zero["mom"]) == 2 and np.asarray(zero["mom"][0]).shape == (2, 3)


def test_broadcast_object_refuses_what_json_cannot_say():
    """A communicator sends JSON values, tuples, dicts and numeric arrays; an object is refused on the sending
    rank (the one-process communicator returns it as it is)."""
    from deltaprop.errors import CheckpointError
    from deltaprop.io import decode_value, encode_value
    arrays = {}
    with pytest.raises(CheckpointError, match="JSON values and numpy arrays only"):
        encode_value({"f": object()}, "o", arrays)
    with pytest.raises(CheckpointError, match="numbers only"):
        encode_value(np.array([object()]), "o", arrays)
    value = encode_value({"a": (1, np.arange(2)), 3: "x"}, "o", arrays)
    json.dumps(value)
    back = decode_value(value, arrays)
    assert back[3] == "x" and back["a"][0] == 1 and back["a"][1].tolist() == [0, 1]


_SLEEPER = r"""
import sys, time
from deltaprop.distributed import failure_guard, world
c = world()
print("ready", c.rank, flush=True)
if sys.argv[-1] == "guarded":
    with failure_guard(c):
        while True:
            c.barrier()
            time.sleep(0.05)
else:
    time.sleep(120)       # loading data, say: no guard of its own
"""


@needs_mpi
@pytest.mark.parametrize("where", ["guarded", "unguarded"])
def test_sigint_to_mpirun_leaves_a_deltaprop_line_on_stderr(where):
    """mpirun stops relaying its ranks' output when interrupted, then sends them SIGTERM: no deltaprop line
    reached stderr. Each rank now writes its line on the launcher's own standard error."""
    cmd, env = mpirun_cmd(_SLEEPER)
    p = subprocess.Popen(cmd + [where], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = 0
        deadline = time.monotonic() + 120
        while ready < 2 and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            ready += line.startswith("ready")
        assert ready == 2, p.stderr.read()[-3000:]
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    lines = [line for line in err.splitlines() if line.startswith("deltaprop: rank ")]
    assert lines, err[-3000:]
    want = "terminated (SIGTERM)"
    assert any(line.startswith(("deltaprop: rank 0 of 2: ", "deltaprop: rank 1 of 2: ")) and want in line
               for line in lines), lines
