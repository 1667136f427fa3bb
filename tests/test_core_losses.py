"""Losses (docs/equations.md §6): gradchecks in float64, PyTorch parity (values and ∂C/∂pred, f64 and f32),
naive-vs-fast kernels, upstream gradients for reduction="none", validation errors, the L2 penalty."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

import deltaprop as dp
from deltaprop import nn
from deltaprop.errors import BackwardError, DTypeError, LabelError, NonFiniteError, ShapeError
from deltaprop.functional import loss as F
from deltaprop.functional import loss_binary as FB
from deltaprop.functional import loss_margin as FM
from deltaprop.gradcheck import check_function, check_loss

TOL = {np.float64: 1e-10, np.float32: 1e-4}
REDUCTIONS = ("mean", "sum", "none")


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _labels(rng, shape, c, ignore=None):
    y = rng.integers(0, c, size=shape)
    if ignore is not None:
        y.flat[1] = ignore
    return y


# --- one table of cases: (name, deltaprop loss factory, torch function factory, data factory) --------

def _cases():
    """Each case: id, make_dp(reduction), make_torch(torch, reduction) -> f(pred_t, target_t), make_data(rng)."""
    w4 = np.array([0.5, 2.0, 1.0, 1.5])
    cases = []

    def add(cid, mk, mt, data, reductions=REDUCTIONS):
        for r in reductions:
            cases.append(pytest.param(cid, r, mk, mt, data, id=f"{cid}-{r}"))

    reg = lambda rng: (rng.standard_normal((3, 4)), rng.standard_normal((3, 4)))
    add("mse", lambda r: nn.MSELoss(r), lambda t, r: lambda x, y: t.nn.functional.mse_loss(x, y, reduction=r), reg)
    add("mse_1d", lambda r: nn.MSELoss(r), lambda t, r: lambda x, y: t.nn.functional.mse_loss(x, y, reduction=r),
        lambda rng: (rng.standard_normal(5), rng.standard_normal(5)))

    def half_torch(t, r):
        def f(x, y):
            sq = 0.5 * (x - y) ** 2
            return {"sum": sq.sum(), "mean": sq.sum() / x.shape[0], "none": sq}[r]
        return f
    add("half_sq", lambda r: nn.HalfSquaredError(r), half_torch, reg)

    ce = lambda **kw: (lambda r: nn.CrossEntropyLoss(reduction=r, **kw))

    def ce_t(**kw):
        def mk(t, r):
            tkw = {k: (t.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
            return lambda x, y: t.nn.functional.cross_entropy(
                x, y, reduction=r, **{k: (v.to(x.dtype) if k == "weight" else v) for k, v in tkw.items()})
        return mk
    lab = lambda shape, c=4, ignore=None: (lambda rng: (rng.standard_normal(shape), _labels(
        rng, (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else (), c, ignore)))
    add("ce", ce(), ce_t(), lab((5, 4)))
    add("ce_weight_ignore", ce(weight=w4, ignore_index=2), ce_t(weight=w4, ignore_index=2), lab((6, 4)))
    add("ce_ignore_default", ce(), ce_t(), lab((6, 4), ignore=-100))
    add("ce_smooth", ce(label_smoothing=0.15), ce_t(label_smoothing=0.15), lab((5, 4)))
    add("ce_weight_smooth_ignore", ce(weight=w4, label_smoothing=0.2, ignore_index=-1),
        ce_t(weight=w4, label_smoothing=0.2, ignore_index=-1), lab((6, 4), ignore=-1))
    add("ce_spatial", ce(weight=w4), ce_t(weight=w4), lab((2, 4, 3, 2)))
    add("ce_unbatched", ce(), ce_t(), lab((4,)))
    soft = lambda rng: (rng.standard_normal((5, 4)), _softmax(rng.standard_normal((5, 4))))
    add("ce_soft", ce(weight=w4, label_smoothing=0.1), ce_t(weight=w4, label_smoothing=0.1), soft)

    logp = lambda shape, ignore=None: (lambda rng: (np.log(_softmax(rng.standard_normal(shape))), _labels(
        rng, (shape[0],) + tuple(shape[2:]), shape[1], ignore)))

    def nll_t(**kw):
        def mk(t, r):
            return lambda x, y: t.nn.functional.nll_loss(
                x, y, reduction=r,
                **{k: (t.tensor(v).to(x.dtype) if isinstance(v, np.ndarray) else v) for k, v in kw.items()})
        return mk
    add("nll", lambda r: nn.NLLLoss(weight=w4, ignore_index=3, reduction=r), nll_t(weight=w4, ignore_index=3),
        logp((6, 4), ignore=3))
    add("nll_spatial", lambda r: nn.NLLLoss(reduction=r), nll_t(), logp((2, 4, 3)))

    def pce_t(t, r):
        def f(x, y):
            tt = y if y.dtype.is_floating_point else t.nn.functional.one_hot(y, x.shape[1]).to(x.dtype)
            per = -(tt * t.log(x)).sum(1)
            return {"sum": per.sum(), "mean": per.mean(), "none": per}[r]
        return f
    add("prob_ce_labels", lambda r: nn.ProbabilityCrossEntropyLoss(r), pce_t,
        lambda rng: (_softmax(rng.standard_normal((5, 4))), rng.integers(0, 4, 5)))
    add("prob_ce_soft", lambda r: nn.ProbabilityCrossEntropyLoss(r), pce_t,
        lambda rng: (_softmax(rng.standard_normal((5, 4))), _softmax(rng.standard_normal((5, 4)))))
    add("prob_ce_spatial", lambda r: nn.ProbabilityCrossEntropyLoss(r), pce_t,
        lambda rng: (_softmax(rng.standard_normal((2, 3, 2, 2))), _softmax(rng.standard_normal((2, 3, 2, 2)))))

    wb = np.array([1.0, 0.5, 2.0])
    binary = lambda rng: (_sigmoid(rng.standard_normal((4, 3))), rng.uniform(0, 1, (4, 3)))
    add("bce", lambda r: nn.BCELoss(reduction=r), lambda t, r: lambda x, y: t.nn.functional.binary_cross_entropy(
        x, y, reduction=r), binary)
    add("bce_weight", lambda r: nn.BCELoss(weight=wb, reduction=r),
        lambda t, r: lambda x, y: t.nn.functional.binary_cross_entropy(x, y, weight=t.tensor(wb).to(x.dtype),
                                                                       reduction=r), binary)
    logit = lambda rng: (3 * rng.standard_normal((4, 3)), (rng.uniform(0, 1, (4, 3)) > 0.5).astype(float))
    add("bce_logits", lambda r: nn.BCEWithLogitsLoss(reduction=r),
        lambda t, r: lambda x, y: t.nn.functional.binary_cross_entropy_with_logits(x, y, reduction=r), logit)
    pw = np.array([3.0, 0.5, 1.0])
    add("bce_logits_pos_weight", lambda r: nn.BCEWithLogitsLoss(weight=wb, pos_weight=pw, reduction=r),
        lambda t, r: lambda x, y: t.nn.functional.binary_cross_entropy_with_logits(
            x, y, weight=t.tensor(wb).to(x.dtype), pos_weight=t.tensor(pw).to(x.dtype), reduction=r), logit)
    pw_sp = np.array([2.0, 0.5, 1.0]).reshape(3, 1, 1)
    add("bce_logits_spatial", lambda r: nn.BCEWithLogitsLoss(pos_weight=pw_sp, reduction=r),
        lambda t, r: lambda x, y: t.nn.functional.binary_cross_entropy_with_logits(
            x, y, pos_weight=t.tensor(pw_sp).to(x.dtype), reduction=r),
        lambda rng: (rng.standard_normal((2, 3, 2, 2)), rng.uniform(0, 1, (2, 3, 2, 2))))

    scores = lambda rng: (rng.standard_normal((6, 4)), rng.integers(0, 4, 6))
    for p in (1, 2):
        add(f"multi_margin_p{p}", (lambda p: lambda r: nn.MultiMarginLoss(p=p, margin=0.8, weight=w4, reduction=r))(p),
            (lambda p: lambda t, r: lambda x, y: t.nn.functional.multi_margin_loss(
                x, y, p=p, margin=0.8, weight=t.tensor(w4).to(x.dtype), reduction=r))(p), scores)

    def hinge_t(t, r):
        def f(x, y):
            per = t.nn.functional.multi_margin_loss(x, y, margin=1.5, reduction="none") * x.shape[-1]
            return {"sum": per.sum(), "mean": per.mean(), "none": per}[r]
        return f
    add("hinge", lambda r: nn.MulticlassHingeLoss(margin=1.5, reduction=r), hinge_t, scores)
    return cases


CASES = _cases()


def _run_dp(loss, pred, target, upstream):
    val = loss(pred, target)
    return val, loss.backward(upstream)


def _upstream(rng, loss, pred, target, dtype):
    if loss.reduction != "none":
        return None
    shape = np.shape(loss(pred, target))
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("cid,reduction,make_dp,make_torch,make_data", CASES)
def test_loss_gradcheck(cid, reduction, make_dp, make_torch, make_data, rng):
    """Centred differences in float64 agree with backward() to < 1e-6 (reduction "none" through Σ G ⊙ loss)."""
    pred, target = make_data(rng)
    loss = make_dp(reduction)
    if reduction != "none":
        res = check_loss(loss, pred, target)
    else:
        g = rng.standard_normal(np.shape(loss(pred, target)))

        def f(p):
            return float(np.sum(loss(p, target) * g))

        def grads(p):
            loss(p, target)
            return [loss.backward(g)]
        res = check_function(f, grads, [pred])
    assert res.ok(1e-6), f"{cid}/{reduction}: {res}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cid,reduction,make_dp,make_torch,make_data", CASES)
def test_loss_torch_parity(cid, reduction, make_dp, make_torch, make_data, dtype, rng, torch_ref):
    """Value and ∂C/∂pred match torch's (≤1e-10 float64, ≤1e-4 float32); the gradient keeps the dtype."""
    torch = torch_ref
    pred, target = make_data(rng)
    pred = pred.astype(dtype)
    if target.dtype.kind == "f":
        target = target.astype(dtype)
    loss = make_dp(reduction)
    g = _upstream(rng, loss, pred, target, dtype)
    val, d = _run_dp(loss, pred, target, g)
    assert d.dtype == dtype and d.shape == pred.shape
    if reduction == "none":
        assert val.dtype == dtype
    else:
        assert isinstance(val, float)
    tp = torch.tensor(pred, requires_grad=True)
    tt = torch.tensor(target)
    tv = make_torch(torch, reduction)(tp, tt)
    (tv * torch.tensor(g)).sum().backward() if g is not None else tv.backward()
    assert rel_err(val, tv.detach().numpy()) <= TOL[dtype], cid
    assert rel_err(d, tp.grad.numpy()) <= TOL[dtype], cid


