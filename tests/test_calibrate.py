"""deltaprop.runtime.calibrate: ``DELTAPROP_BLAS=auto`` is measured by ``tune()`` only (never by a first product),
once per machine; the choice is cached atomically under the cache folder, measured again for another machine or
library set, and a corrupt cache file is survived. Tunables registered by other code run through ``tune()``."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import need_mkl
from deltaprop.runtime import blas, cache, calibrate, machine, tunables


@pytest.fixture
def restore_backend(monkeypatch):
    """Undo the test's patches, then put back the library in use before it and its record."""
    was, record = blas.backend(), blas.choice()
    yield
    monkeypatch.undo()
    blas.choose(dict(record, choice=was))


@pytest.fixture
def calib(monkeypatch, tmp_path, restore_backend):
    """A private cache folder (through XDG_CACHE_HOME), calibration on, MKL 'installed', a fake measurement that
    counts its calls."""
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(machine, "mkl_candidates", lambda: [str(tmp_path / "libmkl_rt.so.2")])
    calls = []

    def fake_measure():
        calls.append(1)
        return dict(fake_measure.seconds)
    fake_measure.seconds = {"numpy": 1.0, "mkl": 0.5}
    monkeypatch.setattr(calibrate, "measure", fake_measure)
    monkeypatch.setattr(blas, "use", lambda name: name)        # the fake 'MKL' is never loaded
    monkeypatch.setattr(tunables, "_registered", {})           # the direct loops' tunable: tests of their own
    return tmp_path / "deltaprop" / "blas.json", calls, fake_measure


def test_measures_once_then_reads_the_cache(calib):
    path, calls, _ = calib
    first = calibrate.choose_blas()
    assert first["choice"] == "mkl" and not first["cached"] and calls == [1]
    assert "MKL 500.00 ms vs NumPy's BLAS 1000.00 ms" in first["reason"]
    stored = json.loads(path.read_text())
    assert [e["choice"] for e in stored["entries"].values()] == ["mkl"]
    second = calibrate.choose_blas()
    assert second["choice"] == "mkl" and second["cached"] and calls == [1]


def test_a_first_product_never_measures(calib):
    """Without ``tune()``, ``auto`` takes the cached choice, else NumPy's BLAS, marked uncalibrated; ``tune()``
    then measures and puts the measured choice in use."""
    path, calls, _ = calib
    assert blas.set_backend("auto") == "numpy" and calls == [] and not path.exists()
    assert blas.choice()["uncalibrated"] and "not measured on this machine yet" in blas.choice()["reason"]
    assert calibrate.choose_blas(measure_now=False)["uncalibrated"] and calls == []
    out = calibrate.tune()
    assert calls == [1] and blas.choice()["choice"] == "mkl" and not blas.choice()["cached"]
    assert out["choice"]["choice"] == "mkl" and calibrate.last()["choice"] == out["choice"]
    calibrate.tune()
    assert calls == [1]                                       # chosen in this process: kept
    assert blas.set_backend("auto") == "mkl" and blas.choice()["cached"] and calls == [1]   # a later first use


def test_mkl_must_win_by_the_margin(calib):
    _, _, fake = calib
    fake.seconds = {"numpy": 1.0, "mkl": 1.0 - calibrate.MARGIN / 2}
    assert calibrate.choose_blas()["choice"] == "numpy"


def test_another_machine_measures_again_and_both_are_kept(calib, monkeypatch):
    path, calls, fake = calib
    calibrate.choose_blas()
    monkeypatch.setattr(machine, "cpu_model", lambda: "Another CPU 9000")
    fake.seconds = {"numpy": 1.0, "mkl": 3.0}
    other = calibrate.choose_blas()
    assert other["choice"] == "numpy" and not other["cached"] and calls == [1, 1]
    assert other["key"]["cpu"] == "Another CPU 9000"
    assert sorted(e["choice"] for e in json.loads(path.read_text())["entries"].values()) == ["mkl", "numpy"]


