"""BatchNormActPool2d (batch norm + activation + 2×2/2 max pooling in one layer): the same numbers as the three
layers in turn (bit for bit, NumPy and numba paths, each of the kernels' routes), gradient check in float64,
PyTorch parity, convbn."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop as dp
import deltaprop.nn as nn
from deltaprop import enable_grad, io, models
from deltaprop.runtime import jit as _numba
from deltaprop.fast import norm_fused as FNF, norm_numba as NB
from deltaprop.functional import norm_fused as F
from deltaprop.gradcheck import check_module
from deltaprop.nn.normalization import BatchNormActPool2d

from conftest import rel_err


# (2, 3, 8, 64), (2, 3, 6, 34) and (2, 4, 64, 80) take the fused numba kernels (pooled width ≥ 16, even H and W;
# the last has at least PARALLEL_MIN elements: their parallel route); the others fall back to the separate
# kernels (pooled width < 16, odd H or W).
SHAPES = [(2, 3, 8, 64), (2, 3, 6, 34), (2, 4, 64, 80), (2, 3, 8, 8), (3, 4, 7, 33), (2, 3, 9, 6)]
ACTS = [("leaky", 0.1), ("relu", 0.0), ("linear", 0.0), ("leaky", 1.5), ("leaky", 0.0), ("leaky", -0.5)]


def _pair(c, act, slope, dt, rng):
    """(BatchNormActPool2d, Sequential(BatchNormAct2d, MaxPool2d(2))) with the same random state."""
    fused = BatchNormActPool2d(c, act, slope, dtype=dt)
    fused.weight.data[...] = rng.standard_normal(c)
    fused.bias.data[...] = rng.standard_normal(c)
    fused.running_mean[...] = rng.standard_normal(c)
    fused.running_var[...] = rng.random(c) + 0.5
    bn = nn.BatchNormAct2d(c, act, slope, dtype=dt)
    bn.load_state_dict(fused.state_dict())
    return fused, nn.Sequential(bn, nn.MaxPool2d(2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("training", [True, False])
def test_same_numbers_as_the_separate_layers(shape, act, slope, training, rng, numba_mode):
    for dt in (np.float32, np.float64):
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(dt)
        x[0, 0, :2, :2] = 0.25  # a tie
        fused, seq = _pair(shape[1], act, slope, dt, rng)
        outs = []
        for m, bn in ((fused, fused), (seq, seq[0])):
            m.train(training)
            with enable_grad():
                y = m(x)
            d = np.linspace(-1, 1, y.size).reshape(y.shape).astype(dt)
            outs.append((y, m.backward(d), bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
        for a, b in zip(*outs):
            assert a.dtype == dt and np.array_equal(a, b)


def test_the_fused_kernels_run_where_they_apply(rng):
    pytest.importorskip("numba")
    before = _numba.enabled()
    try:
        g, b = np.ones(3, np.float32), np.zeros(3, np.float32)
        for flag, shape, slope, kind in [(True, (2, 3, 8, 64), 0.1, NB.FusedPoolCache),
                                         (True, (2, 3, 8, 30), 0.1, NB.NumbaThenPoolCache),
                                         (True, (2, 3, 7, 64), 0.1, NB.NumbaThenPoolCache),
                                         (False, (2, 3, 8, 64), 0.1, FNF.NumpyPoolCache),
                                         (False, (2, 3, 8, 64), -0.5, F.BNActPoolCache)]:
            _numba.set_enabled(flag)
            x = rng.standard_normal(shape).astype(np.float32)
            _, cache = F.batchnorm_act_maxpool2_forward(x, g, b, None, None, True, 0.1, 1e-5, "leaky", slope)
            assert type(cache) is kind, (flag, shape, slope)
    finally:
        _numba.set_enabled(before)


def test_numba_switched_off_between_forward_and_backward(rng):
    pytest.importorskip("numba")
    before = _numba.enabled()
    try:
        x = rng.standard_normal((2, 3, 8, 64)) * 2
        g, b = rng.standard_normal(3), rng.standard_normal(3)
        d = rng.standard_normal((2, 3, 4, 32))
        res = []
        for off_after_forward in (False, True):
            _numba.set_enabled(True)
            _, cache = F.batchnorm_act_maxpool2_forward(x, g, b, None, None, True, 0.1, 1e-5, "leaky", 0.1)
            assert type(cache) is NB.FusedPoolCache
            _numba.set_enabled(not off_after_forward)
            res.append(F.batchnorm_act_maxpool2_backward(d, cache))
        for a, c in zip(*res):
            assert np.array_equal(a, c)
    finally:
        _numba.set_enabled(before)


@pytest.mark.parametrize("act,slope", [("leaky", 0.1), ("relu", 0.0)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck(act, slope, mode, numba_mode):
    gen = np.random.default_rng(7)
    layer = BatchNormActPool2d(2, act, slope).double()
    layer.weight.data[...] = gen.standard_normal(2)
    layer.bias.data[...] = gen.standard_normal(2)
    layer.running_mean[...] = gen.standard_normal(2)
    layer.running_var[...] = gen.random(2) + 0.5
    if mode == "eval":
        layer.eval()
    x = gen.standard_normal((2, 2, 4, 32)) * 1.5 + 0.3  # pooled width 16: the fused numba kernels
    res = check_module(layer, x)
    assert res.ok(1e-6), str(res)


@pytest.mark.parametrize("use_numba", [False, True], ids=["numpy", "numba"])
@pytest.mark.parametrize("act,slope", [("leaky", 0.1), ("relu", 0.0)])
def test_against_torch(torch_ref, rng, use_numba, act, slope):
    # without numba the "numba" variant runs the NumPy path again (never a skip: CI forbids skipped parity tests)
    T = torch_ref.nn
    before = _numba.enabled()
    _numba.set_enabled(use_numba)
    try:
        for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
            ours = BatchNormActPool2d(3, act, slope, dtype=dtype)
            ours.weight.data[...] = rng.standard_normal(3)
            ours.bias.data[...] = rng.standard_normal(3)
            bn = T.BatchNorm2d(3)
            if dtype == np.float64:
                bn = bn.double()
            with torch_ref.no_grad():
                bn.weight.copy_(torch_ref.tensor(ours.weight.data))
                bn.bias.copy_(torch_ref.tensor(ours.bias.data))
            theirs = T.Sequential(bn, T.LeakyReLU(slope) if act == "leaky" else T.ReLU(), T.MaxPool2d(2))
            for shape, training in [((4, 3, 6, 40), True), ((2, 3, 8, 34), True), ((3, 3, 5, 7), True),
                                    ((2, 3, 6, 40), False)]:
                ours.train(training)
                theirs.train(training)
                x = (rng.standard_normal(shape) * 2 + 0.7).astype(dtype)
                xt = torch_ref.tensor(x, requires_grad=True)
                yt = theirs(xt)
                d = rng.standard_normal(tuple(yt.shape)).astype(dtype)
                yt.backward(torch_ref.tensor(d))
                ours.zero_grad()
                with enable_grad():
                    y = ours(x)
                dx = ours.backward(d)
                assert rel_err(y, yt.detach().numpy()) <= tol
                assert rel_err(dx, xt.grad.numpy()) <= tol
                assert rel_err(ours.weight.grad, bn.weight.grad.numpy()) <= tol
                assert rel_err(ours.bias.grad, bn.bias.grad.numpy()) <= tol
                assert rel_err(ours.running_mean, bn.running_mean.numpy()) <= tol
                assert rel_err(ours.running_var, bn.running_var.numpy()) <= tol
                bn.weight.grad = None
                bn.bias.grad = None
    finally:
        _numba.set_enabled(before)


def test_convbn_equals_the_unfused_pool_network(rng, numba_mode):
    """convbn (BatchNormActPool2d blocks) against the same network with BatchNormAct2d and MaxPool2d layers:
    logits, input gradient of the second block and every parameter gradient, bit for bit."""
    dp.manual_seed(0)
    model = models.build("convbn", widths=(4, 8), input_size=64)
    layers = []
    for layer in model:
        if isinstance(layer, BatchNormActPool2d):
            bn = nn.BatchNormAct2d(layer.num_features, layer.activation, layer.negative_slope)
            bn.load_state_dict(layer.state_dict())
            layers += [bn, nn.MaxPool2d(2)]
        else:
            layers.append(layer)
    assert len(layers) == len(model) + 2
    ref = nn.Sequential(*layers)  # shares the conv and linear layers: run one model, then the other
    x = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    res = []
    for m in (model, ref):
        m.zero_grad()
        y = m(x)
        m.backward(np.linspace(-1, 1, y.size).reshape(y.shape).astype(np.float32))
        res.append([y] + [p.grad.copy() for p in m.parameters()])
    assert len(res[0]) == len(res[1])
    for a, b in zip(*res):
        assert np.array_equal(a, b)


def test_convbn_save_and_load(tmp_path, rng):
    dp.manual_seed(0)
    model = models.build("convbn", widths=(4, 8), input_size=32)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    model(x)  # move the running statistics
    model.eval()
    path = io.save_model(tmp_path / "convbn.npz", model)
    back = io.load_model(path)
    back.eval()
    assert isinstance(back[1], BatchNormActPool2d)
    assert np.array_equal(back(x), model(x))