# --- naive twins ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", [{}, {"weight": np.array([0.3, 1.0, 2.0, 0.7, 1.1]), "ignore_index": 1},
                                {"label_smoothing": 0.3, "weight": np.array([0.3, 1.0, 2.0, 0.7, 1.1])}])
def test_cross_entropy_naive_vs_fast(kw, reduction, rng):
    x = rng.standard_normal((7, 5))
    y = rng.integers(0, 5, 7)
    val, cache = F.cross_entropy_forward(x, y, reduction=reduction, **kw)
    g = np.ones(7) if reduction == "none" else 1.0
    d = F.cross_entropy_backward(g, cache)
    nval, nd = F.cross_entropy_naive(x, y, reduction=reduction, **kw)
    per_n = nd if reduction != "none" else nd
    assert rel_err(val, nval) < 1e-12
    assert rel_err(d, per_n) < 1e-12


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_naive_vs_fast(reduction, rng):
    x = rng.standard_normal((8, 5))
    y = rng.integers(0, 5, 8)
    w = rng.uniform(0.5, 2, 5)
    for p in (1, 2):
        val, cache = FM.multi_margin_forward(x, y, p=p, margin=0.9, weight=w, reduction=reduction)
        d = FM.multi_margin_backward(np.ones(8) if reduction == "none" else 1.0, cache)
        nval, nd = FM.multi_margin_naive(x, y, margin=0.9, p=p, weight=w, divide=True, reduction=reduction)
        assert rel_err(val, nval) < 1e-12 and rel_err(d, nd) < 1e-12
    val, cache = FM.multiclass_hinge_forward(x, y, margin=1.0, reduction=reduction)
    d = FM.multiclass_hinge_backward(np.ones(8) if reduction == "none" else 1.0, cache)
    nval, nd = FM.multi_margin_naive(x, y, margin=1.0, divide=False, reduction=reduction)
    assert rel_err(val, nval) < 1e-12 and rel_err(d, nd) < 1e-12


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_and_probability_naive_vs_fast(reduction, rng):
    x = rng.standard_normal((4, 3))
    t = rng.uniform(0, 1, (4, 3))
    one = np.ones((4, 3)) if reduction == "none" else 1.0
    val, cache = FB.bce_forward(_sigmoid(x), t, reduction=reduction)
    nval, nd = FB.bce_naive(_sigmoid(x), t, reduction=reduction)
    assert rel_err(val, nval) < 1e-12 and rel_err(FB.bce_backward(one, cache), nd) < 1e-10
    val, cache = FB.bce_with_logits_forward(x, t, reduction=reduction)
    nval, nd = FB.bce_naive(x, t, reduction=reduction, logits=True)
    assert rel_err(val, nval) < 1e-12 and rel_err(FB.bce_with_logits_backward(one, cache), nd) < 1e-12
    y = _softmax(x)
    tt = _softmax(rng.standard_normal((4, 3)))
    val, cache = F.prob_cross_entropy_forward(y, tt, reduction=reduction)
    nval, nd = F.prob_cross_entropy_naive(y, tt, reduction=reduction)
    assert rel_err(val, nval) < 1e-12
    assert rel_err(F.prob_cross_entropy_backward(np.ones(4) if reduction == "none" else 1.0, cache), nd) < 1e-12


