"""deltaprop.fast.tune_conv_direct, the tunable ``direct_conv``: how many taps the direct convolution loops serve is
measured by ``deltaprop.tune()`` only, once per machine and BLAS library (the loops won on an AMD host and lost
2–6× on an Intel one), cached in ``direct_conv.json`` beside the BLAS choice; a first convolution without
``tune()`` takes the cached choice or the product path; DELTAPROP_CONV_DIRECT / DELTAPROP_CALIBRATE override it."""
from __future__ import annotations

import json

import pytest

from deltaprop.runtime import blas, calibrate, tunables
from deltaprop.fast import conv_direct, tune_conv_direct

pytest.importorskip("numba")


@pytest.fixture
def direct(monkeypatch, tmp_path):
    """A private cache folder, calibration on, numba on, a fake measurement (seconds per geometry) counting its
    calls; the loops' choice put back afterwards."""
    from deltaprop.runtime import jit
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    monkeypatch.delenv("DELTAPROP_CONV_DIRECT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(jit, "enabled", lambda: True)
    calls = []

    def fake(geometries=tune_conv_direct.GEOMETRIES, rounds=calibrate.ROUNDS):
        calls.append(1)
        return {k: dict(v) for k, v in fake.seconds.items()}
    fake.seconds = {"3-16-128": {"direct": 1.0, "product": 2.0}, "16-32-96": {"direct": 3.0, "product": 2.0}}
    monkeypatch.setattr(tune_conv_direct, "measure_direct", fake)
    yield tmp_path / "deltaprop" / "direct_conv.json", calls, fake
    conv_direct.set_max_taps(None)


def test_registered_with_the_runtime():
    assert "direct_conv" in [t.name for t in tunables.registered()]


def test_measures_once_then_reads_the_cache(direct):
    path, calls, _ = direct
    first = tune_conv_direct.choose(measure=True)
    assert first["max_taps"] == 27 and not first["cached"] and calls == [1]      # only the 3-channel layer won
    assert "3-16-128: loops 1000.00 ms, product 2000.00 ms" in first["reason"]
    assert [e["max_taps"] for e in json.loads(path.read_text())["entries"].values()] == [27]
    assert conv_direct.max_taps() == 27                                          # put in use
    second = tune_conv_direct.choose(measure=True)
    assert second["max_taps"] == 27 and second["cached"] and calls == [1]


def test_a_first_convolution_never_measures(direct):
    """Without ``tune()``: the product path (0 taps), unmeasured, nothing written; with a cache, its choice."""
    path, calls, _ = direct
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 0 and calls == [] and not path.exists()
    assert tunables.choose("direct_conv")["uncalibrated"] and calls == []
    tune_conv_direct.choose(measure=True)                      # what tune() runs
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 27 and calls == [1]       # the next process's first convolution


@pytest.mark.parametrize("seconds,taps", [({"direct": 1.0, "product": 2.0}, conv_direct.MAX_TAPS),
                                          ({"direct": 2.0, "product": 1.0}, 0),
                                          ({"direct": 1.0 - calibrate.MARGIN / 2, "product": 1.0}, 0)])
def test_the_loops_must_win_by_the_margin(direct, seconds, taps):
    _, _, fake = direct
    fake.seconds = {k: dict(seconds) for k in fake.seconds}
    assert tune_conv_direct.choose(measure=True)["max_taps"] == taps == conv_direct.max_taps()


def test_each_library_has_its_own_choice(direct, monkeypatch):
    path, calls, fake = direct
    tune_conv_direct.choose(measure=True)
    monkeypatch.setattr(blas, "backend", lambda: "mkl")
    fake.seconds = {k: {"direct": 1.0, "product": 2.0} for k in fake.seconds}
    other = tune_conv_direct.choose(measure=True)
    assert other["max_taps"] == conv_direct.MAX_TAPS and other["library"] == "mkl" and calls == [1, 1]
    assert sorted(e["max_taps"] for e in json.loads(path.read_text())["entries"].values()) == [27, 160]


@pytest.mark.parametrize("env,taps,why", [({"DELTAPROP_CONV_DIRECT": "on"}, conv_direct.MAX_TAPS, "=on"),
                                          ({"DELTAPROP_CONV_DIRECT": "off"}, 0, "=off"),
                                          ({"DELTAPROP_CALIBRATE": "0"}, 0, "DELTAPROP_CALIBRATE=0")])
def test_settings_decide_without_measuring(direct, monkeypatch, env, taps, why):
    path, calls, _ = direct
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tune_conv_direct.choose(measure=True)
    assert out["max_taps"] == taps == conv_direct.max_taps() and why in out["reason"]
    assert calls == [] and not path.exists()


def test_numba_off_means_the_product_path(direct, monkeypatch):
    from deltaprop.runtime import jit
    path, calls, _ = direct
    monkeypatch.setattr(jit, "enabled", lambda: False)
    assert tune_conv_direct.choose(measure=True)["max_taps"] == 0 and calls == [] and not path.exists()


def test_forget_removes_the_choice(direct):
    path, calls, _ = direct
    tune_conv_direct.choose(measure=True)
    assert path.exists() and calibrate.forget() and not path.exists()
    assert tunables.choose("direct_conv")["uncalibrated"] and calls == [1]


def test_the_real_measurement_is_short():
    """Both paths timed for real on the two geometries (a fraction of a second once the kernel is compiled); the
    loops' choice is left to be made again."""
    seconds = tune_conv_direct.measure_direct(rounds=2)
    assert set(seconds) == {"3-16-128", "16-32-96"}
    assert all(set(v) == {"direct", "product"} and all(0 < t < 1.0 for t in v.values()) for v in seconds.values())
