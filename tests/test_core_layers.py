"""Core layers (docs/equations.md §1, §5) and the Module contract: gradchecks in float64 on random shapes,
PyTorch parity (output, input gradient, every parameter gradient), naive-vs-fast kernels, no caches in
eval()/no_grad, freezing, state dicts with a real torch model, dtype conversion, summary, get_config, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

import deltaprop as dp
from deltaprop import nn
from deltaprop.errors import BackwardError, DTypeError, NonFiniteError, ShapeError, StateDictError
from deltaprop.functional import activation as FA
from deltaprop.functional import dense
from deltaprop.gradcheck import check_module, numerical_gradient

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def _layers():
    """(id, deltaprop layer factory, torch layer factory (gets the deltaprop layer), input shape)."""
    def lin(bias):
        def mk_t(t, m):
            tl = t.nn.Linear(m.in_features, m.out_features, bias=bias)
            tl.load_state_dict({k: t.tensor(v) for k, v in m.state_dict().items()})
            return tl
        return (lambda: nn.Linear(5, 3, bias=bias)), mk_t
    sig_t = lambda lam: (lambda t, m: (lambda x: t.sigmoid(lam * x)))
    return [
        ("linear", *lin(True), (4, 5)),
        ("linear_nobias", *lin(False), (2, 5)),
        ("linear_1d", *lin(True), (5,)),
        ("sigmoid", lambda: nn.Sigmoid(), sig_t(1.0), (3, 4)),
        ("sigmoid_steep", lambda: nn.Sigmoid(steepness=2.5), sig_t(2.5), (2, 3, 2)),
        ("relu", lambda: nn.ReLU(), lambda t, m: t.nn.ReLU(), (3, 5)),
        ("leaky", lambda: nn.LeakyReLU(), lambda t, m: t.nn.LeakyReLU(), (4, 3)),
        ("leaky_darknet", lambda: nn.LeakyReLU(0.1), lambda t, m: t.nn.LeakyReLU(0.1), (2, 2, 3)),
        ("tanh", lambda: nn.Tanh(), lambda t, m: t.nn.Tanh(), (3, 4)),
        ("identity", lambda: nn.Identity(), lambda t, m: t.nn.Identity(), (3, 2)),
        ("softmax", lambda: nn.Softmax(dim=1), lambda t, m: t.nn.Softmax(dim=1), (4, 5)),
        ("softmax_dim0", lambda: nn.Softmax(dim=0), lambda t, m: t.nn.Softmax(dim=0), (3, 4)),
        ("softmax_3d", lambda: nn.Softmax(dim=-1), lambda t, m: t.nn.Softmax(dim=-1), (2, 3, 4)),
        ("logsoftmax", lambda: nn.LogSoftmax(dim=1), lambda t, m: t.nn.LogSoftmax(dim=1), (4, 5)),
    ]


LAYERS = _layers()
IDS = [c[0] for c in LAYERS]


def _rand_shape(rng, shape):
    """A random variant of ``shape`` (batch and free sizes redrawn; feature sizes kept)."""
    if len(shape) == 1:
        return shape
    return (int(rng.integers(1, 5)),) + tuple(shape[1:])


@pytest.mark.parametrize("cid,make,make_t,shape", LAYERS, ids=IDS)
def test_layer_gradcheck_float64(cid, make, make_t, shape, rng):
    m = make().double()
    for trial in range(2):
        x = rng.standard_normal(_rand_shape(rng, shape) if trial else shape)
        res = check_module(m, x)
        assert res.ok(1e-6), f"{cid}: {res}"
        assert res.errors.get("input") is not None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cid,make,make_t,shape", LAYERS, ids=IDS)
def test_layer_torch_parity(cid, make, make_t, shape, dtype, rng, torch_ref):
    torch = torch_ref
    m = make().to(dtype)
    tm = make_t(torch, m)
    if hasattr(tm, "to"):
        tm = tm.to(torch.float64 if dtype == np.float64 else torch.float32)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(m(x).shape).astype(dtype)
    m.zero_grad()
    y = m(x)
    dx = m.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    ty = tm(tx)
    ty.backward(torch.tensor(dout))
    assert y.dtype == dtype and dx.dtype == dtype
    assert rel_err(y, ty.detach().numpy()) <= TOL[dtype], cid
    assert rel_err(dx, tx.grad.numpy()) <= TOL[dtype], cid
    tparams = dict(tm.named_parameters()) if hasattr(tm, "named_parameters") else {}
    for name, p in m.named_parameters():
        assert p.grad.dtype == dtype
        assert rel_err(p.grad, tparams[name].grad.numpy()) <= TOL[dtype], (cid, name)


# --- a whole small network ---------------------------------------------------------------------------

def _net():
    dp.manual_seed(5)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.LeakyReLU(0.1), nn.Linear(5, 4),
                         nn.Sigmoid(steepness=1.5), nn.Linear(4, 3), nn.Softmax(dim=1))


def test_network_gradcheck_module_and_through_loss(rng):
    net = _net().double()
    x = rng.standard_normal((3, 4))
    res = check_module(net, x)
    assert res.ok(1e-6), str(res)
    assert len(res.errors) == 1 + 8                                  # input + 4 weights + 4 biases
    # the same network with the probability cross-entropy on top: every parameter, by centred differences
    y = rng.integers(0, 3, 3)
    loss = nn.ProbabilityCrossEntropyLoss()
    net.zero_grad()
    loss(net(x), y)
    net.backward(loss.backward())
    for name, p in net.named_parameters():
        num, kinks = numerical_gradient(lambda: loss(net(x), y), p.data)
        assert rel_err(p.grad[~kinks], num[~kinks]) < 1e-6, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_torch_parity(dtype, rng, torch_ref):
    torch = torch_ref
    net = _net().to(dtype)
    tnet = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 5),
                               torch.nn.LeakyReLU(0.1), torch.nn.Linear(5, 4), torch.nn.Identity(),
                               torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    tnet.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    tnet = tnet.to(torch.float64 if dtype == np.float64 else torch.float32)
    x = rng.standard_normal((5, 4)).astype(dtype)
    y = rng.integers(0, 3, 5)
    net.zero_grad()
    loss = nn.ProbabilityCrossEntropyLoss()
    val = loss(net(x), y)
    dx = net.backward(loss.backward())
    tx = torch.tensor(x, requires_grad=True)
    h = tx
    for i, layer in enumerate(tnet):
        h = torch.sigmoid(1.5 * h) if i == 5 else layer(h)
    tval = torch.nn.functional.nll_loss(torch.log(h), torch.tensor(y))
    tval.backward()
    assert rel_err(val, tval.item()) <= TOL[dtype]
    assert dx.dtype == dtype and rel_err(dx, tx.grad.numpy()) <= TOL[dtype]
    tp = dict(tnet.named_parameters())
    for name, p in net.named_parameters():
        assert p.grad.dtype == dtype and rel_err(p.grad, tp[name].grad.numpy()) <= TOL[dtype], name


# --- naive twins -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_dense_naive_vs_fast(bias, rng):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3) if bias else None
    z, cache = dense.linear_forward(x, w, b)
    zn, cache_n = dense.linear_forward_naive(x, w, b)
    assert rel_err(z, zn) < 1e-13
    dz = rng.standard_normal((4, 3))
    fast = dense.linear_backward(dz, cache)
    naive = dense.linear_backward_naive(dz, cache_n)
    for a, n in zip(fast, naive):
        assert (a is None) == (n is None)
        if a is not None:
            assert rel_err(a, n) < 1e-13
    assert dense.linear_backward(dz, cache, need_dx=False)[0] is None


def test_softmax_backward_naive_vs_fast(rng):
    x = rng.standard_normal((5, 6))
    y, cache = FA.softmax_forward(x, axis=1)
    dy = rng.standard_normal((5, 6))
    assert rel_err(FA.softmax_backward(dy, cache), FA.softmax_backward_naive(dy, cache)) < 1e-13
    # the explicit Jacobian of §5, built once, agrees too
    jac = np.diag(y[0]) - np.outer(y[0], y[0])
    assert rel_err(FA.softmax_backward(dy, cache)[0], jac.T @ dy[0]) < 1e-13


def test_sigmoid_is_stable_and_steepness_is_lambda():
    y, cache = FA.sigmoid_forward(np.array([-1000.0, 0.0, 1000.0]), steepness=2.0)
    assert np.array_equal(y, [0.0, 0.5, 1.0])
    assert np.allclose(FA.sigmoid_backward(np.ones(3), cache), [0.0, 0.5, 0.0])   # λ f (1 − f)


# --- the Module contract -----------------------------------------------------------------------------

def test_no_cache_in_eval_and_no_grad(rng):
    net = _net()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    net.eval()
    net(x)
    assert all(m._cache is None for m in net.modules())
    with pytest.raises(BackwardError, match="train"):
        net.backward(np.ones((2, 3), np.float32))
    net.train()
    with dp.no_grad():
        net(x)
    assert all(m._cache is None for m in net.modules())
    with pytest.raises(BackwardError):
        net.backward(np.ones((2, 3), np.float32))
    net.eval()
    with dp.enable_grad():                                           # e.g. sensitivity maps of a trained net
        net(x)
    assert net.backward(np.ones((2, 3), np.float32)).shape == (2, 4)
    net.train()
    out = net(x)
    net(x)                                                           # the cache is the last forward's
    assert net.backward(np.ones_like(out)).shape == (2, 4)


def test_frozen_parameters_get_no_gradient_and_are_skipped(rng):
    net = _net().double()
    net[0].weight.requires_grad = False
    net[0].zero_grad()
    opt = dp.optim.SGD(net.parameters(), lr=0.5)
    frozen = net[0].weight.data.copy()
    net.zero_grad()
    net(rng.standard_normal((3, 4)))
    net.backward(np.ones((3, 3)))
    assert net[0].weight.grad is None and net[0].bias.grad is not None
    opt.step()
    assert np.array_equal(net[0].weight.data, frozen)
    assert net.num_parameters(trainable_only=True) == net.num_parameters() - 24


def test_state_dict_round_trip_with_a_torch_model(rng, torch_ref):
    torch = torch_ref
    tnet = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert rel_err(net(x), tnet(torch.tensor(x)).detach().numpy()) <= 1e-6
    tnet2 = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    tnet2.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    for k, v in tnet.state_dict().items():
        assert torch.equal(v, tnet2.state_dict()[k])
    assert list(net.state_dict()) == list(tnet.state_dict())


def test_bad_state_dicts_name_the_problem():
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    sd = net.state_dict()
    with pytest.raises(StateDictError, match=r"missing keys \['2.bias'\]"):
        net.load_state_dict({k: v for k, v in sd.items() if k != "2.bias"})
    with pytest.raises(StateDictError, match=r"unexpected keys \['3.weight'\]"):
        net.load_state_dict(dict(sd, **{"3.weight": np.zeros(2)}))
    with pytest.raises(StateDictError, match=r"0.weight: expected shape \(6, 4\), got \(4, 6\)"):
        net.load_state_dict(dict(sd, **{"0.weight": np.zeros((4, 6))}))
    with pytest.raises(StateDictError, match="NaN"):
        net.load_state_dict(dict(sd, **{"2.bias": np.array([0.0, np.nan])}))


def test_double_and_float(rng):
    net = _net()
    assert all(p.dtype == np.float32 for p in net.parameters()) and net.dtype == np.float32
    x = rng.standard_normal((2, 4))
    y32 = net(x.astype(np.float32))
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    y64 = net(x)
    assert y64.dtype == np.float64 and rel_err(y32, y64) < 1e-5
    net.float()
    assert net(x.astype(np.float32)).dtype == np.float32


def test_summary_lists_layers_shapes_and_counts():
    lines = []
    rows = _net().summary((2, 4), print_fn=lines.append)
    assert [r[1] for r in rows] == ["Linear", "Tanh", "Linear", "LeakyReLU", "Linear", "Sigmoid", "Linear", "Softmax"]
    assert rows[0] == ("0", "Linear", (2, 6), 30) and rows[-1] == ("7", "Softmax", (2, 3), 0)
    assert "total parameters: 104" in lines[-1]


def test_get_config():
    assert nn.Linear(3, 2, bias=False).get_config() == {"in_features": 3, "out_features": 2, "bias": False}
    assert nn.Sigmoid(steepness=2.0).get_config() == {"steepness": 2.0}
    assert nn.LeakyReLU(0.1).get_config() == {"negative_slope": 0.1}
    assert nn.Softmax(dim=1).get_config() == {"dim": 1}
    assert nn.Tanh().get_config() == {}


def test_bad_input_raises_project_errors(rng):
    lin = nn.Linear(4, 2)
    with pytest.raises(DTypeError, match="floating-point.*int64"):
        lin(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(DTypeError, match="float64.*float32"):
        lin(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"expected input \(N, 4\), got shape \(2, 5\)"):
        lin(np.zeros((2, 5), np.float32))
    with pytest.raises(NonFiniteError, match="1 NaN"):
        lin(np.array([[0, 1, np.nan, 2]], np.float32))
    with pytest.raises(DTypeError, match="list"):
        lin([[0.0, 1.0, 2.0, 3.0]])