# --- equations that tie losses together ------------------------------------------------------------

def test_softmax_then_probability_ce_gives_y_minus_t(rng):
    """§6: through nn.Softmax, ∂E/∂x = y − t (Σt = 1); equals CrossEntropyLoss on the logits."""
    x = rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5)
    sm = nn.Softmax(dim=1)
    pce = nn.ProbabilityCrossEntropyLoss()
    v1 = pce(sm(x), y)
    d1 = sm.backward(pce.backward())
    ce = nn.CrossEntropyLoss()
    v2 = ce(x, y)
    d2 = ce.backward()
    t = np.eye(4)[y]
    assert abs(v1 - v2) < 1e-12
    assert rel_err(d1, d2) < 1e-10 and rel_err(d2, (_softmax(x) - t) / 5) < 1e-12


def test_logsoftmax_nll_equals_cross_entropy(rng):
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 5, 6)
    ls, nll, ce = nn.LogSoftmax(dim=1), nn.NLLLoss(), nn.CrossEntropyLoss()
    v1 = nll(ls(x), y)
    d1 = ls.backward(nll.backward())
    v2 = ce(x, y)
    assert abs(v1 - v2) < 1e-12 and rel_err(d1, ce.backward()) < 1e-12


def test_sigmoid_bce_equals_bce_with_logits(rng):
    """§6: logistic + BCE, ∂ξ/∂z = y − t."""
    x = rng.standard_normal((4, 3))
    t = (rng.uniform(0, 1, (4, 3)) > 0.5).astype(float)
    sg, bce, bcel = nn.Sigmoid(), nn.BCELoss(reduction="sum"), nn.BCEWithLogitsLoss(reduction="sum")
    v1 = bce(sg(x), t)
    d1 = sg.backward(bce.backward())
    v2 = bcel(x, t)
    d2 = bcel.backward()
    assert abs(v1 - v2) < 1e-12 and rel_err(d1, d2) < 1e-10 and rel_err(d2, _sigmoid(x) - t) < 1e-12


