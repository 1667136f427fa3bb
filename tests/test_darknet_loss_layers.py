"""Loss layers return an explicit result and the network finds them by their class, not by section names
(issue 26): ``LossLayer.loss`` has one signature in every loss layer; ``compute_losses`` returns a
``NetworkLoss`` of per-layer ``LossResult``s ([yolo]: ``YoloLossResult`` with its assignment and statistics);
renaming a layer's ``kind`` changes nothing the network decides; an assignment held fixed must belong to a loss
layer that takes decisions."""
import inspect

import numpy as np
import pytest

import deltaprop
import deltaprop.darknet as dn
from conftest import fixture_dir
from darknet_testutil import yolo_section
from deltaprop.darknet.layers import LAYER_KINDS, LossLayer, LossResult, YoloLayer, YoloLossResult
from deltaprop.darknet.train_loss import NetworkLoss, compute_losses, loss_layer_indices
from deltaprop.errors import ConfigError, ShapeError, ValueRangeError
from deltaprop.functional.yolo_loss import YoloAssignment, YoloStats

TWO_HEADS = """[net]
batch=2
width=16
height=16
channels=3

[convolutional]
filters=14
size=3
stride=2
pad=1
activation=linear

""" + yolo_section([1, 2], "2,3, 3,2, 5,6", 2) + """
[route]
layers=-2

[maxpool]
size=2
stride=2

[convolutional]
filters=7
size=1
activation=linear

""" + yolo_section([0], "2,3, 3,2, 5,6", 2)

TARGETS = [np.array([[0, 0.30, 0.40, 0.30, 0.35], [1, 0.70, 0.60, 0.40, 0.50]]),
           np.array([[1, 0.55, 0.45, 0.20, 0.15]])]


def yolo_net(numerics="darknet"):
    deltaprop.manual_seed(3)
    net = dn.load_cfg_text(TWO_HEADS, numerics=numerics, dtype=np.float64)
    net.train()
    net(np.random.default_rng(0).standard_normal((2, 3, 16, 16)))
    return net


def classifier_net():
    root = fixture_dir("darknet", "reference", "tiny_cls")
    net = dn.load(root / "tiny_cls.cfg", root / "step" / "init.weights")
    net.train()
    net(np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8))
    return net, np.fromfile(root / "truth.f32", "<f4").reshape(2, 10)


def test_every_loss_layer_has_the_one_loss_signature():
    losses = {kind: cls for kind, (_, cls) in LAYER_KINDS.items() if issubclass(cls, LossLayer)}
    assert sorted(losses) == ["cost", "logistic", "softmax", "yolo"]
    want = list(inspect.signature(LossLayer.loss).parameters)
    for kind, cls in losses.items():
        params = inspect.signature(cls.loss).parameters
        assert list(params) == want, kind
        assert not any(p.kind == p.VAR_KEYWORD for p in params.values()), kind     # nothing swallowed as **_
    assert [k for k, (_, cls) in LAYER_KINDS.items() if cls.detection_head] == ["yolo"]
    assert [k for k, (_, cls) in LAYER_KINDS.items() if not cls.network_output] == ["cost"]


@pytest.mark.parametrize("numerics", ["darknet", "standard"])
def test_yolo_results_carry_assignment_and_statistics(numerics):
    net = yolo_net(numerics)
    reported = net.loss(TARGETS)
    nl = net.last_loss
    assert isinstance(nl, NetworkLoss) and list(nl.results) == [1, 5]
    for i, res in nl.results.items():
        assert isinstance(res, YoloLossResult) and res.layer == i
        assert isinstance(res.assignment, YoloAssignment) and isinstance(res.stats, YoloStats)
        assert res.stats is res.assignment.stats
        assert res.grad_input.shape == net.layer_outputs[i].shape
    assert nl.heads == [nl.results[1], nl.results[5]]
    assert reported == nl.reported == pytest.approx(sum(nl.costs.values()) / 2 / 2)
    assert nl.total == pytest.approx(sum(r.cost for r in nl.results.values()))
    # every truth went to exactly one head (each box's best anchor among all three is in one mask)
    assert sum(r.stats.count for r in nl.heads) == 3
    rows = net.yolo_stats
    assert [r["layer"] for r in rows] == [1, 5]
    for row, res in zip(rows, nl.heads):
        assert row == dict(res.stats.as_dict(), layer=res.layer)
        assert set(row) == {"layer", "avg_iou", "class", "obj", "no_obj", "recall50", "recall75", "count",
                            "predictions"}
    assert net.yolo_assignments == {1: nl.results[1].assignment, 5: nl.results[5].assignment}
    assert net.loss_costs == nl.costs and net.loss_total == nl.total


