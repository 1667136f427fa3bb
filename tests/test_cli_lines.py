"""The command line's last lines: a failing rank of a multi-process run names itself, and a reader that goes away
(``deltaprop info | head -1``) ends the command quietly instead of with an error about a broken pipe."""
from __future__ import annotations

import os
import subprocess
import sys


def _run(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "deltaprop", *args], env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=120, **kw)


def test_a_rank_names_itself_in_its_error_line(tmp_path):
    p = _run(["data", "check", str(tmp_path / "missing.data")],
             env={"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})
    assert p.returncode == 1
    assert p.stderr.strip() == f"deltaprop data: error: rank 1 of 2: {tmp_path / 'missing.data'}: no such data file"
    one = _run(["data", "check", str(tmp_path / "missing.data")])
    assert one.stderr.strip() == f"deltaprop data: error: {tmp_path / 'missing.data'}: no such data file"


def test_a_closed_pipe_ends_the_command_quietly():
    p = subprocess.Popen([sys.executable, "-m", "deltaprop", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()                                   # the reader goes away after one line
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "error" not in err and "Traceback" not in err
