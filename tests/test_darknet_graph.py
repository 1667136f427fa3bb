"""nn.Graph and the cfg layers' backward passes: gradients of every consumer add up; gradchecks in
float64 of a route + shortcut + upsample network and of every layer kind."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop
from darknet_testutil import TINY_GRAPH_CFG, seeded_weights
from deltaprop import darknet, gradcheck, nn
from deltaprop.nn.module import Module


class Add(Module):
    multi_input = True

    def forward(self, xs):
        self._save(1)
        return xs[0] + xs[1]

    def backward(self, dout):
        self._take()
        return [dout, dout]


def test_graph_sums_gradients_of_all_consumers():
    deltaprop.manual_seed(0)
    g = nn.Graph()
    a = g.add(nn.Linear(3, 4, dtype=np.float64))                 # 0 reads the input
    b = g.add(nn.Linear(4, 4, dtype=np.float64), [a])            # 1 reads 0
    c = g.add(nn.Tanh(), [a])                                    # 2 reads 0 as well
    g.add(Add(), [b, c])                                         # 3 = 1 + 2
    x = np.random.default_rng(0).standard_normal((5, 3))
    out = g(x)
    assert len(g.layer_outputs) == 4 and g.layer_outputs[3] is out
    dout = np.random.default_rng(1).standard_normal(out.shape)
    g.zero_grad()
    dx = g.backward(dout)
    # by hand: d(out)/d(a0) = W1ᵀ·dout + (1 − tanh²)·dout
    a0 = g.layer_outputs[0]
    da0 = dout @ g[1].weight.data + dout * (1 - np.tanh(a0) ** 2)
    assert np.allclose(dx, da0 @ g[0].weight.data)
    assert np.allclose(g[0].weight.grad, da0.T @ x)
    res = gradcheck.check_module(g, x)
    assert res.ok(1e-7), str(res)


def test_graph_input_read_twice_and_multiple_outputs():
    g = nn.Graph()
    g.add(nn.Tanh(), [-1])
    g.add(Add(), [-1, 0])          # x + tanh(x)
    g.add(nn.Sigmoid(), [0])
    g.set_outputs([1, 2])
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    o1, o2 = g(x)
    d1, d2 = np.ones_like(o1), np.full_like(o2, 2.0)
    dx = g.backward([d1, d2])
    t = np.tanh(x)
    s = 1 / (1 + np.exp(-t))
    assert np.allclose(dx, 1 + (1 - t * t) * (1 + 2 * s * (1 - s)))
    dx_only_first = (g(x), g.backward([d1, None]))[1]
    assert np.allclose(dx_only_first, 1 + (1 - t * t))


def test_graph_backward_is_a_loop_deep_chain():
    g = nn.Graph()
    for _ in range(3000):  # far deeper than Python's recursion limit would allow recursively
        g.add(nn.Identity())
    x = np.ones((1, 2))
    g(x)
    assert np.array_equal(g.backward(np.full((1, 2), 3.0)), np.full((1, 2), 3.0))


@pytest.mark.parametrize("numerics,training", [("standard", True), ("darknet", False), ("standard", False)])
def test_gradcheck_route_shortcut_upsample_network(numerics, training):
    deltaprop.manual_seed(3)
    net = darknet.load_cfg_text(TINY_GRAPH_CFG, numerics=numerics, dtype=np.float64)
    seeded_weights(net, 4)
    net.train(training)
    kinds = [l.kind for l in net.layers]
    assert kinds.count("shortcut") == 2 and "route" in kinds and "upsample" in kinds
    # layer 0 is read by layer 1 and by the route (layer 5): its gradient is the sum of both
    assert [i for i, l in enumerate(net.layers) if 0 in l.inputs] == [1, 5]
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6))
    res = gradcheck.check_module(net, x)
    assert res.ok(1e-6), str(res)


def test_darknet_bn_eval_formula_and_switch():
    net = darknet.load_cfg_text(TINY_GRAPH_CFG, dtype=np.float64)
    seeded_weights(net, 1)
    net.eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6))
    net(x)
    conv = net.layers[0]
    z = net.layer_outputs[0]
    from deltaprop.functional.conv import conv2d_forward
    raw, _ = conv2d_forward(x, conv.weight.data, None, 1, 1)
    bn = conv.bn
    r = lambda v: v.reshape(1, -1, 1, 1)
    dk = r(bn.weight.data) * (raw - r(bn.running_mean)) / (np.sqrt(r(bn.running_var)) + 1e-6) + r(bn.bias.data)
    assert np.allclose(z, np.where(dk > 0, dk, 0.1 * dk), rtol=1e-12, atol=1e-12)   # leaky 0.1
    net.set_numerics("standard")
    assert net.numerics == "standard" and conv.bn.numerics == "standard"
    net(x)
    std = r(bn.weight.data) * (raw - r(bn.running_mean)) / np.sqrt(r(bn.running_var) + 1e-5) + r(bn.bias.data)
    assert np.allclose(net.layer_outputs[0], np.where(std > 0, std, 0.1 * std), rtol=1e-12, atol=1e-12)


KIND_CFGS = {
    "connected+bn": "[connected]\nbatch_normalize=1\noutput=5\nactivation=logistic\n",
    "connected": "[connected]\noutput=4\n",
    "avgpool+softmax": "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[avgpool]\n[softmax]\ntemperature=2\n",
    "softmax-groups": "[connected]\noutput=6\nactivation=linear\n[softmax]\ngroups=2\n",
    "softmax-spatial": "[softmax]\nspatial=1\n",
    "logistic+cost": "[connected]\noutput=3\nactivation=linear\n[logistic]\n[cost]\n",
    "conv-groups-relu": "[convolutional]\nfilters=4\ngroups=2\nsize=3\nstride=2\npad=1\nactivation=elu\n",
    "maxpool-darknet": "[maxpool]\nsize=3\nstride=2\n",
    "upsample-scale": "[upsample]\nstride=3\nscale=0.5\n",
    "shortcut-alpha": "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n[convolutional]\nfilters=2\nsize=1\n"
                      "activation=tanh\n[shortcut]\nfrom=-2\nalpha=0.5\nbeta=2\nactivation=logistic\n",
    "yolo": "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n[yolo]\nmask=0,1\nnum=3\nclasses=2\n",
    "dropout-eval": "[dropout]\nprobability=0.3\n",
}


@pytest.mark.parametrize("name", sorted(KIND_CFGS))
def test_gradcheck_every_layer_kind(name):
    deltaprop.manual_seed(7)
    text = "[net]\nwidth=5\nheight=5\nchannels=2\n\n" + KIND_CFGS[name]
    net = darknet.load_cfg_text(text, numerics="standard", dtype=np.float64)
    seeded_weights(net, 2)
    if name == "dropout-eval":
        net.eval()
    # move inputs away from the ties of max pooling and the kinks of the activations
    x = np.random.default_rng(11).permutation(np.linspace(-2, 2, 6 * 2 * 5 * 5)).reshape(6, 2, 5, 5)
    with deltaprop.enable_grad():
        res = gradcheck.check_module(net, x)
    assert res.ok(1e-6), str(res)


def test_dropout_training_masks_and_scales():
    deltaprop.manual_seed(0)
    net = darknet.load_cfg_text("[net]\nwidth=20\nheight=20\nchannels=3\n[dropout]\nprobability=0.25\n")
    x = np.ones((4, 3, 20, 20), dtype=np.float32)
    y = net(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.03 and np.allclose(y[kept], 1 / 0.75)
    assert np.array_equal(net.backward(np.ones_like(y)), y)
    net.eval()
    assert np.array_equal(net(x), x)


def test_stopbackward_ends_the_pass():
    text = "[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nfilters=2\nsize=1\n" \
           "[convolutional]\nfilters=2\nsize=1\nstopbackward=1\n[convolutional]\nfilters=1\nsize=1\n"
    net = darknet.load_cfg_text(text)
    y = net(np.ones((1, 1, 4, 4), dtype=np.float32))
    net.zero_grad()
    assert net.backward(np.ones_like(y)) is None
    assert net.layers[2].weight.grad is not None
    assert net.layers[1].weight.grad is None and net.layers[0].weight.grad is None