def test_bce_with_logits_is_stable_for_huge_logits():
    x = np.array([[800.0, -800.0, 0.0]])
    t = np.array([[0.0, 1.0, 1.0]])
    loss = nn.BCEWithLogitsLoss(reduction="none")
    v = loss(x, t)
    assert np.isfinite(v).all() and abs(v[0, 0] - 800) < 1e-9 and abs(v[0, 2] - np.log(2)) < 1e-12
    assert np.allclose(loss.backward(), [[1.0, -1.0, -0.5]])


def test_bce_clamps_log_at_minus_100():
    loss = nn.BCELoss(reduction="none")
    v = loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert np.all(v == 100.0)
    assert np.isfinite(loss.backward()).all()


def test_cross_entropy_is_stable_for_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    loss = nn.CrossEntropyLoss()
    assert loss(x, np.array([2])) == pytest.approx(2000.0)
    d = loss.backward()
    assert d.dtype == np.float32 and np.allclose(d, [[1.0, 0.0, -1.0]])


def test_all_ignored_mean_is_nan_with_zero_grad_as_torch():
    loss = nn.CrossEntropyLoss(ignore_index=0)
    assert np.isnan(loss(np.zeros((2, 3)), np.array([0, 0])))
    assert np.all(loss.backward() == 0)


