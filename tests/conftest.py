"""Shared test fixtures. PyTorch is a test-only reference: ``torch_ref`` imports it, and where
DELTAPROP_REQUIRE_TORCH=1 (set by .ci/run) a missing torch, or any skipped PyTorch test, fails the run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REQUIRE_TORCH = os.environ.get("DELTAPROP_REQUIRE_TORCH") == "1"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


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
    from deltaprop.functional import _numba
    if request.param:
        pytest.importorskip("numba")
    before = _numba.enabled()
    _numba.set_enabled(request.param)
    yield request.param
    _numba.set_enabled(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout (MNIST, coco128, Darknet cfgs and reference numbers)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (the shared data sets live beside the checkout)")
    return SHARED


def require_numba() -> None:
    """Skip a test of the numba kernels themselves when numba is absent or turned off (DELTAPROP_NUMBA=0)."""
    pytest.importorskip("numba")
    from deltaprop.functional import _numba
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


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_TORCH:
        skipped = [i.nodeid for i in session.items if i.get_closest_marker("torch") is not None
                   and getattr(i, "_dp_skipped", False)]
        if skipped:
            session.exitstatus = 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and item.get_closest_marker("torch") is not None:
        item._dp_skipped = True
        if REQUIRE_TORCH:
            print(f"\nPyTorch parity test skipped in CI: {item.nodeid}")
