"""The differentiable YOLO loss (numerics="standard", docs/equations.md §9) on a small two-head network in float64:
with the assignment and ignore masks held fixed, ``deltaprop.gradcheck``'s centred differences of the loss
``net.backward()`` differentiates (``net.loss_total``) match every parameter gradient and the input gradient;
and the gradient at each [yolo] input is exactly Darknet's −delta of the same assignment."""
import numpy as np
import pytest

import deltaprop
import deltaprop.darknet as dn
from deltaprop.functional import yolo_loss as yl
from darknet_testutil import yolo_section
from deltaprop.gradcheck import numerical_gradient, relative_error

ANCHORS = "2,3, 3,2, 5,6, 7,4"
TWO_HEADS = """[net]
batch=2
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=2
size=3
stride=2
pad=1
activation=logistic

[convolutional]
size=1
stride=1
filters=14
activation=linear

""" + yolo_section([2, 3], ANCHORS, 2, ignore_thresh=".3", truth_thresh=".6") + """
[route]
layers=-3

[convolutional]
size=3
stride=2
pad=1
filters=14
activation=linear

""" + yolo_section([0, 1], ANCHORS, 2, ignore_thresh=".3", truth_thresh=".6")

TARGETS = [np.array([[0, 0.30, 0.40, 0.30, 0.35], [1, 0.70, 0.60, 0.60, 0.80], [1, 0.20, 0.80, 0.25, 0.30]]),
           np.array([[1, 0.55, 0.45, 0.80, 0.70]])]


@pytest.fixture
def net():
    deltaprop.manual_seed(5)
    n = dn.load_cfg_text(TWO_HEADS, numerics="standard", dtype=np.float64)
    rng = np.random.default_rng(0)
    for p in n.parameters():                 # off the zero biases and unit scales
        p.data += 0.3 * rng.standard_normal(p.data.shape)
    n.train()
    return n


def test_two_head_loss_passes_gradcheck(net):
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
    net.zero_grad()
    net(x)
    net.loss(TARGETS)
    fixed = dict(net.yolo_assignments)
    assert sorted(fixed) == [2, 5]
    assert sum(s["count"] for s in net.yolo_stats) == 4           # every truth went to one head
    assert all(s["count"] > 0 for s in net.yolo_stats)
    dx = net.backward()
    grads = {name: p.grad.copy() for name, p in net.named_parameters()}

    def objective():
        net(x)
        net.loss(TARGETS, assignments=fixed)
        return net.loss_total
    worst = {}
    for name, p in net.named_parameters():
        num, kinks = numerical_gradient(objective, p.data)
        assert not kinks.any()
        worst[name] = relative_error(grads[name], num)
    assert max(worst.values()) < 1e-6, worst
    num, kinks = numerical_gradient(objective, x)
    assert not kinks.any() and relative_error(dx, num) < 1e-6


def test_standard_gradient_is_darknets_negative_delta(net):
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    net(x)
    net.loss(TARGETS)
    net.backward()
    for i in (2, 5):
        asg = net.yolo_assignments[i]
        delta = asg.delta(net.layer_outputs[i])
        assert np.abs(net.layer_grads[i - 1] + delta).max() < 1e-12      # at the raw input: −delta
        assert asg.mask.any() and (delta != 0).sum() > asg.mask[:, :, 4].sum() // 2
    # the loss is not Darknet's Σ delta² (that one is what numerics="darknet" reports)
    std = net.loss_costs[2]
    net.set_numerics("darknet")
    net(x)
    net.loss(TARGETS)
    assert net.loss_costs[2] == pytest.approx(float((net.yolo_assignments[2].delta(net.layer_outputs[2]) ** 2).sum()))
    assert abs(net.loss_costs[2] - std) > 1e-3


def test_standard_loss_terms_by_hand():
    """One masked entry of each kind: x (BCE on σ, scaled), w (½·scale·(t − t*)²), obj and class (BCE)."""
    shape = (1, 1, 7, 1, 1)
    m = np.zeros(shape, bool)
    t = np.zeros(shape)
    s = np.ones(shape)
    m[0, 0, [0, 2, 4, 5], 0, 0] = True
    t[0, 0, 0], t[0, 0, 2], t[0, 0, 4], t[0, 0, 5] = 0.3, -0.2, 1.0, 0.0
    s[0, 0, :4] = 1.5
    asg = yl.YoloAssignment(m, t, s)
    z = np.array([0.4, 9.0, 0.1, 9.0, -0.5, 2.0, 9.0]).reshape(1, 7, 1, 1)
    cost, g = yl.yolo_standard_loss(z, asg)
    sig = lambda v: 1 / (1 + np.exp(-v))
    bce = lambda p, q: -(q * np.log(p) + (1 - q) * np.log(1 - p))
    want = 1.5 * bce(sig(0.4), 0.3) + 0.5 * 1.5 * (0.1 + 0.2) ** 2 + bce(sig(-0.5), 1.0) + bce(sig(2.0), 0.0)
    assert cost == pytest.approx(want, rel=1e-12)
    assert g.ravel() == pytest.approx([1.5 * (sig(0.4) - 0.3), 0, 1.5 * 0.3, 0, sig(-0.5) - 1, sig(2.0), 0])


def test_standard_output_gradient_times_the_logistic_jacobian_is_the_input_gradient(net):
    """layer_grads of a [yolo] layer is ∂loss/∂(its output): through σ' it gives ∂loss/∂(its input)."""
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8))
    net(x)
    net.loss(TARGETS)
    net.backward()
    for i in (2, 5):
        y = net.layers[i].split(net.layer_outputs[i])
        g_out = net.layers[i].split(net.layer_grads[i]).copy()
        g_out[:, :, [0, 1]] *= y[:, :, [0, 1]] * (1 - y[:, :, [0, 1]])
        g_out[:, :, 4:] *= y[:, :, 4:] * (1 - y[:, :, 4:])
        assert np.abs(g_out.reshape(net.layer_grads[i - 1].shape) - net.layer_grads[i - 1]).max() < 1e-10
