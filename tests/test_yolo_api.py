"""The training API of any cfg network with loss layers: ``net(x)`` in train mode, ``loss = net.loss(targets)``
(the loss Darknet reports), ``net.backward()``, ``net.layer_grads[i]`` = ∂loss/∂(output of layer i) in the
engine's sign. Checked layer by layer against the real Darknet's classifier step (tiny_cls: [softmax] then
[cost]); the [yolo] net's layers are checked in test_yolo_reference.py."""
import numpy as np
import pytest

import deltaprop.darknet as dn
from conftest import fixture_dir, rel_err
from darknet_testutil import read_cost_file
from deltaprop.errors import ShapeError


def test_layer_grads_are_darknets_deltas_on_a_classifier():
    root = fixture_dir("darknet", "reference", "tiny_cls")
    net = dn.load(root / "tiny_cls.cfg", root / "step" / "init.weights")
    x = np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8)
    t = np.fromfile(root / "truth.f32", "<f4").reshape(2, 10)
    net.train()
    net(x)
    costs = read_cost_file(root / "step" / "cost.txt")
    assert net.loss(t) == pytest.approx(costs["reported_loss"], rel=1e-6)
    assert net.loss_costs == pytest.approx({3: costs[3], 4: costs[4]}, rel=1e-6)
    assert net.yolo_stats == []
    dx = net.backward()
    assert len(net.layer_grads) == 5
    for i in range(5):
        ref = np.fromfile(root / "step" / "backward" / f"L{i:02d}_delta_in.f32", "<f4")
        assert rel_err(-net.layer_grads[i].ravel(), ref) < 1e-5, i
    assert rel_err(-dx.ravel(), np.fromfile(root / "step" / "backward" / "input_delta.f32", "<f4")) < 1e-5
    # the [cost] after the [softmax]: the logits' delta is (1 + scale)(t − p), the cost's own t − p
    p = net.layer_outputs[3].reshape(t.shape)
    assert rel_err(net.layer_grads[4].reshape(t.shape), p - t) < 1e-6
    assert rel_err(net.layer_grads[3].reshape(t.shape), 2 * (p - t)) < 1e-6


def test_order_of_calls_is_checked():
    root = fixture_dir("darknet", "reference", "tiny_cls")
    net = dn.load(root / "tiny_cls.cfg")
    t = np.eye(10, dtype=np.float32)[[1, 2]]
    with pytest.raises(ShapeError, match="net.loss"):
        net.loss(t)
    x = np.zeros((2, 3, 8, 8), np.float32)
    net.predict(x)                                    # inference keeps nothing to train on
    with pytest.raises(ShapeError, match="train mode"):
        net.loss(t)
    net.train()
    net(x)
    with pytest.raises(ShapeError, match="net.loss"):
        net.backward()
    net.loss(t)
    net.backward()
    with pytest.raises(ShapeError, match="net.loss"):   # one backward per loss
        net.backward()
    with pytest.raises(ShapeError, match="truth of shape"):
        net(x)
        net.loss(np.zeros((2, 7), np.float32))


def test_backward_from_an_output_gradient_keeps_layer_grads():
    root = fixture_dir("darknet", "reference", "tiny_cls")
    net = dn.load(root / "tiny_cls_nocost.cfg", root / "step" / "init.weights")
    net.train()
    out = net(np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8))
    g = np.ones_like(out)
    net.backward(g)
    assert np.array_equal(net.layer_grads[-1], g) and net.layer_grads[0].shape == net.layer_outputs[0].shape
