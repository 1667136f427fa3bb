"""Batch norm kernels and layers: naive-vs-fast (BN 2.1–2.6 literally), gradcheck, fused BN + activation,
numba vs NumPy, dtypes, buffers and errors."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop.nn as nn
from deltaprop import enable_grad, no_grad
from deltaprop.errors import DTypeError, NonFiniteError, ShapeError
from deltaprop.runtime import jit as _numba
from deltaprop.functional import norm as F
from deltaprop.functional import norm_fused as FF
from deltaprop.gradcheck import check_module

from conftest import rel_err


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 5), (1, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_naive_vs_fast(shape, training, affine, rng):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 0.5
    g, b = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    rm1, rv1 = rm.copy(), rv.copy()
    y, cache = F.batch_norm_forward(x, g, b, rm1, rv1, training, 0.1, 1e-5)
    yn, cn, (rmn, rvn) = F.batch_norm_forward_naive(x, g, b, rm, rv, training, 0.1, 1e-5)
    d = rng.standard_normal(shape)
    dx, dg, db = F.batch_norm_backward(d, cache)
    dxn, dgn, dbn = F.batch_norm_backward_naive(d, cn)
    assert rel_err(y, yn) < 1e-13 and rel_err(dx, dxn) < 1e-12
    assert rel_err(rm1, rmn) < 1e-14 and rel_err(rv1, rvn) < 1e-14
    if affine:
        assert rel_err(dg, dgn) < 1e-13 and rel_err(db, dbn) < 1e-13
    else:
        assert dg is None and db is None


def test_compact_form_equals_bn_2_1_to_2_3(rng):
    """bn_grad_coefs + bn_input_grad (the compact form) against the literal ∂C/∂σ², ∂C/∂μ, ∂C/∂z_i chain on
    one channel, with γ ≠ 1 (∂C/∂ẑ = γ·∂C/∂y)."""
    z = rng.standard_normal(50) * 3 + 1
    dy, gamma = rng.standard_normal(50), 1.7
    dzhat = gamma * dy
    eps, m = 1e-5, z.size
    mu, var = z.mean(), z.var()
    dvar = np.sum(dzhat * (z - mu) * -0.5 * (var + eps) ** -1.5)                                   # BN 2.1
    dmu = np.sum(dzhat * -1 / np.sqrt(var + eps)) + dvar * (-2 / m) * np.sum(z - mu)               # BN 2.2
    dz = dzhat / np.sqrt(var + eps) + dvar * 2 * (z - mu) / m + dmu / m                             # BN 2.3
    inv = np.array([1 / np.sqrt(var + eps)])
    xhat = ((z - mu) * inv).reshape(1, 1, -1)
    k1 = gamma * inv
    k2, k3 = F.bn_grad_coefs(k1, np.array([np.sum(dy * xhat)]), np.array([dy.sum()]), m)
    ours = F.bn_input_grad(dy.reshape(1, 1, -1), xhat, k1, k2, k3)
    assert rel_err(ours.ravel(), dz) < 1e-13
    # the same with z − μ kept instead of ẑ (the fused kernels' cache): inv_std folded into k2
    k2c, k3c = F.bn_grad_coefs(k1, np.array([np.sum(dy * xhat)]), np.array([dy.sum()]), m, inv)
    ours_c = F.bn_input_grad(dy.reshape(1, 1, -1), (z - mu).reshape(1, 1, -1), k1, k2c, k3c)
    assert rel_err(ours_c.ravel(), dz) < 1e-13


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.BatchNorm1d(3), (5, 3)),
    (lambda: nn.BatchNorm1d(3), (3, 3, 4)),
    (lambda: nn.BatchNorm2d(3), (2, 3, 3, 4)),
    (lambda: nn.BatchNorm2d(3, affine=False), (2, 3, 3, 3)),
    (lambda: nn.BatchNormAct2d(3, "leaky", 0.1), (2, 3, 3, 4)),
    (lambda: nn.BatchNormAct2d(3, "relu"), (2, 3, 3, 4)),
])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradcheck(make, shape, mode, numba_mode):
    layer = make().double()
    gen = np.random.default_rng(7)  # not the gradcheck's own seed 0: dout must differ from x
    if layer.affine:
        layer.weight.data[...] = gen.standard_normal(layer.num_features)
        layer.bias.data[...] = gen.standard_normal(layer.num_features)
    layer.running_mean[...] = gen.standard_normal(layer.num_features)
    layer.running_var[...] = gen.random(layer.num_features) + 0.5
    if mode == "eval":
        layer.eval()
    x = gen.standard_normal(shape) * 1.5 + 0.3
    res = check_module(layer, x)
    assert res.ok(1e-6), str(res)


# --- fused BN + activation, numba ----------------------------------------------------------------------

@pytest.mark.parametrize("act,slope", [("leaky", 0.1), ("leaky", 0.01), ("relu", 0.0), ("linear", 0.0),
                                       ("leaky", 1.5)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_equals_bn_then_activation(act, slope, training, rng, numba_mode):
    for dt in (np.float32, np.float64):
        x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(dt)
        d = rng.standard_normal(x.shape).astype(dt)
        bn = nn.BatchNorm2d(4, dtype=dt)
        bn.weight.data[...] = rng.standard_normal(4)
        bn.bias.data[...] = rng.standard_normal(4)
        fused = nn.BatchNormAct2d(4, act, slope, dtype=dt)
        fused.load_state_dict(bn.state_dict())
        seq = nn.Sequential(bn, {"leaky": nn.LeakyReLU(slope), "relu": nn.ReLU(), "linear": nn.Identity()}[act])
        for m in (seq, fused):
            m.train(training)
        with enable_grad():  # eval() keeps no cache otherwise
            y1, y2 = seq(x), fused(x)
        dx1, dx2 = seq.backward(d), fused.backward(d)
        tol = 1e-6 if dt == np.float32 else 1e-14
        assert y2.dtype == dt and dx2.dtype == dt and fused.weight.grad.dtype == dt
        assert rel_err(y2, y1) <= tol and rel_err(dx2, dx1) <= tol
        assert rel_err(fused.weight.grad, bn.weight.grad) <= tol and rel_err(fused.bias.grad, bn.bias.grad) <= tol
        assert rel_err(fused.running_mean, bn.running_mean) <= tol
        assert rel_err(fused.running_var, bn.running_var) <= tol


@pytest.mark.parametrize("act", ["leaky", "relu", "linear"])
@pytest.mark.parametrize("shape", [(4, 5, 6, 7), (4, 8, 32, 40)], ids=["serial", "parallel"])
def test_numba_fused_is_bitwise_numpy(act, shape, rng):
    """Both routes of the numba kernels (the second shape has at least PARALLEL_MIN elements: prange)."""
    pytest.importorskip("numba")
    assert (np.prod(shape) >= _numba.PARALLEL_MIN) == (shape[1] == 8)
    ch = shape[1]
    before = _numba.enabled()
    try:
        for dt in (np.float32, np.float64):
            for training in (True, False):
                x = (rng.standard_normal(shape) * 2 + 1).astype(dt)
                g, b = rng.standard_normal(ch).astype(dt), rng.standard_normal(ch).astype(dt)
                rm, rv = rng.standard_normal(ch).astype(dt), (rng.random(ch) + 0.5).astype(dt)
                d = rng.standard_normal(x.shape).astype(dt)
                res = []
                for flag in (False, True):
                    _numba.set_enabled(flag)
                    r1, r2 = rm.copy(), rv.copy()
                    y, cache = FF.batchnorm_act_forward(x, g, b, r1, r2, training, 0.1, 1e-5, act, 0.1)
                    res.append((y,) + FF.batchnorm_act_backward(d, cache) + (r1, r2))
                for a, c in zip(*res):
                    assert a.dtype == dt and np.array_equal(a, c)
    finally:
        _numba.set_enabled(before)


@pytest.mark.parametrize("act", ["leaky", "relu", "linear"])
@pytest.mark.parametrize("training", [True, False])
def test_fused_module_backward_equals_functional(act, training, rng, numba_mode):
    """The module's backward consumes its cache (the NumPy path scales z − μ in place): the same numbers as
    the functional backward, which leaves the cache intact."""
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(np.float32)
    d = rng.standard_normal(x.shape).astype(np.float32)
    layer = nn.BatchNormAct2d(4, act, 0.1)
    layer.weight.data[...] = rng.standard_normal(4)
    layer.bias.data[...] = rng.standard_normal(4)
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    layer.train(training)
    with enable_grad():
        y = layer(x)
    dx = layer.backward(d)
    g, b = layer.weight.data, layer.bias.data
    y2, cache = FF.batchnorm_act_forward(x, g, b, rm, rv, training, 0.1, 1e-5, act, 0.1)
    dx2, dg2, db2 = FF.batchnorm_act_backward(d, cache)
    dx3, dg3, db3 = FF.batchnorm_act_backward(d, cache)  # the cache is still whole
    assert np.array_equal(y, y2) and np.array_equal(dx, dx2) and np.array_equal(dx2, dx3)
    assert np.array_equal(layer.weight.grad, dg2) and np.array_equal(layer.bias.grad, db2)
    assert np.array_equal(dg2, dg3) and np.array_equal(db2, db3)


# --- layer behaviour -----------------------------------------------------------------------------------

def test_float32_stays_float32(rng, numba_mode):
    for layer, shape in [(nn.BatchNorm2d(4), (2, 4, 3, 3)), (nn.BatchNorm1d(4), (5, 4)),
                         (nn.BatchNormAct2d(4, "leaky", 0.1), (2, 4, 3, 3))]:
        x = rng.standard_normal(shape).astype(np.float32)
        y = layer(x)
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == np.float32
        assert layer.running_mean.dtype == layer.running_var.dtype == np.float32
        layer.eval()
        assert layer(x).dtype == np.float32


def test_buffers_and_state_dict(rng):
    bn = nn.BatchNorm2d(3)
    for _ in range(3):
        bn(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["num_batches_tracked"] == 3 and sd["num_batches_tracked"].dtype == np.int64
    other = nn.BatchNorm2d(3)
    other.load_state_dict(sd)
    assert np.array_equal(other.running_var, bn.running_var) and int(other.num_batches_tracked) == 3
    bn.eval()
    before = bn.running_mean.copy()
    bn(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    assert np.array_equal(bn.running_mean, before) and int(bn.num_batches_tracked) == 3
    bn.reset_running_stats()
    assert not bn.running_mean.any() and (bn.running_var == 1).all() and int(bn.num_batches_tracked) == 0
    assert "num_batches_tracked" in bn.state_dict()
    assert list(nn.BatchNorm1d(3, track_running_stats=False).state_dict()) == ["weight", "bias"]
    assert list(nn.BatchNorm1d(3, affine=False).state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]


def test_eval_without_cache_and_no_grad(rng):
    bn = nn.BatchNorm2d(2).eval()
    x = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    bn(x)
    with pytest.raises(Exception, match="without a cached forward"):
        bn.backward(np.ones_like(x))
    bn.train()
    with no_grad():
        bn(x)
    assert int(bn.num_batches_tracked) == 1  # statistics move even without a cache, as PyTorch


def test_get_config_round_trip():
    for layer in [nn.BatchNorm2d(4, 1e-3, None, False, True), nn.BatchNorm1d(3, momentum=0.3),
                  nn.BatchNormAct2d(5, "relu", 0.0, 1e-4, 0.2)]:
        again = type(layer)(**layer.get_config())
        assert repr(again) == repr(layer)


def test_errors(rng):
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm2d(3)(np.zeros((1, 3, 1, 1), np.float32))
    nn.BatchNorm2d(3).eval()(np.zeros((1, 3, 1, 1), np.float32))  # fine in eval: running statistics
    with pytest.raises(ShapeError, match="input has 4 channels"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(ShapeError, match="expected 4D input"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ShapeError, match="expected 2D or 3D input"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(DTypeError, match="float64"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 2, 2)))
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    x[1, 2, 0, 1] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        nn.BatchNorm2d(3)(x)
    with pytest.raises(ValueError, match="activation"):
        nn.BatchNormAct2d(3, "swish")


# --- which path computes a call (the choices of the code before issue 26's redesign) -------------------------

def _chosen(op: str, *args, **kwargs) -> str:
    """The name of the variant that computes ``op(*args, **kwargs)`` now, or "reference"."""
    from deltaprop import dispatch
    for v in dispatch.variants(op):
        if dispatch.enabled(v.key) and v.applies(*args, **kwargs):
            return v.name
    return "reference"


@pytest.mark.parametrize("use_numba", [False, True], ids=["numpy", "numba"])
def test_each_pass_runs_where_it_ran_before(use_numba, rng):
    if use_numba:
        pytest.importorskip("numba")
    x3 = rng.standard_normal((4, 3, 20)).astype(np.float32)
    c = np.ones(3, np.float32)
    before = _numba.enabled()
    _numba.set_enabled(use_numba)
    try:
        assert _chosen("channel_sum", x3) == _chosen("channel_dot", x3, x3) == "blas"      # BLAS sums, always
        assert _chosen("channel_center", x3, c) == "split"     # the plain batch norm's z − μ: NumPy (fused: numba)
        assert _chosen("bn_input_grad", x3, x3, c, c, c) == "split"        # the plain batch norm's BN 2.3: NumPy
        assert _chosen("affine_act", x3[..., None], c, c, "leaky") == ("numba" if use_numba else "split")
        assert _chosen("batch_norm", x3, c, c) == "reference"
        fused = "numba" if use_numba else "numpy fused"
        assert _chosen("batchnorm_act", x3, c, c) == fused
        assert _chosen("batchnorm_act", x3, None, None) == "reference"    # no γ: batch norm, then σ
        for act, slope in (("leaky", 0.1), ("relu", 0.0), ("linear", 0.0), ("leaky", -0.5)):
            _, cache = FF.batchnorm_act_forward(x3.reshape(4, 3, 4, 5), c, c, activation=act, negative_slope=slope)
            assert type(cache).__name__ == ("NumbaCache" if use_numba else "NumpyCache")
    finally:
        _numba.set_enabled(before)


@pytest.mark.parametrize("make,shape", [(lambda: nn.BatchNorm2d(3), (4, 3, 6, 8)),
                                        (lambda: nn.BatchNormAct2d(3, "leaky", 0.1), (4, 3, 6, 8)),
                                        (lambda: nn.BatchNormActPool2d(3, "relu"), (4, 3, 6, 40))])
def test_the_references_alone_give_the_fast_paths_numbers(make, shape, rng, numba_mode):
    """``dispatch.reference_only()``: every op by its textbook reference (NumPy sums, no fused pass, no split, no
    numba): the numbers of the fast paths to float32 rounding, and no variant's cache is left."""
    from deltaprop import dispatch
    from deltaprop.functional.norm import BNCache
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    runs = []
    for reference in (False, True):
        layer = make()
        layer.weight.data[...] = np.linspace(0.5, 1.5, 3)
        layer.bias.data[...] = np.linspace(-0.2, 0.3, 3)
        with dispatch.reference_only(reference):
            y = layer(x)
            if reference:
                inner = layer._cache
                while not isinstance(inner, BNCache):     # the parts' caches, down to batch norm's
                    inner = inner[0]
            dx = layer.backward(np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape))
        runs.append((y, dx, layer.weight.grad, layer.bias.grad, layer.running_mean, layer.running_var))
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
