"""PyTorch parity of BatchNorm1d/BatchNorm2d (and the fused BatchNormAct2d): outputs, input gradients,
weight/bias gradients and running statistics over several steps, train and eval, ≤ 1e-10 in float64."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop.nn as nn
from deltaprop import enable_grad
from deltaprop.runtime import jit as _numba

from conftest import rel_err


def _copy_into_torch(ours, theirs, torch):
    with torch.no_grad():
        for k, v in ours.state_dict().items():
            theirs.state_dict()[k].copy_(torch.tensor(v))


def _steps(torch, ours, theirs, shapes, rng, tol, act=None):
    """Train-mode steps then eval-mode steps; compare everything after each."""
    dt = np.float64 if tol < 1e-6 else np.float32
    for step, (shape, training) in enumerate(shapes):
        ours.train(training)
        theirs.train(training)
        x = (rng.standard_normal(shape) * 2 + 0.7).astype(dt)
        d = rng.standard_normal(shape).astype(dt)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt) if act is None else act(theirs(xt))
        yt.backward(torch.tensor(d))
        ours.zero_grad()
        with enable_grad():
            y = ours(x)
        dx = ours.backward(d)
        assert rel_err(y, yt.detach().numpy()) <= tol, f"step {step} output"
        assert rel_err(dx, xt.grad.numpy()) <= tol, f"step {step} input gradient"
        if ours.affine:
            assert rel_err(ours.weight.grad, theirs.weight.grad.numpy()) <= tol, f"step {step} weight gradient"
            assert rel_err(ours.bias.grad, theirs.bias.grad.numpy()) <= tol, f"step {step} bias gradient"
            theirs.weight.grad = None
            theirs.bias.grad = None
        if ours.track_running_stats:
            assert rel_err(ours.running_mean, theirs.running_mean.numpy()) <= tol, f"step {step} running mean"
            assert rel_err(ours.running_var, theirs.running_var.numpy()) <= tol, f"step {step} running var"
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


STEPS_2D = [((4, 3, 5, 6), True), ((2, 3, 4, 4), True), ((3, 3, 5, 5), True), ((1, 3, 3, 2), True),
            ((2, 3, 5, 6), False), ((1, 3, 1, 1), False)]
STEPS_1D = [((8, 3), True), ((2, 3), True), ((5, 3, 4), True), ((3, 3), False), ((1, 3, 7), False)]


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.3, "eps": 1e-3}, {"momentum": None}, {"affine": False},
                                {"track_running_stats": False}])
def test_batchnorm2d(torch_ref, rng, kw):
    ours = nn.BatchNorm2d(3, **kw).double()
    theirs = torch_ref.nn.BatchNorm2d(3, **kw).double()
    if ours.affine:
        ours.weight.data[...] = rng.standard_normal(3)
        ours.bias.data[...] = rng.standard_normal(3)
    _copy_into_torch(ours, theirs, torch_ref)
    # a single value per channel is fine in eval only when running statistics normalise
    _steps(torch_ref, ours, theirs, STEPS_2D if ours.track_running_stats else STEPS_2D[:-1], rng, 1e-10)
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}])
def test_batchnorm1d(torch_ref, rng, kw):
    ours = nn.BatchNorm1d(3, **kw).double()
    theirs = torch_ref.nn.BatchNorm1d(3, **kw).double()
    if ours.affine:
        ours.weight.data[...] = rng.standard_normal(3)
        ours.bias.data[...] = rng.standard_normal(3)
    _copy_into_torch(ours, theirs, torch_ref)
    _steps(torch_ref, ours, theirs, STEPS_1D, rng, 1e-10)


@pytest.mark.parametrize("use_numba", [False, True], ids=["numpy", "numba"])
@pytest.mark.parametrize("act,slope", [("leaky", 0.1), ("relu", 0.0)])
def test_fused_against_torch_bn_then_act(torch_ref, rng, use_numba, act, slope):
    # without numba the "numba" variant runs the NumPy path again (never a skip: CI forbids skipped parity tests)
    before = _numba.enabled()
    _numba.set_enabled(use_numba)
    try:
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
            ours = nn.BatchNormAct2d(3, act, slope, dtype=dtype)
            theirs = torch_ref.nn.BatchNorm2d(3)
            if dtype == np.float64:
                theirs = theirs.double()
            ours.weight.data[...] = rng.standard_normal(3)
            ours.bias.data[...] = rng.standard_normal(3)
            _copy_into_torch(ours, theirs, torch_ref)
            fn = torch_ref.nn.LeakyReLU(slope) if act == "leaky" else torch_ref.nn.ReLU()
            _steps(torch_ref, ours, theirs, STEPS_2D, rng, tol, act=fn)
    finally:
        _numba.set_enabled(before)


def test_float32_parity(torch_ref, rng):
    ours = nn.BatchNorm2d(4)
    theirs = torch_ref.nn.BatchNorm2d(4)
    ours.weight.data[...] = rng.standard_normal(4)
    _copy_into_torch(ours, theirs, torch_ref)
    _steps(torch_ref, ours, theirs, [((8, 4, 16, 16), True), ((4, 4, 8, 8), True), ((2, 4, 8, 8), False)], rng, 1e-4)


def test_loads_a_torch_state_dict(torch_ref, rng):
    theirs = torch_ref.nn.BatchNorm2d(3)
    theirs.train()
    for _ in range(3):
        theirs(torch_ref.randn(4, 3, 5, 5) * 3 + 1)
    ours = nn.BatchNorm2d(3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert rel_err(ours(x), theirs(torch_ref.tensor(x)).detach().numpy()) < 1e-5
    assert int(ours.num_batches_tracked) == 3
