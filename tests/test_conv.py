"""Convolution kernels (docs/equations.md §3): PyTorch parity, naive-vs-fast over a pairwise covering grid,
the seed-001 worked example, convolution vs cross-correlation mode, untied bias, numba vs NumPy."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
from conftest import rel_err

from deltaprop import dispatch
from deltaprop.fast import conv_chunked as K
from deltaprop.fast import conv_products as P
from deltaprop.runtime import jit as _numba
from deltaprop.functional import conv as C

# --- a pairwise covering sample of the grid ------------------------------------------------------
FACTORS = {
    "kernel": [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (3, 2), (1, 4), (5, 3)],
    "stride": [1, 2, 3, (2, 1)],
    "padding": [0, 1, 2, (1, 2), (0, 1, 2, 0)],
    "dilation": [1, 2, (1, 2)],
    "groups": [1, 2, 3],
    "batch": [1, 2],
    "size": [(9, 9), (11, 10), (10, 13)],
}


def _pairwise_cases(seed: int = 0):
    """Greedy all-pairs: every pair of values of any two factors appears in some case (valid ones only)."""
    names = list(FACTORS)
    rs = np.random.default_rng(seed)

    def pairs(case):
        return {(a, case[a], b, case[b]) for a, b in itertools.combinations(names, 2)}
    need = set()
    for a, b in itertools.combinations(names, 2):
        for va in FACTORS[a]:
            for vb in FACTORS[b]:
                need.add((a, va, b, vb))
    cases = []
    while need:
        best, gain = None, -1
        for _ in range(300):
            case = {k: FACTORS[k][rs.integers(len(FACTORS[k]))] for k in names}
            g = len(pairs(case) & need)
            if g > gain:
                best, gain = case, g
        if gain == 0:  # leftover pairs: build a case around one of them
            a, va, b, vb = sorted(need, key=repr)[0]
            best = {k: FACTORS[k][0] for k in names}
            best[a], best[b] = va, vb
        need -= pairs(best)
        cases.append(best)
    return cases


CASES = _pairwise_cases()


def _arrays(case, rs, dtype=np.float64, bias="tied"):
    g = case["groups"]
    cin, cout = 2 * g, 3 * g if g > 1 else 3
    kh, kw = case["kernel"]
    h, w = case["size"]
    x = rs.standard_normal((case["batch"], cin, h, w)).astype(dtype)
    wt = rs.standard_normal((cout, cin // g, kh, kw)).astype(dtype)
    b = rs.standard_normal(cout).astype(dtype)
    return x, wt, b


def _args(case):
    return case["stride"], case["padding"], case["dilation"], case["groups"]


def _torch_conv(torch, x, w, b, stride, padding, dilation, groups, mode="cross_correlation"):
    """PyTorch's conv2d with our padding conventions (4-tuple via F.pad) and our true-convolution mode."""
    import torch.nn.functional as TF
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    if isinstance(padding, tuple) and len(padding) == 4:
        t, bo, le, ri = padding
        xin, pad = TF.pad(xt, (le, ri, t, bo)), 0
    else:
        xin, pad = xt, padding
    kern = torch.flip(wt, dims=(2, 3)) if mode == "convolution" else wt
    out = TF.conv2d(xin, kern, bt, stride, pad, dilation, groups)
    return out, xt, wt, bt


