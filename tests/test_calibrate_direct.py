"""deltaprop.calibrate.direct_conv_taps and conv_direct.max_taps: whether the direct convolution loops serve
few-tap layers is measured once per machine and BLAS library (the loops won on an AMD host and lost 2–6× on an
Intel one), cached beside the BLAS choice, and DELTAPROP_CONV_DIRECT / DELTAPROP_CALIBRATE override it."""
from __future__ import annotations

import json

import pytest

from deltaprop.runtime import blas
from deltaprop.runtime import calibrate
from deltaprop.errors import ConfigError
from deltaprop.functional import conv
from deltaprop.fast import conv_direct

pytest.importorskip("numba")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A private cache folder, calibration on, a fake measurement (seconds per geometry) counting its calls."""
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    monkeypatch.delenv("DELTAPROP_CONV_DIRECT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    monkeypatch.setattr(calibrate, "measure", lambda: {"numpy": 1.0, "mkl": 2.0})   # the BLAS choice: NumPy's
    calls = []

    def fake(geometries=calibrate.DIRECT_GEOMETRIES, rounds=calibrate.ROUNDS):
        calls.append(1)
        return {k: dict(v) for k, v in fake.seconds.items()}
    fake.seconds = {"3-16-128": {"direct": 1.0, "product": 2.0}, "16-32-96": {"direct": 3.0, "product": 2.0}}
    monkeypatch.setattr(calibrate, "measure_direct", fake)
    before = conv_direct._max_taps
    conv_direct.set_max_taps(None)
    yield tmp_path / "deltaprop" / "direct_conv.json", calls, fake
    conv_direct.set_max_taps(before)


def test_measures_once_then_reads_the_cache(cache):
    path, calls, _ = cache
    first = calibrate.direct_conv_taps()
    assert first["max_taps"] == 27 and not first["cached"] and calls == [1]      # only the 3-channel layer won
    assert "3-16-128: loops 1000.00 ms, product 2000.00 ms" in first["reason"]
    assert [e["max_taps"] for e in json.loads(path.read_text())["entries"].values()] == [27]
    second = calibrate.direct_conv_taps()
    assert second["max_taps"] == 27 and second["cached"] and calls == [1]
    assert conv_direct.max_taps() == 27 and calls == [1]                          # the conv path reads the same


@pytest.mark.parametrize("seconds,taps", [({"direct": 1.0, "product": 2.0}, conv_direct.MAX_TAPS),
                                          ({"direct": 2.0, "product": 1.0}, 0),
                                          ({"direct": 1.0 - calibrate.MARGIN / 2, "product": 1.0}, 0)])
def test_the_loops_must_win_by_the_margin(cache, seconds, taps):
    _, _, fake = cache
    fake.seconds = {k: dict(seconds) for k in fake.seconds}
    assert calibrate.direct_conv_taps()["max_taps"] == taps


def test_each_library_has_its_own_choice(cache, monkeypatch):
    path, calls, fake = cache
    calibrate.direct_conv_taps()
    monkeypatch.setattr(blas, "ensure", lambda: "mkl")
    fake.seconds = {k: {"direct": 1.0, "product": 2.0} for k in fake.seconds}
    other = calibrate.direct_conv_taps()
    assert other["max_taps"] == conv_direct.MAX_TAPS and other["library"] == "mkl" and calls == [1, 1]
    assert sorted(e["max_taps"] for e in json.loads(path.read_text())["entries"].values()) == [27, 160]


def test_settings_override_the_measurement(cache, monkeypatch):
    """``set_max_taps(None)`` reads DELTAPROP_CONV_DIRECT again: on serves up to MAX_TAPS taps, off none, a bad
    value is named; auto with nothing measured serves none, and nothing is measured on the way."""
    path, calls, _ = cache
    monkeypatch.setenv("DELTAPROP_CONV_DIRECT", "on")
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == conv_direct.MAX_TAPS
    monkeypatch.setenv("DELTAPROP_CONV_DIRECT", "off")
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 0
    monkeypatch.setenv("DELTAPROP_CONV_DIRECT", "sometimes")
    with pytest.raises(ConfigError, match="DELTAPROP_CONV_DIRECT='sometimes': expected one of auto, on, off"):
        conv_direct.set_max_taps(None)
    monkeypatch.delenv("DELTAPROP_CONV_DIRECT")
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "0")           # the test suite's setting: the product path
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 0 and calls == [] and not path.exists()


def test_forget_removes_both_choices(cache):
    path, calls, _ = cache
    calibrate.direct_conv_taps()
    assert path.exists() and calibrate.forget() and not path.exists()
    assert conv_direct._max_taps is None


def test_the_choice_decides_the_path(cache, rng):
    """With the loops chosen a geometry of yolov3-tiny's first layer runs them (the cache holds x, no columns
    and no product); with them refused the product runs; both give the same numbers."""
    x = rng.normal(size=(1, 3, 64, 64))
    w = rng.normal(size=(4, 3, 3, 3))
    g = conv.conv_geometry(x.shape, w.shape, 1, 1)
    conv_direct.set_max_taps(27)
    assert conv_direct.applies(g)
    z_loops, _ = conv.conv2d_forward(x, w, None, 1, 1, keep_cols=False)
    conv_direct.set_max_taps(0)
    assert not conv_direct.applies(g) and conv_direct.eligible(g)
    z_product, _ = conv.conv2d_forward(x, w, None, 1, 1, keep_cols=False)
    assert abs(z_loops - z_product).max() < 1e-12


def test_the_real_measurement_is_short():
    """Both paths timed for real on the two geometries (a fraction of a second once the kernel is compiled)."""
    seconds = calibrate.measure_direct(rounds=2)
    assert set(seconds) == {"3-16-128", "16-32-96"}
    assert all(set(v) == {"direct", "product"} and all(0 < t < 1.0 for t in v.values()) for v in seconds.values())