# --- the L2 penalty --------------------------------------------------------------------------------

def test_l2_penalty_value_gradient_and_gradcheck(rng):
    lin = nn.Linear(3, 2).double()
    lin.zero_grad()
    pen = nn.L2Penalty(0.05)
    val = pen([lin.weight])
    assert val == pytest.approx(0.05 * np.sum(lin.weight.data ** 2), rel=1e-14)
    lin.weight.grad = np.ones_like(lin.weight.data)
    pen.backward()
    assert rel_err(lin.weight.grad, 1 + 0.1 * lin.weight.data) < 1e-15     # ADDS 2λW
    assert lin.bias.grad is None
    w = rng.standard_normal((4, 3))
    res = check_function(lambda a: pen([nn.Parameter(a)]), lambda a: [F.l2_penalty_grad(a, 0.05)], [w])
    assert res.ok(1e-6), str(res)


def test_l2_penalty_skips_frozen_and_keeps_float32():
    lin = nn.Linear(3, 2)
    lin.bias.requires_grad = False
    pen = nn.L2Penalty(0.1)
    pen(lin)
    pen.backward()
    assert lin.weight.grad.dtype == np.float32 and lin.bias.grad is None
    with pytest.raises(BackwardError):
        nn.L2Penalty(0.1).backward()


def test_full_loss_with_penalty_matches_torch(torch_ref, rng):
    """Seed 004's full loss L = (1/N) Σ L_i + λ Σ W², for a Linear scorer, against autograd."""
    torch = torch_ref
    lin = nn.Linear(5, 3).double()
    x = rng.standard_normal((4, 5))
    y = rng.integers(0, 3, 4)
    hinge, pen = nn.MulticlassHingeLoss(), nn.L2Penalty(0.01)
    lin.zero_grad()
    total = hinge(lin(x), y) + pen([lin.weight])
    lin.backward(hinge.backward())
    pen.backward()
    tw = torch.tensor(lin.weight.data, requires_grad=True)
    tb = torch.tensor(lin.bias.data, requires_grad=True)
    s = torch.tensor(x) @ tw.T + tb
    tl = torch.nn.functional.multi_margin_loss(s, torch.tensor(y), reduction="none").mean() * 3 + 0.01 * (tw ** 2).sum()
    tl.backward()
    assert rel_err(total, tl.item()) < 1e-12
    assert rel_err(lin.weight.grad, tw.grad.numpy()) < 1e-10 and rel_err(lin.bias.grad, tb.grad.numpy()) < 1e-10


