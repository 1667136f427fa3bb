"""Settings from the environment (``deltaprop.runtime.settings``): defaults, values, an error naming the variable
when one is malformed, and the older accessors (``env_int``...) held to the same table."""
import subprocess
import sys

import pytest

from deltaprop.errors import ConfigError
from deltaprop.runtime import settings
from deltaprop.runtime.settings import UnknownSetting, env_choice, env_flag, env_int, env_path


def test_env_int(monkeypatch):
    monkeypatch.delenv("DELTAPROP_SPLIT_MIN", raising=False)
    assert env_int("DELTAPROP_SPLIT_MIN", 1 << 18) == 1 << 18 == settings.get("DELTAPROP_SPLIT_MIN")
    monkeypatch.setenv("DELTAPROP_SPLIT_MIN", "  ")
    assert env_int("DELTAPROP_SPLIT_MIN", 1 << 18) == 1 << 18               # empty: the default
    monkeypatch.setenv("DELTAPROP_SPLIT_MIN", " 32768 ")
    assert env_int("DELTAPROP_SPLIT_MIN", 1 << 18) == 32768 == settings.get("DELTAPROP_SPLIT_MIN")
    for bad in ("1e5", "lots", "3.5"):
        monkeypatch.setenv("DELTAPROP_SPLIT_MIN", bad)
        with pytest.raises(ConfigError, match=r"DELTAPROP_SPLIT_MIN='.*': expected a whole number"):
            env_int("DELTAPROP_SPLIT_MIN", 1 << 18)
    monkeypatch.setenv("DELTAPROP_DIST_TIMEOUT", "0")                       # the table's minimum is 1
    with pytest.raises(ConfigError, match="DELTAPROP_DIST_TIMEOUT='0': expected a whole number of at least 1"):
        settings.get("DELTAPROP_DIST_TIMEOUT")
    monkeypatch.setenv("DELTAPROP_BLAS_THREADS", "0")                       # a call may be stricter
    assert env_int("DELTAPROP_BLAS_THREADS", 0) == 0
    with pytest.raises(ConfigError, match="at least 1"):
        env_int("DELTAPROP_BLAS_THREADS", 1, minimum=1)


def test_the_table_is_the_one_default(monkeypatch):
    """A call whose default or values disagree with the table, a name the table lacks, or a setting read as
    another type, is a bug in deltaprop: refused whatever the environment holds."""
    monkeypatch.delenv("DELTAPROP_SPLIT_MIN", raising=False)
    with pytest.raises(UnknownSetting, match="differs from the table's 262144"):
        env_int("DELTAPROP_SPLIT_MIN", 7)
    with pytest.raises(UnknownSetting, match="differ from the table's"):
        env_choice("DELTAPROP_BLAS", "auto", ("auto", "numpy"))
    with pytest.raises(UnknownSetting, match="is a flag setting, read here as int"):
        env_int("DELTAPROP_NUMBA", 1)
    unknown = "DELTAPROP" + "_NOT_A_SETTING"                  # kept out of the source scan of test_settings.py
    for read in (settings.get, settings.raw, lambda n: env_flag(n, True)):
        with pytest.raises(UnknownSetting, match="is not a deltaprop setting"):
            read(unknown)
    # where the table leaves the default to the caller (None), the call's own default is used
    monkeypatch.delenv("DELTAPROP_BLAS_THREADS", raising=False)
    assert env_int("DELTAPROP_BLAS_THREADS", 1, minimum=1) == 1 and env_int("DELTAPROP_BLAS_THREADS", 0) == 0
    assert settings.get("DELTAPROP_BLAS_THREADS") is None


