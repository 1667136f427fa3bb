"""Shared test fixtures. PyTorch is a test-only reference: ``torch_ref`` imports it, and where
DELTAPROP_REQUIRE_TORCH=1 (set by .ci/run) a missing torch, or any skipped PyTorch test, fails the run.

The small files the tests read (Darknet cfgs, the real Darknet's tiny_cls step, a few coco128 photos with their
labels) live in tests/fixtures/ (``fixture_dir``); only whole data sets (MNIST, all of coco128) come from ../shared
beside the checkout (``shared_dir``), and a test needing one skips when it is absent. Where CI=true (set by .ci/run)
a skip whose reason is not on ``ALLOWED_SKIPS`` fails the run; every skip is listed with its reason at the end."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
import pytest

# DELTAPROP_BLAS=auto without the per-machine measurement: no test depends on which library this machine prefers
# (tests/test_blas.py runs both; tests/test_calibrate.py switches the measurement back on). Set before deltaprop
# is imported (its first product reads it).
os.environ.setdefault("DELTAPROP_CALIBRATE", "0")

from deltaprop.runtime import settings  # noqa: E402  the one reader of DELTAPROP_* variables

REQUIRE_TORCH = settings.get("DELTAPROP_REQUIRE_TORCH")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "tests" / "fixtures"
STRICT_SKIPS = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The only skips a full install (.ci/run) may show: data sets too big for the repository, which a user's
# clone does not have beside it (MNIST comes from the network).
WHOLE_DATA_SET = "whole data set not present"
# oneMKL ships for x86-64 only (the fast extra installs it there): on another CPU the tests of the MKL paths
# skip, saying so; on x86-64 a missing MKL is an install error and its skips fail a CI run.
NO_MKL_BUILD = "oneMKL has no build for this CPU"
MKL_BUILT_FOR = ("x86_64", "amd64")
ALLOWED_SKIPS = (re.compile(re.escape(WHOLE_DATA_SET)), re.compile(re.escape(NO_MKL_BUILD)))


@pytest.fixture
def torch_ref():
    """The torch module (CPU, float64 default untouched). Skips locally without torch; fails in CI."""
    try:
        import torch
    except ImportError:
        if REQUIRE_TORCH:
            pytest.fail("torch==2.13.0 is required for the PyTorch parity tests (DELTAPROP_REQUIRE_TORCH=1)")
        pytest.skip("torch not installed")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(params=[False, True], ids=["numpy", "numba"])
def numba_mode(request):
    """Run a test with the numba kernels off, then on (the numba run is skipped only where numba is absent)."""
    from deltaprop.runtime import jit as _numba
    if request.param:
        pytest.importorskip("numba")
    before = _numba.enabled()
    _numba.set_enabled(request.param)
    yield request.param
    _numba.set_enabled(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def fixture_dir(*parts: str) -> Path:
    """A folder or file under tests/fixtures/ (e.g. ``fixture_dir("darknet", "cfg")``); it ships with the
    repository, so a missing one is an error, never a skip."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test fixture {path} missing from the checkout")
    return path


def need_data_set(path: Path) -> Path:
    """Skip (an allowed skip) unless ``path``, part of a whole data set in ../shared, is present."""
    if not Path(path).exists():
        pytest.skip(f"{WHOLE_DATA_SET}: {path} (big data sets live in ../shared beside the checkout; "
                    "MNIST can be downloaded)")
    return Path(path)


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout, for whole data sets only (MNIST, all of coco128); skips without it."""
    return need_data_set(SHARED)


def need_mkl(why: object) -> None:
    """Skip a test that needs oneMKL, which did not load (``why``): an allowed skip only on a CPU MKL has no
    build for; on x86-64 the skip names the install problem and CI=true fails the run."""
    machine = platform.machine() or "unknown"
    if machine.lower() not in MKL_BUILT_FOR:
        pytest.skip(f"{NO_MKL_BUILD} ({machine}): {why}")
    pytest.skip(f"MKL is not usable on this x86-64 machine (pip install -e '.[fast]' installs it): {why}")


def require_numba() -> None:
    """Skip a test of the numba kernels themselves when numba is absent or turned off (DELTAPROP_NUMBA=0)."""
    pytest.importorskip("numba")
    from deltaprop.runtime import jit as _numba
    if _numba.numba_module() is None:
        pytest.skip("numba turned off (DELTAPROP_NUMBA=0)")


def rel_err(a, b) -> float:
    """Per-tensor max|a − b| / max(max|b|, 1e-12): the parity metric of the issues."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)) if b.size else 0.0, 1e-12)) if b.size else 0.0


def pytest_collection_modifyitems(items):
    for item in items:
        if "torch_ref" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.torch)


_SKIPS: dict[str, str] = {}     # node id -> skip reason, in run order


def _unexpected_skips() -> dict[str, str]:
    return {n: r for n, r in _SKIPS.items() if not any(p.search(r) for p in ALLOWED_SKIPS)}


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_TORCH:
        skipped = [i.nodeid for i in session.items if i.get_closest_marker("torch") is not None
                   and getattr(i, "_dp_skipped", False)]
        if skipped:
            session.exitstatus = 1
    if STRICT_SKIPS and _unexpected_skips():
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if not (STRICT_SKIPS and _SKIPS):
        return
    unexpected = _unexpected_skips()
    terminalreporter.section(f"{len(_SKIPS)} skipped")
    for node, reason in _SKIPS.items():
        flag = "NOT ALLOWED " if node in unexpected else ""
        terminalreporter.line(f"{flag}{node}: {reason}")
    if unexpected:
        terminalreporter.line(f"CI=true: {len(unexpected)} skip(s) not on conftest.ALLOWED_SKIPS -> failing the run")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped:
        longrepr = rep.longrepr
        _SKIPS[item.nodeid] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    if rep.skipped and item.get_closest_marker("torch") is not None:
        item._dp_skipped = True
        if REQUIRE_TORCH:
            print(f"\nPyTorch parity test skipped in CI: {item.nodeid}")