@pytest.mark.parametrize("content", [b"{not json", b"\\xff\\xfe", b'{"schema": 1, "entries": {"k": 3}}', b"[]"])
def test_a_corrupt_cache_is_ignored_and_rewritten(calib, content):
    path, calls, _ = calib
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert calibrate.choose_blas()["choice"] == "mkl" and calls == [1]
    assert json.loads(path.read_text())["schema"] == cache.SCHEMA


def test_an_unwritable_cache_still_chooses(calib, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DELTAPROP_CACHE_DIR", str(blocker / "sub"))   # a folder under a file: cannot exist
    out = calibrate.choose_blas()
    assert out["choice"] == "mkl" and "cache_error" in out


def test_bypass_and_absent_mkl_measure_nothing(calib, monkeypatch):
    path, calls, _ = calib
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "0")
    assert calibrate.choose_blas()["choice"] == "numpy"
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(machine, "mkl_candidates", lambda: [])
    assert "not installed" in calibrate.choose_blas()["reason"]
    assert calls == [] and not path.exists()


def test_tunables_run_through_tune_and_forget(calib, monkeypatch):
    """A registered tunable is asked without measuring by its user (``tunables.choose``), with measuring by
    ``tune()``; ``forget`` removes the BLAS cache and calls every tunable's ``forget``."""
    path, calls, _ = calib
    asked, forgotten = [], []

    def choose(measure):
        asked.append(measure)
        return {"reason": "test", "measured": measure}
    calibrate.register_tunable("toy", choose, lambda: forgotten.append(1) or True)
    assert tunables.choose("toy") == {"reason": "test", "measured": False} and asked == [False]
    assert tunables.choose("no-such") is None
    blas.set_backend("auto")                                  # unmeasured: tune() measures
    out = calibrate.tune()
    assert asked == [False, True] and out["tunables"]["toy"]["measured"] is True
    assert path.exists() and calibrate.forget() and not path.exists() and forgotten == [1]


def test_the_real_measurement_is_short(restore_backend):
    """Both libraries through the engine's products and kernels (MKL is part of the fast extra)."""
    if not machine.mkl_candidates():
        need_mkl("libmkl_rt not found")
    seconds = calibrate.measure(rounds=2, budget_s=0.05)
    assert set(seconds) == {"numpy", "mkl"} and all(0 < v < 1.0 for v in seconds.values())


def test_importing_and_a_first_product_measure_nothing(tmp_path):
    """In a fresh process with calibration on and an empty cache: ``import deltaprop``, a product and a
    convolution write no cache file and leave both choices unmeasured; ``deltaprop.tune()`` then measures."""
    code = textwrap.dedent("""
        import json, os, numpy as np
        import deltaprop as dp
        from deltaprop.functional import conv
        from deltaprop.runtime import blas
        x = np.ones((1, 3, 70, 70), np.float32); w = np.ones((4, 3, 3, 3), np.float32)
        blas.matmul(np.ones((64, 64), np.float32), np.ones((64, 64), np.float32))
        conv.conv2d_forward(x, w, None, 1, 1, keep_cols=False)
        before = sorted(os.listdir(os.environ["DELTAPROP_CACHE_DIR"])) if os.path.isdir(
            os.environ["DELTAPROP_CACHE_DIR"]) else []
        first = blas.choice()
        out = dp.tune()
        print(json.dumps({"before": before, "first": first, "after": sorted(os.listdir(os.environ["DELTAPROP_CACHE_DIR"])),
                          "direct": out["tunables"]["direct_conv"]}))
    """)
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAPROP_")}
    env.update(DELTAPROP_CACHE_DIR=str(tmp_path / "cache"), DELTAPROP_CALIBRATE="1", DELTAPROP_BLAS="auto")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["before"] == []
    assert out["first"]["choice"] == "numpy"
    if machine.mkl_candidates():
        assert out["first"]["uncalibrated"] and "blas.json" in out["after"]
    if "numba is off" not in out["direct"]["reason"]:
        assert "direct_conv.json" in out["after"] and "measured with" in out["direct"]["reason"]