# --- API behaviour ----------------------------------------------------------------------------------

def test_float32_loss_keeps_float32_everywhere(rng):
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    losses = [(nn.CrossEntropyLoss(weight=np.array([1.0, 2, 1, 1]), label_smoothing=0.1), y),
              (nn.NLLLoss(weight=np.array([1.0, 2, 1, 1])), y), (nn.MultiMarginLoss(p=2, weight=np.ones(4)), y),
              (nn.MulticlassHingeLoss(), y), (nn.MSELoss(), x[::-1].copy()),
              (nn.HalfSquaredError(), x.astype(np.float64)),
              (nn.BCEWithLogitsLoss(pos_weight=np.full(4, 2.0)), np.ones((5, 4))),
              (nn.BCELoss(), np.ones((5, 4), np.float32)), (nn.ProbabilityCrossEntropyLoss(), y)]
    for loss, t in losses:
        p = _softmax(x) if isinstance(loss, (nn.BCELoss, nn.ProbabilityCrossEntropyLoss)) else x
        loss(p.astype(np.float32), t)
        assert loss.backward().dtype == np.float32, type(loss).__name__
        loss.reduction = "none"
        out = loss(p.astype(np.float32), t)
        assert out.dtype == np.float32, type(loss).__name__
        assert loss.backward(np.ones(out.shape)).dtype == np.float32, type(loss).__name__


def test_none_reduction_upstream_gradient_and_default(rng):
    x = rng.standard_normal((3, 4))
    t = rng.standard_normal((3, 4))
    loss = nn.MSELoss(reduction="none")
    loss(x, t)
    assert rel_err(loss.backward(), 2 * (x - t)) < 1e-15        # default: gradient of the sum
    g = rng.standard_normal((3, 4))
    loss(x, t)
    assert rel_err(loss.backward(g), 2 * (x - t) * g) < 1e-15
    loss(x, t)
    with pytest.raises(ShapeError, match=r"\(3, 4\)"):
        loss.backward(np.ones(3))
    mean = nn.MSELoss()
    mean(x, t)
    assert rel_err(mean.backward(2.0), 4 * (x - t) / 12) < 1e-15
    mean(x, t)
    with pytest.raises(ShapeError):
        mean.backward(np.ones((3, 4)))


def test_backward_needs_forward_and_no_grad_keeps_nothing(rng):
    x, y = rng.standard_normal((2, 3)), np.array([0, 2])
    loss = nn.CrossEntropyLoss()
    with pytest.raises(BackwardError):
        loss.backward()
    loss(x, y)
    loss.backward()
    with pytest.raises(BackwardError):         # once per forward
        loss.backward()
    with dp.no_grad():
        v = loss(x, y)
    assert np.isfinite(v)
    with pytest.raises(BackwardError):
        loss.backward()
    loss.eval()                               # a loss is not a layer: eval() does not drop its cache
    loss(x, y)
    assert loss.backward().shape == (2, 3)


