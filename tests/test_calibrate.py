"""deltaprop.calibrate: ``DELTAPROP_BLAS=auto`` measures once per machine, caches the choice atomically under
the cache folder, measures again for another machine or library set, and survives a corrupt cache file."""
from __future__ import annotations

import json

import pytest

from conftest import need_mkl
from deltaprop.runtime import blas
from deltaprop.runtime import calibrate


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A private cache folder (through XDG_CACHE_HOME), calibration on, MKL 'installed', a fake measurement that
    counts its calls."""
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(blas, "_candidates", lambda: [str(tmp_path / "libmkl_rt.so.2")])
    calls = []

    def fake_measure():
        calls.append(1)
        return dict(fake_measure.seconds)
    fake_measure.seconds = {"numpy": 1.0, "mkl": 0.5}
    monkeypatch.setattr(calibrate, "measure", fake_measure)
    return tmp_path / "deltaprop" / "blas.json", calls, fake_measure


def test_measures_once_then_reads_the_cache(cache):
    path, calls, _ = cache
    first = calibrate.choose()
    assert first["choice"] == "mkl" and not first["cached"] and calls == [1]
    assert "MKL 500.00 ms vs NumPy's BLAS 1000.00 ms" in first["reason"]
    stored = json.loads(path.read_text())
    assert [e["choice"] for e in stored["entries"].values()] == ["mkl"]
    second = calibrate.choose()
    assert second["choice"] == "mkl" and second["cached"] and calls == [1]


def test_mkl_must_win_by_the_margin(cache):
    _, _, fake = cache
    fake.seconds = {"numpy": 1.0, "mkl": 1.0 - calibrate.MARGIN / 2}
    assert calibrate.choose()["choice"] == "numpy"


def test_another_machine_measures_again_and_both_are_kept(cache, monkeypatch):
    path, calls, fake = cache
    calibrate.choose()
    monkeypatch.setattr(calibrate, "cpu_model", lambda: "Another CPU 9000")
    fake.seconds = {"numpy": 1.0, "mkl": 3.0}
    other = calibrate.choose()
    assert other["choice"] == "numpy" and not other["cached"] and calls == [1, 1]
    assert other["key"]["cpu"] == "Another CPU 9000"
    assert sorted(e["choice"] for e in json.loads(path.read_text())["entries"].values()) == ["mkl", "numpy"]


@pytest.mark.parametrize("content", [b"{not json", b"\\xff\\xfe", b'{"schema": 1, "entries": {"k": 3}}', b"[]"])
def test_a_corrupt_cache_is_ignored_and_rewritten(cache, content):
    path, calls, _ = cache
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert calibrate.choose()["choice"] == "mkl" and calls == [1]
    assert json.loads(path.read_text())["schema"] == calibrate.SCHEMA


def test_an_unwritable_cache_still_chooses(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("DELTAPROP_CACHE_DIR", str(blocker / "sub"))   # a folder under a file: cannot exist
    out = calibrate.choose()
    assert out["choice"] == "mkl" and "cache_error" in out


def test_bypass_and_absent_mkl_measure_nothing(cache, monkeypatch):
    path, calls, _ = cache
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "0")
    assert calibrate.choose()["choice"] == "numpy"
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(blas, "_candidates", lambda: [])
    assert "not installed" in calibrate.choose()["reason"]
    assert calls == [] and not path.exists()


def test_the_real_measurement_is_short():
    """Both libraries through the engine's products and kernels (MKL is part of the fast extra)."""
    if not blas._candidates():
        need_mkl("libmkl_rt not found")
    was = blas.backend()
    try:
        seconds = calibrate.measure(rounds=2, budget_s=0.05)
    finally:
        blas.set_backend(was)
    assert set(seconds) == {"numpy", "mkl"} and all(0 < v < 1.0 for v in seconds.values())
