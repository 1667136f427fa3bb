"""Which variant computes a call of pooling, ReLU, cross-entropy, the SGD update and the non-finite count: the
conditions the kernels were chosen by before the references and the variants were separated (issue 26), so the
speed is the same; and each variant leaves its own cache type, so its backward follows it."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

import deltaprop  # noqa: F401  (registers the variants)
from conftest import require_numba
from deltaprop import backend, dispatch, nn, optim
from deltaprop.fast import loss_numba as LN
from deltaprop.fast import pool_numba as PNB
from deltaprop.fast import split as _split
from deltaprop.functional import activation as A
from deltaprop.functional import loss as L
from deltaprop.functional import pool as P
from deltaprop.functional import update as U
from deltaprop.runtime import jit as _numba


def chosen(op: str, *args, **kwargs) -> Optional[str]:
    """The name of the variant that computes ``op(*args, **kwargs)`` now, None for the reference."""
    for v in dispatch.variants(op):
        if dispatch.enabled(v.key) and v.applies(*args, **kwargs):
            return v.name
    return None


@pytest.fixture
def numba_off():
    before = _numba.enabled()
    _numba.set_enabled(False)
    yield
    _numba.set_enabled(before)


X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)


# --- pooling ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,numba", [
    ((2,), {}, True), ((2, 2, 0), {}, True), (((2, 2), (2, 2)), {}, True),
    ((2, 2, (0, 1, 0, 1)), {}, True),                    # padding no window reaches (8 is even)
    ((2,), dict(ceil_mode=True), True),                  # ceil mode adds no window on even sides
    ((3, 2, 1), {}, False), ((2, 1), {}, False), ((2, 2, 1), {}, False), ((2, 2), dict(dilation=2), False),
])
def test_max_pool_takes_numba_for_2x2_stride_2_windows_inside_the_input(args, kwargs, numba):
    require_numba()
    assert chosen("max_pool2d", X, *args, **kwargs) == ("numba 2x2/2" if numba else "batch split")
    _, cache = P.max_pool2d_forward(X, *args, **kwargs)
    assert type(cache) is (PNB.MaxPoolNumbaCache if numba else P.MaxPoolCache)
    # the NumPy passes go through the batch split, which runs them whole while numba is on
    assert _split.ranges(X.shape[0], 1 << 30) is None


def test_odd_sides_with_padding_leave_numba(rng):
    require_numba()
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    assert chosen("max_pool2d", x, 2) == "numba 2x2/2"               # the last row and column in no window
    assert chosen("max_pool2d", x, 2, 2, (0, 1, 0, 1)) == "batch split"  # the padded row is read


def test_without_numba_max_pool_is_the_batch_split_and_the_others_the_reference(numba_off):
    assert chosen("max_pool2d", X, 2) == "batch split"
    assert chosen("avg_pool2d", X, 2) is None and chosen("lp_pool2d", X, 2.0, 2) is None
    assert type(P.avg_pool2d_forward(X, 2)[1]) is P.AvgPoolCache
    assert type(P.lp_pool2d_forward(X, 2.0, 2)[1]) is P.LpPoolCache


def test_avg_and_lp_pooling_take_numba_for_2x2_stride_2():
    require_numba()
    assert chosen("avg_pool2d", X, 2) == "numba 2x2/2"
    assert chosen("avg_pool2d", X, 2, count_include_pad=False) == "numba 2x2/2"
    assert chosen("avg_pool2d", X, 3, 2, 1) is None
    assert type(P.avg_pool2d_forward(X, 2)[1]) is PNB.AvgPoolNumbaCache
    for p in (1, 2, 3, 1.5):
        assert chosen("lp_pool2d", X, p, 2) == "numba 2x2/2"
        assert type(P.lp_pool2d_forward(X, p, 2)[1]) is PNB.LpPoolNumbaCache
    assert chosen("lp_pool2d", X, 2.0, 3, 2) is None
    # p = ∞ is max pooling of |x|: the reference, whose max pooling takes the numba variant
    assert chosen("lp_pool2d", X, float("inf"), 2) is None
    _, cache = P.lp_pool2d_forward(X, float("inf"), 2)
    assert type(cache) is P.LpInfPoolCache and type(cache.max) is PNB.MaxPoolNumbaCache


def test_a_pooling_cache_keeps_its_backward_when_numba_is_switched_off(rng):
    """A numba cache is differentiated by the kernels (their serial build) after numba is switched off, and gives
    the reference's numbers."""
    require_numba()
    d = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y, cache = P.max_pool2d_forward(X, 2)
    ya, cache_a = P.avg_pool2d_forward(X, 2)
    want = P.max_pool2d_backward.reference(d, cache), P.avg_pool2d_backward.reference(d, cache_a)
    before = _numba.enabled()
    _numba.set_enabled(False)
    try:
        got = P.max_pool2d_backward(d, cache), P.avg_pool2d_backward(d, cache_a)
    finally:
        _numba.set_enabled(before)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


# --- ReLU ----------------------------------------------------------------------------------------------------

def test_relu_takes_numba_for_contiguous_float_arrays(rng):
    require_numba()
    z = rng.standard_normal((40, 30)).astype(np.float32)
    assert chosen("relu", z) == "numba one pass"
    assert chosen("relu", z.astype(np.float64)) == "numba one pass"
    assert chosen("relu", z[:, ::2]) is None                          # not contiguous
    assert chosen("relu", z.astype(np.float16)) is None
    with dispatch.reference_only():
        assert chosen("relu", z) is None
        y, cache = A.relu_forward(z)
    assert np.array_equal(y, A.relu_forward(z)[0])