@pytest.mark.parametrize("loss,pred,target,err,match", [
    (nn.CrossEntropyLoss(), np.zeros((3, 4)), np.array([0, 4, 1]), LabelError, r"label 4 at index \(1,\).*4 classes"),
    (nn.CrossEntropyLoss(), np.zeros((3, 4)), np.array([0, -1, 1]), LabelError, r"label -1 at index \(1,\)"),
    (nn.NLLLoss(), np.zeros((2, 3, 2)), np.array([[0, 1], [2, 7]]), LabelError, r"label 7 at index \(1, 1\)"),
    (nn.MultiMarginLoss(), np.zeros((3, 4)), np.array([0, 9, 1]), LabelError, r"label 9"),
    (nn.MulticlassHingeLoss(), np.zeros((3, 4)), np.array([5, 0, 1]), LabelError, r"label 5 at index \(0,\)"),
    (nn.ProbabilityCrossEntropyLoss(), np.full((2, 2), 0.5), np.array([0, 2]), LabelError, r"label 2"),
    (nn.CrossEntropyLoss(), np.zeros((3, 4)), np.array([0.0, 1.0, 1.0]), LabelError, r"integers.*float64"),
    (nn.NLLLoss(), np.zeros((3, 4)), np.array([0.0, 1.0, 1.0]), LabelError, r"integers"),
    (nn.CrossEntropyLoss(), np.zeros((3, 4)), np.array([0, 1]), ShapeError, r"labels of shape \(3,\)"),
    (nn.MSELoss(), np.zeros((3, 4)), np.zeros((4, 3)), ShapeError, r"\(4, 3\).*\(3, 4\)"),
    (nn.BCELoss(), np.zeros((3,)), np.zeros((3, 1)), ShapeError, r"does not match"),
    (nn.MSELoss(), np.zeros((3, 4), dtype=np.int64), np.zeros((3, 4)), DTypeError, r"floating-point"),
    (nn.MSELoss(), np.zeros((2, 2)), np.zeros((2, 2), dtype=np.int64), DTypeError, r"target.*int64"),
    (nn.MSELoss(), np.array([[0.0, np.nan]]), np.zeros((1, 2)), NonFiniteError, r"1 NaN"),
    (nn.CrossEntropyLoss(), np.array([[np.inf, 0.0]]), np.array([0]), NonFiniteError, r"NaN or infinite"),
    (nn.MSELoss(), np.zeros((1, 2)), np.array([[0.0, np.nan]]), NonFiniteError, r"target"),
    (nn.BCELoss(), np.array([0.5, 1.5]), np.array([0.0, 1.0]), nn.loss.ValueRangeError, r"1.5 at index \(1,\)"),
    (nn.BCELoss(), np.array([0.5, 0.5]), np.array([0.0, 2.0]), nn.loss.ValueRangeError, r"targets"),
    (nn.ProbabilityCrossEntropyLoss(), np.array([[-0.1, 1.1]]), np.array([0]), nn.loss.ValueRangeError, r"\[0, 1\]"),
    (nn.CrossEntropyLoss(weight=np.ones(3)), np.zeros((2, 4)), np.array([0, 1]), ShapeError, r"weight.*4 classes"),
    (nn.BCEWithLogitsLoss(pos_weight=np.ones(5)), np.zeros((2, 4)), np.zeros((2, 4)), ShapeError, r"pos_weight"),
    (nn.MultiMarginLoss(), np.zeros((2, 3, 4)), np.zeros((2, 4), dtype=int), ShapeError, r"\(N, C\)"),
])
def test_bad_input_raises_named_errors(loss, pred, target, err, match):
    with pytest.raises(err, match=match):
        loss(pred, target)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="p=1 and p=2"):
        nn.MultiMarginLoss(p=3)
    with pytest.raises(NonFiniteError):
        nn.CrossEntropyLoss(weight=[1.0, np.nan])


def test_get_config_state_dict_and_dtype_conversion():
    loss = nn.CrossEntropyLoss(weight=[1, 2, 3], ignore_index=-1, label_smoothing=0.1)
    assert loss.get_config() == {"weight": [1.0, 2.0, 3.0], "ignore_index": -1, "reduction": "mean",
                                 "label_smoothing": 0.1}
    assert list(loss.state_dict()) == ["weight"]                  # a buffer, as in PyTorch
    assert nn.MultiMarginLoss(p=2).get_config() == {"p": 2, "margin": 1.0, "weight": None, "reduction": "mean"}
    assert nn.L2Penalty(0.5).get_config() == {"lam": 0.5}
    assert nn.HalfSquaredError().get_config() == {"reduction": "sum"}
    loss.double()
    assert loss.weight.dtype == np.float64
    assert "ignore_index=-1" in repr(loss)
