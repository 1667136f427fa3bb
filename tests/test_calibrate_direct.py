"""conv_direct.max_taps: the settings decide it (DELTAPROP_CONV_DIRECT on/off, DELTAPROP_CALIBRATE=0: the product
path), and the choice decides the path of a convolution. The calibration itself (``fast/tune_conv_direct.py``):
tests/test_tune_conv_direct.py."""
from __future__ import annotations

import pytest

from deltaprop.errors import ConfigError
from deltaprop.functional import conv
from deltaprop.fast import conv_direct, tune_conv_direct

pytest.importorskip("numba")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A private cache folder, calibration on, a measurement that must not run; the loops' choice reset."""
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    monkeypatch.delenv("DELTAPROP_CONV_DIRECT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("DELTAPROP_CALIBRATE", "1")
    calls = []
    monkeypatch.setattr(tune_conv_direct, "measure_direct", lambda *a, **k: calls.append(1) or {})
    conv_direct.set_max_taps(None)
    yield tmp_path / "deltaprop" / "direct_conv.json", calls
    conv_direct.set_max_taps(None)


def test_settings_override_the_measurement(cache, monkeypatch):
    """``set_max_taps(None)`` reads DELTAPROP_CONV_DIRECT again: on serves up to MAX_TAPS taps, off none, a bad
    value is named; auto with nothing measured serves none, and nothing is measured on the way."""
    path, calls = cache
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