def test_fixed_assignments_are_reused_as_given():
    net = yolo_net()
    net.loss(TARGETS)
    first = net.last_loss
    net(np.random.default_rng(9).standard_normal((2, 3, 16, 16)))
    net.loss([np.zeros((0, 5)), np.zeros((0, 5))], assignments=first.assignments)
    for i in (1, 5):
        assert net.last_loss.results[i].assignment is first.results[i].assignment
        # the deltas follow the held targets (boxes that the empty truth would not have)
        assert np.array_equal(-net.last_loss.results[i].grad_input,
                              first.results[i].assignment.delta(net.layer_outputs[i]))
    with pytest.raises(ValueRangeError, match=r"layers \[0\]"):
        net.loss(TARGETS, assignments={0: first.results[1].assignment})
    with pytest.raises(ShapeError, match=r"layer 5 \[yolo\]: the assignment to hold fixed is for outputs"):
        net.loss(TARGETS, assignments={5: first.results[1].assignment})      # another head's shape


def test_classifier_results_and_no_decisions_to_fix():
    net, t = classifier_net()
    net.loss(t)
    nl = net.last_loss
    assert list(nl.results) == [3, 4]
    assert all(type(r) is LossResult and r.assignment is None for r in nl.results.values())
    assert nl.heads == [] and nl.assignments == {} and net.yolo_stats == []
    assert set(nl.output_grads) == {3, 4}
    with pytest.raises(ValueRangeError, match=r"layer 3 \[softmax\].*no assignment"):
        net.loss(t, assignments={3: object()})
    with pytest.raises(ValueRangeError, match="no assignment"):
        net.layers[4].loss(net.layer_outputs[3], net.layer_outputs[4], t, None, fixed=np.zeros(1))


def test_the_network_asks_classes_not_section_names():
    """Renaming every layer's ``kind`` leaves the loss layers, the heads and the loss itself unchanged."""
    net = yolo_net()
    before = net.loss(TARGETS)
    for layer in net.layers:
        object.__setattr__(layer, "kind", "renamed")
    assert loss_layer_indices(net) == [1, 5]
    assert [layer.index for layer in net.detection_heads] == [1, 5]
    assert net.loss(TARGETS) == before
    cls, t = classifier_net()
    for layer in cls.layers:
        object.__setattr__(layer, "kind", "renamed")
    assert loss_layer_indices(cls) == [3, 4]
    assert compute_losses(cls, cls._last_input, t).costs.keys() == {3, 4}


def test_outputs_are_the_heads_else_the_last_layer_darknet_does_not_skip():
    assert yolo_net().output_indices == [1, 5]
    cls, _ = classifier_net()
    assert cls.output_indices == [3]            # the [softmax]: get_network_output skips the [cost] after it


def test_a_layer_reading_a_loss_layer_is_refused():
    cfg = """[net]
width=4
height=4
channels=1

[connected]
output=3
activation=linear

[softmax]

[connected]
output=3
activation=linear

[softmax]
"""
    net = dn.load_cfg_text(cfg)
    with pytest.raises(ConfigError, match=r"layer 2 \[connected\] reads the loss layer 1"):
        loss_layer_indices(net)


def test_yolo_net_size_follows_resize():
    net = yolo_net()
    assert all(h.net_size == (16, 16) for h in net.detection_heads)
    net.resize(32, 48)
    assert all(h.net_size == (32, 48) for h in net.detection_heads)
    assert all(isinstance(h, YoloLayer) for h in net.detection_heads)
