"""Integer settings from the environment: defaults, values, and an error naming the variable when malformed."""
import subprocess
import sys

import pytest

from deltaprop._env import env_int
from deltaprop.errors import ConfigError


def test_env_int(monkeypatch):
    monkeypatch.delenv("DELTAPROP_TEST_N", raising=False)
    assert env_int("DELTAPROP_TEST_N", 7) == 7
    monkeypatch.setenv("DELTAPROP_TEST_N", "  ")
    assert env_int("DELTAPROP_TEST_N", 7) == 7                     # empty: the default
    monkeypatch.setenv("DELTAPROP_TEST_N", " 32768 ")
    assert env_int("DELTAPROP_TEST_N", 7) == 32768
    for bad in ("1e5", "lots", "3.5"):
        monkeypatch.setenv("DELTAPROP_TEST_N", bad)
        with pytest.raises(ConfigError, match=r"DELTAPROP_TEST_N='.*': expected a whole number"):
            env_int("DELTAPROP_TEST_N", 7)
    monkeypatch.setenv("DELTAPROP_TEST_N", "0")
    with pytest.raises(ConfigError, match="at least 1"):
        env_int("DELTAPROP_TEST_N", 7, minimum=1)


@pytest.mark.parametrize("name", ["DELTAPROP_SPLIT_MIN", "DELTAPROP_PARALLEL_MIN"])
def test_a_malformed_setting_stops_the_import_naming_it(name, monkeypatch):
    monkeypatch.setenv(name, "many")
    p = subprocess.run([sys.executable, "-c", "import deltaprop"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"{name}='many': expected a whole number" in p.stderr


def test_env_flag(monkeypatch):
    from deltaprop._env import env_flag
    monkeypatch.delenv("DELTAPROP_TEST_F", raising=False)
    assert env_flag("DELTAPROP_TEST_F", True) is True and env_flag("DELTAPROP_TEST_F", False) is False
    for raw, want in [("0", False), (" off ", False), ("FALSE", False), ("no", False),
                      ("1", True), ("on", True), ("True", True), ("yes ", True)]:
        monkeypatch.setenv("DELTAPROP_TEST_F", raw)
        assert env_flag("DELTAPROP_TEST_F", not want) is want, raw
    monkeypatch.setenv("DELTAPROP_TEST_F", "2")
    with pytest.raises(ConfigError, match=r"DELTAPROP_TEST_F='2': expected 1 or 0"):
        env_flag("DELTAPROP_TEST_F", True)


def test_a_malformed_switch_stops_the_import_naming_it(monkeypatch):
    monkeypatch.setenv("DELTAPROP_SPLIT", "maybe")
    p = subprocess.run([sys.executable, "-c", "import deltaprop"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "DELTAPROP_SPLIT='maybe': expected 1 or 0" in p.stderr


def test_numba_switch_is_read_through_env(monkeypatch):
    from deltaprop.functional import _numba
    before = _numba.enabled()
    try:
        monkeypatch.setattr(_numba, "_wanted", None)
        monkeypatch.setattr(_numba, "_checked", False)
        monkeypatch.setenv("DELTAPROP_NUMBA", "nope")
        with pytest.raises(ConfigError, match="DELTAPROP_NUMBA='nope'"):
            _numba.numba_module()
        monkeypatch.setattr(_numba, "_checked", False)
        monkeypatch.setenv("DELTAPROP_NUMBA", "off")
        assert _numba.numba_module() is None
    finally:
        _numba.set_enabled(before)


def test_darknet_trainer_threads_setting_is_a_config_error(monkeypatch):
    import argparse
    from deltaprop.darknet import trainer_cli
    monkeypatch.setenv("DELTAPROP_BLAS_THREADS", "two")
    with pytest.raises(ConfigError, match="DELTAPROP_BLAS_THREADS='two': expected a whole number"):
        trainer_cli.run(argparse.Namespace(threads=None))
