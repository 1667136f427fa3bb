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
