"""Integer settings from the environment: defaults, values, and an error naming the variable when malformed."""
import subprocess
import sys

import pytest

from deltaprop.runtime.settings import env_int
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
    from deltaprop.runtime.settings import env_flag
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
    from deltaprop.runtime import jit as _numba
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


def test_env_choice(monkeypatch):
    from deltaprop.runtime.settings import env_choice
    monkeypatch.delenv("DELTAPROP_TEST_C", raising=False)
    assert env_choice("DELTAPROP_TEST_C", "auto", ("auto", "mkl", "numpy")) == "auto"
    monkeypatch.setenv("DELTAPROP_TEST_C", " MKL ")
    assert env_choice("DELTAPROP_TEST_C", "auto", ("auto", "mkl", "numpy")) == "mkl"
    monkeypatch.setenv("DELTAPROP_TEST_C", "openblas")
    with pytest.raises(ConfigError, match=r"DELTAPROP_TEST_C='openblas': expected one of auto, mkl, numpy"):
        env_choice("DELTAPROP_TEST_C", "auto", ("auto", "mkl", "numpy"))


def test_env_path_and_cache_dir(monkeypatch, tmp_path):
    from deltaprop.runtime import calibrate
    from deltaprop.runtime.settings import env_path, user_cache_dir
    from deltaprop.data import mnist
    monkeypatch.setenv("DELTAPROP_TEST_P", " ")
    assert env_path("DELTAPROP_TEST_P") is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DELTAPROP_CACHE_DIR", raising=False)
    assert user_cache_dir() == tmp_path / "xdg" / "deltaprop" == mnist.cache_dir()
    assert calibrate.cache_path() == tmp_path / "xdg" / "deltaprop" / "blas.json"
    monkeypatch.setenv("DELTAPROP_CACHE_DIR", str(tmp_path / "own"))
    assert calibrate.cache_path() == tmp_path / "own" / "blas.json"


def test_a_malformed_blas_setting_stops_the_first_use_naming_it_and_the_values(monkeypatch):
    monkeypatch.setenv("DELTAPROP_BLAS", "openblas")
    p = subprocess.run([sys.executable, "-c", "import deltaprop; deltaprop.tune()"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0
    assert "DELTAPROP_BLAS='openblas': expected one of auto, mkl, numpy" in p.stderr


def test_every_setting_is_read_through_env():
    """One way to read settings: no module but ``_env`` reads a ``DELTAPROP_*`` variable from ``os.environ``
    (by its name or by a constant holding it); the other variables read are other programs' (OpenMP, MKL, MPI)."""
    import re
    from pathlib import Path

    import deltaprop
    pkg = Path(deltaprop.__file__).parent
    offenders = []
    for f in sorted(pkg.rglob("*.py")):
        if f.name == "_env.py":
            continue
        text = f.read_text()
        names = ["DELTAPROP_"] + re.findall(r"^\s*(\w+)\s*=\s*[\"']DELTAPROP_", text, re.M)
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"os\.environ|os\.getenv", line) and any(re.search(rf"\b{n}", line) for n in names):
                offenders.append(f"{f.relative_to(pkg)}:{i}: {line.strip()}")
    assert offenders == []