def test_every_relu_cache_goes_to_the_one_pass_backward(rng, monkeypatch):
    """The fused batch-norm kernels build a ReluCache themselves: its backward is still the one-pass kernel."""
    require_numba()
    from deltaprop.fast import elementwise_numba as EW
    calls = []
    real = EW.relu_backward
    monkeypatch.setattr(EW, "relu_backward", lambda dy, mask: calls.append(dy.shape) or real(dy, mask))
    z = rng.standard_normal((40, 30)).astype(np.float32)
    dy = rng.standard_normal(z.shape).astype(np.float32)
    assert np.array_equal(A.relu_backward(dy, A.ReluCache(z > 0)), dy * (z > 0))
    assert calls == [(40, 30)]
    assert np.array_equal(A.relu_backward(dy, (z > 0,)), dy * (z > 0))  # a plain tuple: the reference
    assert calls == [(40, 30)]


def test_without_numba_relu_and_the_count_are_the_references(numba_off, rng):
    z = rng.standard_normal((40, 30)).astype(np.float32)
    assert chosen("relu", z) is None and chosen("count_nonfinite", z) is None


# --- cross-entropy -------------------------------------------------------------------------------------------

def test_cross_entropy_takes_numba_for_plain_labels(rng):
    require_numba()
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    assert chosen("cross_entropy_checked", x, y, -100, "mean") == "numba one pass"
    assert chosen("cross_entropy_checked", x, y, -100, "sum") == "numba one pass"
    assert chosen("cross_entropy_checked", x, y.astype(np.int32)) == "numba one pass"
    assert chosen("cross_entropy_checked", x, y, -100, "none") is None
    assert chosen("cross_entropy_checked", x[None], y[None]) is None
    crit = nn.CrossEntropyLoss()
    crit(x, y)
    assert type(crit._cache[0]) is LN.CrossEntropyFastCache
    for kw in (dict(weight=np.ones(4, np.float32)), dict(label_smoothing=0.1), dict(reduction="none")):
        crit = nn.CrossEntropyLoss(**kw)
        crit(x, y)
        assert type(crit._cache[0]) is L.CrossEntropyLabelCache


def test_without_numba_cross_entropy_checks_then_runs_the_reference(numba_off, rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    crit = nn.CrossEntropyLoss()
    value = crit(x, y)
    assert type(crit._cache[0]) is L.CrossEntropyLabelCache
    assert value == L.cross_entropy_forward(x, y)[0]


# --- the SGD update ------------------------------------------------------------------------------------------

def test_sgd_update_takes_numba_from_the_second_step_with_momentum(rng):
    require_numba()
    w, g, b = (rng.standard_normal((7, 5)).astype(np.float32) for _ in range(3))
    assert chosen("sgd_update", w, g, b, 0.1, 0.9) == "numba fused momentum"
    assert chosen("sgd_update", w, g, b, 0.1, momentum=0.9, nesterov=True) == "numba fused momentum"
    assert chosen("sgd_update", w, g, None, 0.1, 0.9) is None                 # the first step makes the buffer
    assert chosen("sgd_update", w, g, b, 0.1, 0.0) is None                    # no momentum
    assert chosen("sgd_update", w, g.astype(np.float64), b, 0.1, 0.9) is None  # mixed dtypes
    assert chosen("sgd_update", w[:, ::2], g[:, ::2], b[:, ::2], 0.1, 0.9) is None
    assert chosen("sgd_update", w, g, b[:3], 0.1, 0.9) is None


def test_sgd_converts_a_buffer_of_another_dtype_then_takes_the_kernel(rng, monkeypatch):
    """A model converted with .double() after a float32 step: the buffer follows the parameter's dtype."""
    require_numba()
    from deltaprop.fast import sgd_numba as SN
    p = nn.Parameter(rng.standard_normal(6).astype(np.float64))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(6)
    opt.step()
    opt.state[p]["momentum_buffer"] = opt.state[p]["momentum_buffer"].astype(np.float32)
    calls = []
    real = SN._scalars
    monkeypatch.setattr(SN, "_scalars", lambda *a: calls.append(a[0]) or real(*a))
    opt.step()
    assert calls == [np.dtype(np.float64)] and opt.state[p]["momentum_buffer"].dtype == np.float64


def test_sgd_update_reference_is_update_1_to_4():
    """update-1..4 by hand, float64: w ← w − α(g + λw + γ·b) with Nesterov, b ← γb + g (dampening 0)."""
    w, g, b = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.2])
    w0, b0 = w.copy(), b.copy()
    gd = g + 0.01 * w0
    b_want = 0.9 * b0 + gd
    w_want = w0 - 0.1 * (gd + 0.9 * b_want)
    w_out, b_out = U.sgd_update.reference(w, g, b, 0.1, 0.9, 0.0, 0.01, True, False)
    assert w_out is w and b_out is b
    np.testing.assert_allclose(w, w_want, rtol=1e-15)
    np.testing.assert_allclose(b, b_want, rtol=1e-15)
    w2, b2 = U.sgd_update.reference(w0.copy(), g, None, 0.1)                # no momentum: plain update-1
    assert b2 is None and np.array_equal(w2, w0 - 0.1 * g)


# --- the non-finite count ------------------------------------------------------------------------------------

def test_nonfinite_count_takes_numba_for_contiguous_float_arrays(rng):
    require_numba()
    x = rng.standard_normal((4, 3))
    assert chosen("count_nonfinite", x) == "numba exponent scan"
    assert chosen("count_nonfinite", x.astype(np.float32)) == "numba exponent scan"
    assert chosen("count_nonfinite", x[:, ::2]) is None
    assert chosen("count_nonfinite", np.zeros((0, 3))) is None
    assert backend.count_nonfinite(np.zeros((0, 3))) == 0
