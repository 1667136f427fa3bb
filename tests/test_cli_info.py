"""``deltaprop info`` as a user runs it (issue 17): with ``DELTAPROP_BLAS=auto`` the first run measures both
libraries and caches the choice per machine, the second reads the cache, a forced library says so, and a bad
setting is one error line naming the variable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_mkl

REPO = Path(__file__).resolve().parents[1]


def info(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DELTAPROP_")}
    e.update({"PYTHONPATH": str(REPO), "DELTAPROP_CACHE_DIR": str(tmp_path / "cache"), **env})
    return subprocess.run([sys.executable, "-m", "deltaprop", "info", *args], capture_output=True, text=True,
                          env=e, timeout=120)


def test_auto_measures_then_reads_the_cache(tmp_path):
    first = info(tmp_path, "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["blas_setting"] == "auto" and out["blas"] in ("mkl", "numpy")
    assert out["cpu"] and out["cores"] >= 1
    cache = tmp_path / "cache" / "blas.json"
    assert out["cache"] == str(cache) and cache.exists()
    if out["calibration_seconds"]:          # both libraries were measured (MKL installed)
        assert set(out["calibration_seconds"]) == {"mkl", "numpy"}
        assert out["calibration_cached"] is False and "measured" in out["why"]
        again = json.loads(info(tmp_path, "--json").stdout)
        assert again["calibration_cached"] is True and again["blas"] == out["blas"]
        assert again["calibration_seconds"] == out["calibration_seconds"]
    else:                                   # no MKL: nothing to measure, and the reason says so
        assert out["blas"] == "numpy" and out["why"]


def test_the_table_names_the_choice_and_the_threads(tmp_path):
    r = info(tmp_path)
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    for key in ("CPU", "NumPy", "products", "why", "calibration", "cache", "numba", "threads", "wait policy"):
        assert key in rows, (key, r.stdout)
    assert "DELTAPROP_BLAS=auto" in rows["products"]


def test_a_forced_library_is_reported_as_set(tmp_path):
    out = json.loads(info(tmp_path, "--json", DELTAPROP_BLAS="numpy").stdout)
    assert out["blas"] == "numpy" and out["blas_setting"] == "numpy"
    assert not (tmp_path / "cache" / "blas.json").exists()   # nothing measured, nothing cached


@pytest.mark.parametrize("value", ["openblas", "1"])
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path, value):
    r = info(tmp_path, DELTAPROP_BLAS=value)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "DELTAPROP_BLAS" in r.stderr and "auto" in r.stderr and "mkl" in r.stderr and "numpy" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_settings_in_effect_and_variants_are_listed(tmp_path):
    """Every engine setting with its value (set or default), a DELTAPROP_* variable deltaprop does not read, and
    each variant registered with deltaprop.dispatch with its on/off state."""
    import deltaprop
    from deltaprop import dispatch
    from deltaprop.runtime import settings
    unknown = "DELTAPROP" + "_BLAS_THREDS"
    out = json.loads(info(tmp_path, "--json", DELTAPROP_SPLIT_MIN="4096", **{unknown: "2"}).stdout)
    by_name = {s["name"]: s for s in out["settings"]}
    assert set(by_name) == {s.name for s in settings.TABLE if not s.test_only}
    assert by_name["DELTAPROP_SPLIT_MIN"]["value"] == 4096 and by_name["DELTAPROP_SPLIT_MIN"]["set"]
    assert by_name["DELTAPROP_MALLOC"]["value"] is True and not by_name["DELTAPROP_MALLOC"]["set"]
    assert out["unknown_settings"] == [unknown]
    assert deltaprop.__version__ and [v["key"] for v in out["variants"]] == [v.key for v in dispatch.variants()]
    assert all(v["on"] is True for v in out["variants"])
    rows = info(tmp_path, DELTAPROP_SPLIT_MIN="4096").stdout.splitlines()
    assert any(r.strip() == "setting: DELTAPROP_SPLIT_MIN=4096" for r in rows)
    assert any(r.strip() == "setting: DELTAPROP_MALLOC=1 (default)" for r in rows)


def test_recalibrate_measures_again(tmp_path):
    first = json.loads(info(tmp_path, "--json").stdout)
    if not first["calibration_seconds"]:
        need_mkl("libmkl_rt not found: nothing to measure")
    again = json.loads(info(tmp_path, "--json", "--recalibrate").stdout)
    assert again["recalibrated"] and again["calibration_cached"] is False
    assert again["calibration_seconds"] != first["calibration_seconds"]