@pytest.mark.parametrize("name", ["DELTAPROP_SPLIT_MIN", "DELTAPROP_PARALLEL_MIN"])
def test_a_malformed_setting_stops_the_import_naming_it(name, monkeypatch):
    monkeypatch.setenv(name, "many")
    p = subprocess.run([sys.executable, "-c", "import deltaprop"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert f"{name}='many': expected a whole number" in p.stderr


def test_env_flag(monkeypatch):
    monkeypatch.delenv("DELTAPROP_SYNC_BN", raising=False)
    assert env_flag("DELTAPROP_SYNC_BN", False) is False and settings.get("DELTAPROP_SYNC_BN") is False
    for raw, want in [("0", False), (" off ", False), ("FALSE", False), ("no", False),
                      ("1", True), ("on", True), ("True", True), ("yes ", True)]:
        monkeypatch.setenv("DELTAPROP_SYNC_BN", raw)
        assert env_flag("DELTAPROP_SYNC_BN", False) is want is settings.get("DELTAPROP_SYNC_BN"), raw
    monkeypatch.setenv("DELTAPROP_SYNC_BN", "2")
    with pytest.raises(ConfigError, match=r"DELTAPROP_SYNC_BN='2': expected 1 or 0"):
        env_flag("DELTAPROP_SYNC_BN", False)


def test_a_malformed_switch_stops_the_import_naming_it(monkeypatch):
    monkeypatch.setenv("DELTAPROP_SPLIT", "maybe")
    p = subprocess.run([sys.executable, "-c", "import deltaprop"], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "DELTAPROP_SPLIT='maybe': expected 1 or 0" in p.stderr


def test_numba_switch_is_read_through_settings(monkeypatch):
    from deltaprop.runtime import jit, numba_loader
    before = jit.enabled()
    try:
        monkeypatch.setattr(numba_loader, "_wanted", None)
        monkeypatch.setattr(numba_loader, "_checked", False)
        monkeypatch.setenv("DELTAPROP_NUMBA", "nope")
        with pytest.raises(ConfigError, match="DELTAPROP_NUMBA='nope'"):
            jit.numba_module()
        monkeypatch.setattr(numba_loader, "_checked", False)
        monkeypatch.setenv("DELTAPROP_NUMBA", "off")
        assert jit.numba_module() is None
    finally:
        jit.set_enabled(before)


def test_darknet_trainer_threads_setting_is_a_config_error(monkeypatch):
    import argparse
    from deltaprop.darknet import trainer_cli
    monkeypatch.setenv("DELTAPROP_BLAS_THREADS", "two")
    with pytest.raises(ConfigError, match="DELTAPROP_BLAS_THREADS='two': expected a whole number"):
        trainer_cli.run(argparse.Namespace(threads=None))


def test_product_threads_take_the_option_then_the_setting_then_the_default(monkeypatch):
    from deltaprop.runtime import threads
    monkeypatch.delenv("DELTAPROP_BLAS_THREADS", raising=False)
    assert threads.product_threads(None, 1) == 1 and threads.product_threads(None, 0) == 0
    monkeypatch.setenv("DELTAPROP_BLAS_THREADS", "3")
    assert threads.product_threads(None, 1) == 3 and threads.product_threads(2, 1) == 2
    monkeypatch.setenv("DELTAPROP_BLAS_THREADS", "-1")
    with pytest.raises(ConfigError, match="DELTAPROP_BLAS_THREADS='-1'"):
        threads.product_threads(None, 1)


def test_env_choice(monkeypatch):
    monkeypatch.delenv("DELTAPROP_BLAS", raising=False)
    assert env_choice("DELTAPROP_BLAS", "auto", ("auto", "mkl", "numpy")) == "auto"
    monkeypatch.setenv("DELTAPROP_BLAS", " MKL ")
    assert env_choice("DELTAPROP_BLAS", "auto", ("auto", "mkl", "numpy")) == "mkl" == settings.get("DELTAPROP_BLAS")
    monkeypatch.setenv("DELTAPROP_BLAS", "openblas")
    with pytest.raises(ConfigError, match=r"DELTAPROP_BLAS='openblas': expected one of auto, mkl, numpy"):
        env_choice("DELTAPROP_BLAS", "auto", ("auto", "mkl", "numpy"))


def test_env_path_and_cache_dir(monkeypatch, tmp_path):
    from deltaprop.runtime import calibrate
    from deltaprop.runtime.settings import user_cache_dir
    from deltaprop.data import mnist
    monkeypatch.setenv("DELTAPROP_DATA", " ")
    assert env_path("DELTAPROP_DATA") is None
    monkeypatch.setenv("DELTAPROP_DATA", "~/somewhere")
    assert env_path("DELTAPROP_DATA") == settings.get("DELTAPROP_DATA") and "~" not in str(env_path("DELTAPROP_DATA"))
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


def test_tune_validates_every_setting_and_names_unknown_ones(monkeypatch):
    """``deltaprop.tune()`` (which the command line runs first) stops on any malformed setting, even one the
    command would not read, and reports DELTAPROP_* variables that deltaprop does not read (a misspelling)."""
    from deltaprop.runtime import calibrate
    monkeypatch.setenv("DELTAPROP_SYNC_BN", "sometimes")
    with pytest.raises(ConfigError, match="DELTAPROP_SYNC_BN='sometimes'"):
        calibrate.tune()
    monkeypatch.delenv("DELTAPROP_SYNC_BN")
    monkeypatch.setenv("DELTAPROP" + "_BLAS_THREDS", "2")
    out = calibrate.tune()
    assert out["unknown_settings"] == ["DELTAPROP" + "_BLAS_THREDS"]
    assert {s["name"] for s in out["settings"]} == {s.name for s in settings.TABLE if not s.test_only}


def test_every_setting_is_read_through_settings():
    """One way to read settings: no module but ``runtime/settings.py`` reads a ``DELTAPROP_*`` variable from
    ``os.environ`` (by its name or by a constant holding it); the other variables read are other programs'
    (OpenMP, MKL, MPI)."""
    import re
    from pathlib import Path

    import deltaprop
    pkg = Path(deltaprop.__file__).parent
    offenders = []
    for f in sorted(pkg.rglob("*.py")):
        if f == pkg / "runtime" / "settings.py":
            continue
        text = f.read_text()
        names = ["DELTAPROP_"] + re.findall(r"^\s*(\w+)\s*=\s*[\"']DELTAPROP_", text, re.M)
        for i, line in enumerate(text.splitlines(), 1):
            if re.search(r"os\.environ|os\.getenv", line) and any(re.search(rf"\b{n}", line) for n in names):
                offenders.append(f"{f.relative_to(pkg)}:{i}: {line.strip()}")
    assert offenders == []
