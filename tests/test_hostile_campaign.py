"""The fuzz campaign's harness (``python3 -m tests.fuzz``, docs/fuzzing.md): counts, the corpus of failing
inputs only, and the time cap on CPU time (an input that waits costs nothing, one that computes is cut)."""
from __future__ import annotations

import json
import time

import pytest

from fuzz import __main__ as campaign
from fuzz.targets import TARGETS


class Toy:
    """A target whose input says what to do: ``ok``, ``sleep`` (1 s of wall time, no CPU), ``spin`` (CPU
    until stopped) or ``boom`` (a Python error, a finding)."""
    name = "toy"

    def generate(self, rnd):
        return rnd.choice([b"ok", b"ok", b"sleep", b"spin", b"boom"])

    def run(self, data):
        if data == b"sleep":
            time.sleep(1.0)
        elif data == b"spin":
            t = time.process_time()
            while time.process_time() - t < 30:
                pass
        elif data == b"boom":
            raise KeyError("boom")
        return "ok"


def test_time_cap_is_cpu_time_and_corpus_holds_failures_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(TARGETS, "toy", Toy)
    kinds = [Toy().generate(__import__("random").Random(f"0/toy/{i}")) for i in range(12)]
    assert {b"sleep", b"spin", b"boom"} <= set(kinds), kinds  # the seed reaches every kind
    corpus, summary = tmp_path / "corpus", tmp_path / "summary.json"
    code = campaign.main(["--target", "toy", "--inputs", "12", "--warmup", "0", "--seconds", "0.5",
                          "--corpus", str(corpus), "--summary", str(summary)])
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res == json.loads(summary.read_text())[0]
    assert code == 1 and res["inputs"] == 12
    assert res["outcomes"] == {"ok": kinds.count(b"ok") + kinds.count(b"sleep"), "TIMEOUT": kinds.count(b"spin"),
                               "BUG:KeyError": kinds.count(b"boom")}
    assert res["findings"] == kinds.count(b"spin") + kinds.count(b"boom")
    # slept past the cap, not cut; spun until cut (the kernel samples CPU time by ticks: a little either side)
    assert res["slowest_wall_s"] >= 1.0 and 0.4 <= res["slowest_cpu_s"] < 1.0, res
    saved = sorted(p.name for p in (corpus / "toy").iterdir())
    failing = [i for i, k in enumerate(kinds) if k in (b"spin", b"boom")]
    assert sorted(int(n.split("-")[0]) for n in saved if n.endswith(".bin")) == failing
    assert not list(corpus.glob("*.json"))  # counts go to stdout and --summary, not into the corpus


def test_importing_the_campaign_leaves_the_thread_settings_alone():
    """Only the campaign run as a program pins its workers to one thread each: the test suite imports it, and
    ``NUMBA_NUM_THREADS=1`` there made numba refuse its next compilation once its two threads had started."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); before = dict(os.environ); "
            "import fuzz.__main__; assert dict(os.environ) == before, set(os.environ) ^ set(before)")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