def test_grid_is_pairwise_and_small():
    assert 10 <= len(CASES) <= 60
    for a, b in itertools.combinations(FACTORS, 2):
        seen = {(repr(c[a]), repr(c[b])) for c in CASES}
        assert len(seen) == len(FACTORS[a]) * len(FACTORS[b])


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()).replace(" ", ""))
def test_torch_parity_and_naive_grid(case, torch_ref, monkeypatch):
    rs = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, w, b = _arrays(case, rs)
    out, cache = C.conv2d_forward(x, w, b, *_args(case))
    dout = rs.standard_normal(out.shape)
    dx, dw, db = C.conv2d_backward(dout, cache)
    # the reference (one product) and, with one group, the per-sample products of a thin layer agree with
    # whatever the dispatch chose
    with dispatch.reference_only():
        o2, c2 = C.conv2d_forward(x, w, b, *_args(case))
        others = [(o2,) + C.conv2d_backward(dout, c2)]
    assert type(c2) is C.ConvCache
    if case["groups"] == 1:
        monkeypatch.setattr(P, "THIN_FILTERS", 10**6)
        monkeypatch.setattr(P, "THIN_POSITIONS", 0)
        o3, c3 = C.conv2d_forward(x, w, b, *_args(case))
        assert isinstance(c3, P.PerSampleCache) and P.thin(c3.geometry)
        others.append((o3,) + C.conv2d_backward(dout, c3))
    for other in others:
        for mine, theirs in zip((out, dx, dw, db), other):
            assert rel_err(mine, theirs) <= 1e-12
    # PyTorch: outputs and every gradient with the same weights
    ot, xt, wt, bt = _torch_conv(torch_ref, x, w, b, *_args(case))
    ot.backward(torch_ref.tensor(dout))
    for name, mine, ref in [("out", out, ot), ("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)]:
        assert mine.shape == tuple(ref.shape), name
        assert rel_err(mine, ref.detach().numpy()) <= 1e-10, name
    # the naive loops written from Conv-1/2/3
    on, cn = C.conv2d_forward_naive(x, w, b, *_args(case))
    dxn, dwn, dbn = C.conv2d_backward_naive(dout, cn)
    for name, mine, ref in [("out", out, on), ("dx", dx, dxn), ("dw", dw, dwn), ("db", db, dbn)]:
        assert rel_err(mine, ref) <= 1e-12, name


@pytest.mark.parametrize("case", CASES[::4])
def test_convolution_mode_parity(case, torch_ref):
    """mode='convolution' equals PyTorch's conv2d with the flipped kernel, gradients included."""
    rs = np.random.default_rng(7)
    x, w, b = _arrays(case, rs)
    out, cache = C.conv2d_forward(x, w, b, *_args(case), mode="convolution")
    dout = rs.standard_normal(out.shape)
    dx, dw, db = C.conv2d_backward(dout, cache)
    ot, xt, wt, bt = _torch_conv(torch_ref, x, w, b, *_args(case), mode="convolution")
    ot.backward(torch_ref.tensor(dout))
    for mine, ref in [(out, ot), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)]:
        assert rel_err(mine, ref.detach().numpy()) <= 1e-10
    on, cn = C.conv2d_forward_naive(x, w, b, *_args(case), mode="convolution")
    dxn, dwn, dbn = C.conv2d_backward_naive(dout, cn)
    for mine, ref in [(out, on), (dx, dxn), (dw, dwn), (db, dbn)]:
        assert rel_err(mine, ref) <= 1e-12


def test_no_bias_and_skip_input_grad(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    out, cache = C.conv2d_forward(x, w, None, 1, 1)
    dx, dw, db = C.conv2d_backward(np.ones_like(out), cache, need_dx=False)
    assert dx is None and db is None and dw.shape == w.shape
    on, cn = C.conv2d_forward_naive(x, w, None, 1, 1)
    assert rel_err(out, on) < 1e-12
    assert rel_err(dw, C.conv2d_backward_naive(np.ones_like(out), cn)[1]) < 1e-12


# --- seed 001's worked example -----------------------------------------------------------------

@pytest.mark.parametrize("naive", [False, True])
def test_seed001_worked_example(naive):
    """3×3 input X, 2×2 filter F, 2×2 output: ∂E/∂F = X ⋆ δ and ∂E/∂X = full(δ ⋆ rot180(F)), entry by entry."""
    rs = np.random.default_rng(1)
    X, Fk, D = rs.standard_normal((3, 3)), rs.standard_normal((2, 2)), rs.standard_normal((2, 2))
    fwd, bwd = ((C.conv2d_forward_naive, C.conv2d_backward_naive) if naive
                else (C.conv2d_forward, C.conv2d_backward))
    out, cache = fwd(X[None, None], Fk[None, None], np.zeros(1))
    dX, dF, _ = bwd(D[None, None], cache)
    dX, dF = dX[0, 0], dF[0, 0]

    def x(i, j): return X[i - 1, j - 1]
    def f(i, j): return Fk[i - 1, j - 1]
    def d(i, j): return D[i - 1, j - 1]
    # O11 = F11X11 + F12X12 + F21X21 + F22X22
    o11 = f(1, 1) * x(1, 1) + f(1, 2) * x(1, 2) + f(2, 1) * x(2, 1) + f(2, 2) * x(2, 2)
    assert out[0, 0, 0, 0] == pytest.approx(o11)
    # ∂E/∂F = X ⋆ ∂E/∂O
    for a in (1, 2):
        for b in (1, 2):
            expect = d(1, 1) * x(a, b) + d(1, 2) * x(a, b + 1) + d(2, 1) * x(a + 1, b) + d(2, 2) * x(a + 1, b + 1)
            assert dF[a - 1, b - 1] == pytest.approx(expect, rel=1e-12)
    # ∂E/∂X = full(∂E/∂O ⋆ rot180(F)), as docs/equations.md §3 writes it
    expect_dx = {
        (1, 1): d(1, 1) * f(1, 1),
        (1, 2): d(1, 1) * f(1, 2) + d(1, 2) * f(1, 1),
        (1, 3): d(1, 2) * f(1, 2),
        (2, 1): d(1, 1) * f(2, 1) + d(2, 1) * f(1, 1),
        (2, 2): d(1, 1) * f(2, 2) + d(1, 2) * f(2, 1) + d(2, 1) * f(1, 2) + d(2, 2) * f(1, 1),
        (2, 3): d(1, 2) * f(2, 2) + d(2, 2) * f(1, 2),
        (3, 1): d(2, 1) * f(2, 1),
        (3, 2): d(2, 1) * f(2, 2) + d(2, 2) * f(2, 1),
        (3, 3): d(2, 2) * f(2, 2),
    }
    for (i, j), v in expect_dx.items():
        assert dX[i - 1, j - 1] == pytest.approx(v, rel=1e-12, abs=1e-15), (i, j)


# --- convolution vs cross-correlation: the same network up to the flip ----------------------------

def test_convolution_vs_cross_correlation_training():
    """From kernels that are each other's flip, 100 float64 SGD steps through two conv layers keep them
    each other's flip and give the same losses (seed 003)."""
    rs = np.random.default_rng(3)
    x = rs.standard_normal((4, 2, 7, 7))
    t = rs.standard_normal((4, 2, 3, 3))
    w1, w2 = rs.standard_normal((3, 2, 3, 3)) * 0.3, rs.standard_normal((2, 3, 3, 2)) * 0.3
    b1, b2 = rs.standard_normal(3) * 0.1, rs.standard_normal(2) * 0.1
    flip = lambda a: a[:, :, ::-1, ::-1].copy()  # noqa: E731
    nets = {"cross_correlation": [w1.copy(), b1.copy(), w2.copy(), b2.copy()],
            "convolution": [flip(w1), b1.copy(), flip(w2), b2.copy()]}
    losses = {m: [] for m in nets}
    lr = 0.05
    for _ in range(100):
        for mode, (k1, c1, k2, c2) in nets.items():
            z1, ca1 = C.conv2d_forward(x, k1, c1, 1, 0, 1, 1, mode)
            a1 = np.tanh(z1)
            z2, ca2 = C.conv2d_forward(a1, k2, c2, 2, 1, 1, 1, mode)
            r = z2 - t
            losses[mode].append(0.5 * float(np.sum(r * r)) / r.size)
            dx2, dk2, dc2 = C.conv2d_backward(r / r.size, ca2)
            _, dk1, dc1 = C.conv2d_backward(dx2 * (1 - a1 * a1), ca1, need_dx=False)
            for p, gp in zip(nets[mode], (dk1, dc1, dk2, dc2)):
                p -= lr * gp
    cc, cv = nets["cross_correlation"], nets["convolution"]
    assert losses["cross_correlation"][-1] < 0.7 * losses["cross_correlation"][0]  # it did train
    np.testing.assert_allclose(losses["cross_correlation"], losses["convolution"], rtol=1e-10, atol=0)
    assert np.max(np.abs(cc[0] - flip(cv[0]))) <= 1e-10
    assert np.max(np.abs(cc[2] - flip(cv[2]))) <= 1e-10
    assert np.max(np.abs(cc[1] - cv[1])) <= 1e-10 and np.max(np.abs(cc[3] - cv[3])) <= 1e-10
    # and the kernels did move: the two modes really differ on the same, unflipped kernel
    assert np.max(np.abs(cc[0] - w1)) > 1e-2
    za, _ = C.conv2d_forward(x, w1, b1, mode="convolution")
    zb, _ = C.conv2d_forward(x, w1, b1)
    assert np.max(np.abs(za - zb)) > 1e-3


# --- untied bias ------------------------------------------------------------------------------------

@pytest.mark.parametrize("thin", [True, False])
def test_untied_bias_both_product_paths(rng, monkeypatch, thin):
    """Untied bias through the per-sample products (few filters, ≥ 64 positions) and the reference's one product."""
    monkeypatch.setattr(P, "THIN_FILTERS", 10**6 if thin else 0)
    x = rng.standard_normal((2, 2, 9, 10))
    w = rng.standard_normal((3, 2, 2, 3))
    b = rng.standard_normal((3, 8, 8))
    out, cache = C.conv2d_forward(x, w, b)
    assert P.thin(cache.geometry) == thin and isinstance(cache, P.PerSampleCache) == thin
    on, cn = C.conv2d_forward_naive(x, w, b)
    dout = rng.standard_normal(out.shape)
    for mine, ref in zip((out,) + C.conv2d_backward(dout, cache), (on,) + C.conv2d_backward_naive(dout, cn)):
        assert rel_err(mine, ref) < 1e-12
    np.testing.assert_allclose(C.conv2d_backward(dout, cache)[2], dout.sum(0), rtol=1e-12)


def test_untied_bias_gradient_is_delta(rng):
    """∂C/∂b[f,i,j] = Σ_n δ[n,f,i,j] (seed 003's alternative); fast = naive (gradcheck: test_conv_layers)."""
    x = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((3, 2, 2, 3))
    b = rng.standard_normal((3, 2, 2))  # stride 2, pad 0: Ho = 2, Wo = 2
    out, cache = C.conv2d_forward(x, w, b, 2, 0)
    assert out.shape == (2, 3, 2, 2)
    on, _ = C.conv2d_forward_naive(x, w, b, 2, 0)
    assert rel_err(out, on) < 1e-12
    dout = rng.standard_normal(out.shape)
    _, _, db = C.conv2d_backward(dout, cache)
    np.testing.assert_allclose(db, dout.sum(0), rtol=1e-12)


# --- numba and NumPy paths give the same numbers ------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_numba_equals_numpy(case):
    pytest.importorskip("numba")
    rs = np.random.default_rng(5)
    x, w, b = _arrays(case, rs, dtype=np.float32)
    res = {}
    was = _numba.enabled()
    try:
        for flag in (False, True):
            _numba.set_enabled(flag)
            assert _numba.enabled() == flag
            out, cache = C.conv2d_forward(x, w, b, *_args(case))
            dx, dw, db = C.conv2d_backward(np.cos(out), cache)
            res[flag] = (out, dx, dw, db)
    finally:
        _numba.set_enabled(was)
    for a, b_ in zip(res[False], res[True]):
        assert a.dtype == np.float32 and np.array_equal(a, b_)


def test_float32_stays_float32(rng, torch_ref):
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out, cache = C.conv2d_forward(x, w, b, 2, 1, 1, 2)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = C.conv2d_backward(dout, cache)
    assert {a.dtype for a in (out, dx, dw, db)} == {np.dtype(np.float32)}
    ot, xt, wt, bt = _torch_conv(torch_ref, x, w, b, 2, 1, 1, 2)
    ot.backward(torch_ref.tensor(dout))
    for mine, ref in [(out, ot), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)]:
        assert rel_err(mine, ref.detach().numpy()) <= 1e-4


@pytest.mark.parametrize("mode", ["cross_correlation", "convolution"])
@pytest.mark.parametrize("keep_cols", [True, False])
@pytest.mark.parametrize("wide", [True, False])
def test_weight_gradient_both_product_orders(rng, monkeypatch, mode, keep_cols, wide):
    """Conv-3 as δ @ colsᵀ (a wide weight, written in place: the reference) or (cols @ δᵀ)ᵀ (a thin one: the
    transposed-product variant): both equal the naive loops, on one product and on the chunked backward (a few
    samples at a time)."""
    monkeypatch.setattr(P, "WIDE_WEIGHT", 0 if wide else 1 << 62)
    monkeypatch.setattr(P, "THIN_FILTERS", 0)                            # the one-product path, not per sample
    if not keep_cols:
        monkeypatch.setattr(K, "COLS_CHUNK_BYTES", 8 * 5 * 9 * 36)         # one sample's columns per chunk
    x, w, b = rng.normal(size=(3, 5, 6, 6)), rng.normal(size=(7, 5, 3, 3)), rng.normal(size=7)
    cols, d = np.empty((45, 108)), np.empty((7, 108))
    assert dispatch.variants("conv2d_weight_grad")[0].applies(cols, d) != wide
    out, cache = C.conv2d_forward(x, w, b, 1, 1, mode=mode, keep_cols=keep_cols)
    assert isinstance(cache, K.ChunkedCache) != keep_cols
    dout = rng.normal(size=out.shape)
    on, cn = C.conv2d_forward_naive(x, w, b, 1, 1, mode=mode)
    for mine, ref in zip((out,) + C.conv2d_backward(dout, cache), (on,) + C.conv2d_backward_naive(dout, cn)):
        assert rel_err(mine, ref) < 1e-12
