"""Optimizers (docs/equations.md §7): 20-step trajectories against torch.optim in float64 (≤1e-10), parameter
groups, frozen parameters, float32 kept through forward/backward/step, the state-dict format and its
validation, gradient clipping against torch.nn.utils."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import rel_err

import deltaprop as dp
from deltaprop import nn, optim
from deltaprop.errors import NonFiniteError, StateDictError

STEPS = 20


def _net(dtype=np.float64, seed=0):
    dp.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _torch_net(torch, net):
    tnet = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    dt = torch.float64 if net.dtype == np.float64 else torch.float32
    tnet.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    return tnet.to(dt)


def _batches(dtype, n=STEPS, seed=3):
    r = np.random.default_rng(seed)
    return [(r.standard_normal((5, 4)).astype(dtype), r.integers(0, 3, 5)) for _ in range(n)]


def _train_dp(net, opt, batches, loss=None):
    loss = loss or nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        loss(net(x), y)
        net.backward(loss.backward())
        opt.step()


def _train_torch(torch, tnet, topt, batches):
    for x, y in batches:
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()


CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.05, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6)),        # PyTorch's other lerp branch (1 − β1 ≥ 0.5)
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{'-'.join(k)}" for n, k in CONFIGS])
def test_trajectory_matches_torch_float64(name, kw, torch_ref):
    torch = torch_ref
    net = _net()
    tnet = _torch_net(torch, net)
    batches = _batches(np.float64)
    opt = getattr(optim, name)(net.parameters(), **kw)
    topt = getattr(torch.optim, name)(tnet.parameters(), **kw)
    _train_dp(net, opt, batches)
    _train_torch(torch, tnet, topt, batches)
    tsd = tnet.state_dict()
    for k, v in net.state_dict().items():
        assert rel_err(v, tsd[k].numpy()) <= 1e-10, k
        assert not np.allclose(v, _net().state_dict()[k])          # it did move
    # the state buffers are torch's too (same names, same numbers)
    tstate = topt.state_dict()["state"]
    for idx, st in opt.state_dict()["state"].items():
        for buf, arr in st.items():
            if buf == "step":
                continue
            assert rel_err(arr, tstate[idx][buf].numpy()) <= 1e-10, (idx, buf)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
                                     ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_trajectory_matches_torch_float32(name, kw, torch_ref):
    torch = torch_ref
    net = _net(np.float32)
    tnet = _torch_net(torch, net)
    batches = _batches(np.float32, n=8)
    opt = getattr(optim, name)(net.parameters(), **kw)
    _train_dp(net, opt, batches)
    _train_torch(torch, tnet, getattr(torch.optim, name)(tnet.parameters(), **kw), batches)
    tsd = tnet.state_dict()
    for k, v in net.state_dict().items():
        assert v.dtype == np.float32 and rel_err(v, tsd[k].numpy()) <= 1e-4, k


def test_param_groups_match_torch(torch_ref):
    """Weights and biases in separate groups with their own lr and weight decay; one frozen parameter."""
    torch = torch_ref
    net = _net()
    tnet = _torch_net(torch, net)
    net[2].bias.requires_grad = False
    tnet[2].bias.requires_grad_(False)
    w = [net[0].weight, net[2].weight]
    b = [net[0].bias, net[2].bias]
    tw = [tnet[0].weight, tnet[2].weight]
    tb = [tnet[0].bias, tnet[2].bias]
    for name, kw in [("SGD", dict(momentum=0.9)), ("AdamW", {})]:
        opt = getattr(optim, name)([{"params": w, "weight_decay": 0.1}, {"params": b, "lr": 0.02}], lr=0.05, **kw)
        topt = getattr(torch.optim, name)([{"params": tw, "weight_decay": 0.1}, {"params": tb, "lr": 0.02}],
                                          lr=0.05, **kw)
        assert [g["lr"] for g in opt.param_groups] == [0.05, 0.02]
        assert opt.param_groups[1]["weight_decay"] == topt.param_groups[1]["weight_decay"]
        frozen_before = net[2].bias.data.copy()
        _train_dp(net, opt, _batches(np.float64, n=10))
        _train_torch(torch, tnet, topt, _batches(np.float64, n=10))
        for k, v in net.state_dict().items():
            assert rel_err(v, tnet.state_dict()[k].numpy()) <= 1e-10, (name, k)
        assert np.array_equal(net[2].bias.data, frozen_before) and net[2].bias.grad is None
        assert 3 not in opt.state_dict()["state"]                  # the frozen bias has no state


def test_add_param_group_and_bad_arguments():
    net = _net()
    opt = optim.SGD([net[0].weight], lr=0.1, momentum=0.5)
    opt.add_param_group({"params": net[0].bias, "lr": 0.01})
    assert opt.param_groups[1] == {"params": [net[0].bias], "lr": 0.01, "momentum": 0.5, "dampening": 0.0,
                                   "weight_decay": 0.0, "nesterov": False, "maximize": False}
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [net[0].weight]})
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="model.parameters"):
        optim.SGD(net, lr=0.1)
    with pytest.raises(TypeError, match="Parameters"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(net.parameters(), lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(net.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(net.parameters(), betas=(0.9, 1.0))


def test_zero_grad_skip_and_closure():
    net = _net()
    opt = optim.SGD(net.parameters(), lr=0.1)
    x, y = _batches(np.float64, 1)[0]
    loss = nn.CrossEntropyLoss()

    def closure():
        opt.zero_grad()
        v = loss(net(x), y)
        net.backward(loss.backward())
        return v
    first = loss(net(x), y)
    assert opt.step(closure) == pytest.approx(first, rel=1e-15)      # step returns the closure's loss
    assert loss(net(x), y) < first
    opt.zero_grad(set_to_none=False)
    assert all(np.all(p.grad == 0) for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    before = {k: v.copy() for k, v in net.state_dict().items()}
    net[0].weight.grad = np.ones_like(net[0].weight.data)         # only this one has a gradient
    opt.step()
    after = net.state_dict()
    assert np.allclose(after["0.weight"], before["0.weight"] - 0.1)
    assert all(np.array_equal(after[k], before[k]) for k in after if k != "0.weight")


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=np.float64(0.1), momentum=0.9, nesterov=True, weight_decay=0.1)),
                                     ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
                                     ("Adam", dict(lr=np.float64(0.01), weight_decay=0.1, amsgrad=True)),
                                     ("AdamW", dict(lr=0.01, betas=(np.float64(0.3), 0.9)))])
def test_float32_stays_float32(name, kw):
    """Forward, backward, every optimizer step and every state buffer stay float32, in place
    (hyper-parameters given as NumPy float64 scalars would promote under NumPy 2 if not converted)."""
    net = _net(np.float32)
    arrays = [p.data for p in net.parameters()]
    opt = getattr(optim, name)(net.parameters(), **kw)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    loss = nn.CrossEntropyLoss()
    for x, y in _batches(np.float32, n=3):
        opt.zero_grad()
        out = net(x)
        assert out.dtype == np.float32
        loss(out, y)
        dx = net.backward(loss.backward())
        assert dx.dtype == np.float32
        assert all(p.grad.dtype == np.float32 for p in net.parameters())
        nn.utils.clip_grad_norm_(net.parameters(), np.float64(0.5))
        nn.utils.clip_grad_value_(net.parameters(), np.float64(0.1))
        assert all(p.grad.dtype == np.float32 for p in net.parameters())
        opt.step()
        sched.step()
        assert all(p.data.dtype == np.float32 for p in net.parameters())
        assert all(a is p.data for a, p in zip(arrays, net.parameters()))   # updated in place
        for st in opt.state.values():
            assert all(v.dtype == np.float32 for v in st.values() if isinstance(v, np.ndarray))
    assert all(type(g["lr"]) is float for g in opt.param_groups)


# --- state dict ------------------------------------------------------------------------------------

def test_state_dict_format_is_json_plus_arrays():
    net = _net()
    opt = optim.Adam([{"params": [net[0].weight, net[0].bias]}, {"params": [net[2].weight, net[2].bias], "lr": 0.1}],
                     amsgrad=True)
    _train_dp(net, opt, _batches(np.float64, n=2))
    sd = opt.state_dict()
    assert set(sd) == {"param_groups", "state"}
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    json.dumps(sd["param_groups"])
    assert sd["param_groups"][0]["betas"] == [0.9, 0.999]
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    st = sd["state"][2]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert st["step"] == 2 and type(st["step"]) is int
    assert st["exp_avg"].shape == net[2].weight.shape
    st["exp_avg"][...] = 123.0                                      # a copy: the optimizer is untouched
    assert not np.any(opt.state[net[2].weight]["exp_avg"] == 123.0)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True))])
def test_state_dict_round_trip_resumes_exactly(name, kw):
    """10 steps, save (through JSON for the groups and plain dicts for the arrays), 10 more steps; a fresh
    optimizer that loads the checkpoint continues bit for bit."""
    batches = _batches(np.float64)
    net = _net()
    opt = getattr(optim, name)(net.parameters(), **kw)
    _train_dp(net, opt, batches[:10])
    weights = net.state_dict()
    sd = opt.state_dict()
    saved = {"param_groups": json.loads(json.dumps(sd["param_groups"])),
             "state": {str(k): {b: (np.asarray(v) if b == "step" else v) for b, v in s.items()}
                       for k, s in sd["state"].items()}}
    _train_dp(net, opt, batches[10:])
    net2 = _net(seed=99)
    net2.load_state_dict(weights)
    opt2 = getattr(optim, name)(net2.parameters(), lr=0.5)           # hyper-parameters come from the checkpoint
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    if name == "Adam":
        assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    _train_dp(net2, opt2, batches[10:])
    for k, v in net.state_dict().items():
        assert np.array_equal(v, net2.state_dict()[k]), k


def test_state_dict_loads_into_float32_model():
    net = _net()
    opt = optim.Adam(net.parameters())
    _train_dp(net, opt, _batches(np.float64, n=2))
    net32 = _net(np.float32)
    opt32 = optim.Adam(net32.parameters())
    opt32.load_state_dict(opt.state_dict())
    assert all(v.dtype == np.float32 for st in opt32.state.values() for v in st.values() if isinstance(v, np.ndarray))


def _adam_sd():
    net = _net()
    opt = optim.Adam(net.parameters())
    _train_dp(net, opt, _batches(np.float64, n=1))
    return net, opt, opt.state_dict()


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd.pop("state"), r"exactly the keys"),
    (lambda sd: sd.update(extra=1), r"exactly the keys"),
    (lambda sd: sd["param_groups"].append({"params": []}), r"2 parameter groups.*has 1"),
    (lambda sd: sd["param_groups"][0]["params"].pop(), r"sizes \[3\].*\[4\]"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((4, 6))),
     r"state\[0\]\['exp_avg'\]: expected shape \(6, 4\).*\(4, 6\)"),
    (lambda sd: sd["state"][1].update(momentum_buffer=np.zeros(6)), r"unexpected entries \['momentum_buffer'\]"),
    (lambda sd: sd["state"][1].pop("exp_avg_sq"), r"misses \['exp_avg_sq'\]"),
    (lambda sd: sd["state"].update({7: sd["state"][0]}), r"index 7.*0\.\.3"),
    (lambda sd: sd["state"][2].update(exp_avg=np.full((3, 6), np.nan)), r"finite"),
    (lambda sd: sd["state"][2].update(step=-1), r"step"),
    (lambda sd: sd["param_groups"][0].update(lr=-0.1), r"lr"),
])
def test_bad_state_dict_raises_and_changes_nothing(mutate, match):
    net, opt, sd = _adam_sd()
    before = {p: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
              for p, s in opt.state.items()}
    groups = [dict(g) for g in opt.param_groups]
    mutate(sd)
    with pytest.raises(StateDictError, match=match):
        opt.load_state_dict(sd)
    assert [dict(g) for g in opt.param_groups] == groups
    for p, s in opt.state.items():
        assert all(np.array_equal(s[k], before[p][k]) for k in s)


# --- gradient clipping -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("max_norm,norm_type", [(0.5, 2.0), (100.0, 2.0), (0.3, 1.0), (0.2, 3.0), (0.1, float("inf"))])
def test_clip_grad_norm_matches_torch(max_norm, norm_type, dtype, tol, rng, torch_ref):
    torch = torch_ref
    grads = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (4,), (2, 2, 2)]]
    params = [nn.Parameter(np.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    params.append(nn.Parameter(np.zeros(3, dtype)))                 # grad None: ignored
    tparams = [torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                           requires_grad=True) for g in grads]
    for t, g in zip(tparams, grads):
        t.grad = torch.tensor(g)
    total = nn.utils.clip_grad_norm_(params, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    assert isinstance(total, float) and rel_err(total, ttotal.item()) <= tol
    for p, t in zip(params, tparams):
        assert p.grad.dtype == dtype and rel_err(p.grad, t.grad.numpy()) <= tol


def test_clip_grad_value_matches_torch(rng, torch_ref):
    torch = torch_ref
    g = rng.standard_normal((5, 3))
    p = nn.Parameter(np.zeros_like(g))
    p.grad = g.copy()
    t = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor(g)
    nn.utils.clip_grad_value_([p], 0.4)
    torch.nn.utils.clip_grad_value_([t], 0.4)
    assert np.array_equal(p.grad, t.grad.numpy()) and np.abs(p.grad).max() == 0.4


def test_clip_grad_norm_edge_cases():
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.zeros(2))], 1.0) == 0.0
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([np.nan, 1.0])
    with pytest.raises(NonFiniteError, match="non|nan|NaN"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    net = _net()
    for q in net.parameters():
        q.grad = np.full_like(q.data, 3.0)
    total = nn.utils.clip_grad_norm_(net, 1.0)                     # a Module works too
    assert total == pytest.approx(3.0 * np.sqrt(net.num_parameters()))
    new = np.sqrt(sum(float(np.sum(q.grad ** 2)) for q in net.parameters()))
    assert new == pytest.approx(1.0, rel=1e-5)
