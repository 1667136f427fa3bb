"""DarknetSGD (optim/darknet.py) against a float64 re-derivation of Darknet's update rule (docs/equations.md §10);
decay on weights only; subdivisions 1 vs 4; state dict round trip."""
import numpy as np
import pytest

from conftest import rel_err
from deltaprop import nn
from deltaprop.errors import StateDictError
from deltaprop.nn.parameter import Parameter
from deltaprop.optim.darknet import DarknetSGD


def test_update_matches_darknet_rule_over_steps(rng):
    """Darknet: u += −decay·B·w; w += (lr/B)·u; u *= momentum, with u accumulating −grad; per-step lr."""
    B, mom, dec = 8, 0.9, 0.0005
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=4)
    W, Bp = Parameter(w0.copy()), Parameter(b0.copy())
    opt = DarknetSGD([("fc.weight", W), ("fc.bias", Bp)], lr=0.0, momentum=mom, decay=dec, batch=B)
    w, b, uw, ub = w0.copy(), b0.copy(), np.zeros_like(w0), np.zeros_like(b0)
    for k, lr in enumerate([0.1, 0.05, 0.2, 0.01, 0.3]):
        gw, gb = rng.normal(size=w.shape), rng.normal(size=b.shape)
        W.grad, Bp.grad = gw.copy(), gb.copy()
        opt.set_lr(lr)
        opt.step()
        uw += -gw
        ub += -gb
        uw += -dec * B * w
        w = w + (lr / B) * uw
        uw *= mom
        b = b + (lr / B) * ub
        ub *= mom
        assert rel_err(W.data, w) < 1e-14 and rel_err(Bp.data, b) < 1e-14
        assert rel_err(-opt.state[W]["momentum_buffer"], uw) < 1e-14
        assert rel_err(-opt.state[Bp]["momentum_buffer"], ub) < 1e-14
        assert opt.state[W]["step"] == k + 1


def test_decay_on_weights_not_biases_or_scales():
    lin = nn.Linear(3, 2, dtype=np.float64)
    scale = Parameter(np.full(2, 1.5))       # a BN scale: 1-D
    params = list(lin.named_parameters()) + [("bn.weight", scale)]
    before = {n: p.data.copy() for n, p in params}
    opt = DarknetSGD(params, lr=0.1, momentum=0.0, decay=0.01, batch=4)
    opt.step()                                # no gradients at all: only decay can move anything
    w = dict(params)
    assert rel_err(w["weight"].data, before["weight"] * (1 - 0.1 / 4 * 0.01 * 4)) < 1e-15
    assert np.array_equal(w["bias"].data, before["bias"])
    assert np.array_equal(w["bn.weight"].data, before["bn.weight"])
    # the filter is configurable
    opt2 = DarknetSGD(params, lr=0.1, momentum=0.0, decay=0.01, batch=4, decay_filter=lambda n, p: True)
    opt2.step()
    assert not np.array_equal(w["bias"].data, before["bias"])


def test_module_lr_scale_and_frozen(rng):
    net = nn.Sequential(nn.Linear(3, 4, dtype=np.float64), nn.Linear(4, 2, dtype=np.float64))
    object.__setattr__(net[1], "learning_rate_scale", 0.5)   # Darknet's per-layer learning_rate
    net[0].bias.requires_grad = False
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    before = [p.data.copy() for p in net.parameters()]
    opt = DarknetSGD(net, lr=0.2, momentum=0.9, decay=0.0, batch=2)
    opt.step()
    after = [p.data for p in net.parameters()]
    assert np.allclose(before[0] - after[0], 0.1)          # lr/B
    assert np.array_equal(before[1], after[1])              # frozen
    assert np.allclose(before[2] - after[2], 0.05) and np.allclose(before[3] - after[3], 0.05)


def _model():
    net = nn.Sequential(nn.Linear(5, 6, dtype=np.float64), nn.LeakyReLU(0.1), nn.Linear(6, 3, dtype=np.float64))
    return net


def _train(net, X, T, subdivisions, steps=3):
    opt = DarknetSGD(net, lr=0.05, momentum=0.9, decay=0.001, batch=len(X))
    mini = len(X) // subdivisions
    for _ in range(steps):
        for s in range(subdivisions):
            x, t = X[s * mini:(s + 1) * mini], T[s * mini:(s + 1) * mini]
            y = net(x)
            net.backward(y - t)        # sse's gradient, summed over the images (Darknet's convention)
        opt.step()
        opt.zero_grad()
    return [p.data.copy() for p in net.parameters()], opt


def test_subdivisions_1_vs_4_same_update(rng):
    X, T = rng.normal(size=(16, 5)), rng.normal(size=(16, 3))
    a, b = _model(), _model()
    b.load_state_dict(a.state_dict())
    pa, oa = _train(a, X, T, 1)
    pb, ob = _train(b, X, T, 4)
    for u, v in zip(pa, pb):
        assert rel_err(u, v) < 1e-12


def test_state_dict_round_trip(rng):
    X, T = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
    a = _model()
    b = _model()
    b.load_state_dict(a.state_dict())
    _, oa = _train(a, X, T, 1, steps=2)
    sd = oa.state_dict()
    assert set(sd) == {"param_groups", "state"}
    assert all(isinstance(i, int) for g in sd["param_groups"] for i in g["params"])
    assert all(set(v) == {"step", "momentum_buffer"} for v in sd["state"].values())
    b.load_state_dict(a.state_dict())
    ob = DarknetSGD(b, lr=0.05, momentum=0.9, decay=0.001, batch=8)
    ob.load_state_dict(sd)
    for net, opt in ((a, oa), (b, ob)):
        net.backward(net(X) - T)
        opt.step()
    for u, v in zip(a.parameters(), b.parameters()):
        assert np.array_equal(u.data, v.data)
    bad = dict(sd, state={0: {"step": 1, "momentum_buffer": np.zeros(3)}})
    with pytest.raises(StateDictError, match="expected shape"):
        ob.load_state_dict(bad)
    with pytest.raises(StateDictError, match="groups"):
        ob.load_state_dict({"param_groups": [], "state": {}})


def test_float32_stays_float32():
    p = Parameter(np.ones((2, 2), np.float32))
    p.grad = np.full((2, 2), 0.5, np.float32)
    opt = DarknetSGD([p], lr=0.1, decay=0.0005, batch=3)
    opt.step()
    assert p.data.dtype == np.float32 and opt.state[p]["momentum_buffer"].dtype == np.float32
