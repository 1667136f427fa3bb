"""AlexeyAB's layers and options (docs/darknet.md, "AlexeyAB's Darknet"): the fork a cfg is read as, every key
refused by name unless implemented, [route] groups, [maxpool] maxpool_depth, swish/mish/hard_mish (gradient
checks in float64, PyTorch parity), [yolo] scale_x_y, the IoU kinds and their gradients (``dx_box_iou``), the
[yolo] training options on hand-built cases against ``process_batch``'s rules, its NMS kinds, and the convolution
backward that overwrites its input's gradient."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop.darknet as dn
from deltaprop.darknet.activations import DarknetActivation
from deltaprop.darknet.cfg import ALEXEYAB_KEYS, PJREDDIE_KEYS, SECTION_KEYS, cfg_fork, parse_cfg_text
from deltaprop.detect.boxes import Detections, nms_sort
from deltaprop.errors import ConfigError, ValueRangeError
from deltaprop.functional import activation_smooth as smooth
from deltaprop.functional import yolo_loss_alexeyab as ab
from deltaprop.functional.channel_maxpool import channel_maxpool_backward, channel_maxpool_forward
from deltaprop.geometry.boxes import box_ciou, box_diou, box_giou, box_iou, enclosing
from deltaprop.gradcheck import numerical_gradient, relative_error

NET = "[net]\nwidth=8\nheight=8\nchannels=4\n\n"


# --- the fork and the keys -------------------------------------------------------------------------------

def test_cfg_fork_is_alexeyabs_when_it_uses_its_options():
    assert cfg_fork(parse_cfg_text(NET + "[route]\nlayers=-1\n")) == "pjreddie"
    assert cfg_fork(parse_cfg_text(NET + "[route]\nlayers=-1\ngroups=1\n")) == "alexeyab"
    assert dn.load_cfg_text(NET + "[convolutional]\nfilters=2\nactivation=leaky\n").fork == "pjreddie"
    assert dn.load_cfg_text(NET + "[convolutional]\nfilters=2\nactivation=mish\n").fork == "alexeyab"
    net = dn.load_cfg_text(NET + "[convolutional]\nfilters=4\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n")
    assert net.fork == "alexeyab" and net.layers[1].out_shape == (2, 8, 8)
    assert dn.load_cfg_text(NET + "[convolutional]\nfilters=2\nactivation=leaky\n", fork="alexeyab").fork == "alexeyab"


def test_unimplemented_keys_of_both_forks_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"<t>:7: \[yolo\] key 'focal_loss=1' is a AlexeyAB Darknet option that "
                                          r"deltaprop does not implement; remove the line \(or set focal_loss=0\)"):
        parse_cfg_text(NET + "[yolo]\nfocal_loss=1\n", "<t>")
    parse_cfg_text(NET + "[yolo]\nfocal_loss=0\n", "<t>")                 # at its inert value it is accepted
    with pytest.raises(ConfigError, match=r"\[net\] key 'mosaic=1' is a AlexeyAB Darknet option"):
        parse_cfg_text("[net]\nwidth=8\nheight=8\nchannels=3\nmosaic=1\n", "<t>")
    with pytest.raises(ConfigError, match=r"\[convolutional\] key 'dilation=2' is a AlexeyAB Darknet option"):
        parse_cfg_text(NET + "[convolutional]\ndilation=2\n", "<t>")
    with pytest.raises(ConfigError, match=r"\[convolutional\] unknown key 'kernel'"):
        parse_cfg_text(NET + "[convolutional]\nkernel=3\n", "<t>")
    # an AlexeyAB [yolo] option in a network built as pjreddie's is refused, naming the fork
    text = NET + "[convolutional]\nfilters=12\nsize=1\n[yolo]\nclasses=1\nnum=2\nmask=0,1\nanchors=1,1,2,2\nscale_x_y=1.1\n"
    with pytest.raises(ConfigError, match=r"key 'scale_x_y': is an option of AlexeyAB's Darknet: load this cfg with "
                                          r"fork='alexeyab'"):
        dn.load_cfg_text(text, fork="pjreddie")
    assert dn.load_cfg_text(text).layers[1].scale_x_y == pytest.approx(1.1)


def test_every_key_of_both_forks_is_implemented_or_refused():
    for table in (PJREDDIE_KEYS, ALEXEYAB_KEYS):
        for section, keys in table.items():
            header = "[net]\n" if section == "net" else NET + f"[{section}]\n"
            for key in keys:
                try:
                    parse_cfg_text(header + f"{key}=7\n", "<t>")
                except ConfigError as e:
                    assert f"'{key}" in str(e) and "unknown key" not in str(e), (section, key, str(e))
                    continue
                assert key in SECTION_KEYS[section], (section, key)


# --- [route] groups, [maxpool] maxpool_depth ---------------------------------------------------------------

def test_route_groups_slices_and_its_backward_is_the_adjoint():
    net = dn.load_cfg_text(NET + "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[route]\nlayers=-1\n"
                           "groups=2\ngroup_id=1\n[route]\nlayers=-2,-1\n", numerics="standard", dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8))
    net.train()
    out = net(x)
    a = net.layer_outputs[0]
    assert np.array_equal(net.layer_outputs[1], a[:, 2:4])              # group 1 of 2: channels 2, 3
    assert np.array_equal(out, np.concatenate([a, a[:, 2:4]], axis=1))
    g = np.random.default_rng(1).standard_normal(out.shape)
    dx = net.backward(g)
    num, _ = numerical_gradient(lambda: float(np.sum(net(x) * g)), x)
    assert relative_error(dx, num) < 1e-8
    conv = NET + "[convolutional]\nfilters=4\nsize=1\n"
    with pytest.raises(ConfigError, match=r"groups=3 must divide the 4 channels"):
        dn.load_cfg_text(conv + "[route]\nlayers=-1\ngroups=3\n")
    with pytest.raises(ConfigError, match=r"group_id.*must be ≤ 1"):
        dn.load_cfg_text(conv + "[route]\nlayers=-1\ngroups=2\ngroup_id=2\n")


def test_channel_maxpool_forward_first_maximum_and_gradient():
    x = np.random.default_rng(2).standard_normal((2, 6, 3, 4))
    x[0, 4, 1, 1] = x[0, 1, 1, 1] = 9.0                                 # a tie in group 1: channel 1 wins
    y, cache = channel_maxpool_forward(x, 3)
    loops = np.stack([np.max(x[:, g::3], axis=1) for g in range(3)], axis=1)
    assert np.array_equal(y, loops)
    assert cache.argmax[0, 1, 1, 1] == 1
    g = np.random.default_rng(3).standard_normal(y.shape)
    dx = channel_maxpool_backward(g, cache)
    assert dx[0, 4, 1, 1] == 0 and dx[0, 1, 1, 1] == g[0, 1, 1, 1]
    xs = x.copy()
    xs[0, 4, 1, 1] = 8.0                                                # off the tie for the centred differences
    _, cache = channel_maxpool_forward(xs, 3)
    num, kinks = numerical_gradient(lambda: float(np.sum(channel_maxpool_forward(xs, 3)[0] * g)), xs)
    assert not kinks.any() and relative_error(channel_maxpool_backward(g, cache), num) < 1e-9
    net = dn.load_cfg_text(NET + "[maxpool]\nmaxpool_depth=1\nout_channels=2\n")
    assert net.fork == "alexeyab" and net.layers[0].out_shape == (2, 8, 8)


# --- activations -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["swish", "mish", "hard_mish"])
def test_smooth_activation_gradients(name):
    z = np.linspace(-3.7, 3.3, 41)                                      # off hard-mish's kinks at −2 and 0
    act = DarknetActivation(name)
    act.forward(z)
    d = act.backward(np.ones_like(z))
    f = {"swish": smooth.swish_forward, "mish": smooth.mish_forward, "hard_mish": smooth.hard_mish_forward}[name]
    zz = z.copy()
    num, kinks = numerical_gradient(lambda: float(np.sum(f(zz))), zz)
    assert not kinks.any() and relative_error(d, num) < 1e-8


def test_smooth_activations_match_pytorch_and_darknet_thresholds():
    torch = pytest.importorskip("torch")
    z = np.random.default_rng(4).standard_normal(200) * 6
    t = torch.tensor(z, requires_grad=True)
    for ours, grad, theirs in ((smooth.mish_forward, smooth.mish_derivative, torch.nn.functional.mish),
                               (smooth.swish_forward, smooth.swish_derivative, torch.nn.functional.silu)):
        t.grad = None
        theirs(t).sum().backward()
        assert np.allclose(ours(z), theirs(t).detach().numpy(), rtol=1e-12, atol=1e-12)
        assert np.allclose(grad(z), t.grad.numpy(), rtol=1e-10, atol=1e-12)
    # Darknet's softplus threshold: above 20 mish is z·tanh(z), below −20 z·tanh(e^z)
    assert smooth.mish_forward(np.array([25.0]))[0] == 25.0
    assert smooth.hard_mish_forward(np.array([-1.0, -2.5, 0.5])).tolist() == [-0.5, 0.0, 0.5]


# --- [yolo]: scale_x_y, IoU kinds, dx_box_iou ------------------------------------------------------------

def yolo_cfg(extra: str = "", classes: int = 2) -> str:
    return (NET + f"[convolutional]\nfilters={2 * (5 + classes)}\nsize=1\nactivation=linear\n[yolo]\nmask=0,1\n"
            f"anchors=2,3,5,4,7,7\nnum=3\nclasses={classes}\n" + extra)


def test_scale_x_y_forward_and_standard_backward():
    net = dn.load_cfg_text(yolo_cfg("scale_x_y=1.2\n"), numerics="standard", dtype=np.float64)
    layer = net.layers[1]
    x = np.random.default_rng(5).standard_normal((1, 14, 8, 8))
    y = layer.forward(x)
    s = 1 / (1 + np.exp(-x[:, 0]))
    assert np.allclose(y[:, 0], 1.2 * s - 0.1)
    g = np.random.default_rng(6).standard_normal(y.shape)
    dx = layer.backward(g)
    num, _ = numerical_gradient(lambda: float(np.sum(layer.forward(x) * g)), x)
    assert relative_error(dx, num) < 1e-8


def test_iou_kinds_by_hand():
    a, b = np.array([0.5, 0.5, 0.2, 0.3]), np.array([0.55, 0.45, 0.25, 0.2])
    iou = box_iou(a, b)
    inter = (0.6 - 0.425) * (0.55 - 0.35)
    assert iou == pytest.approx(inter / (0.06 + 0.05 - inter))
    cw, ch = 0.675 - 0.4, 0.65 - 0.35                                  # the enclosing box
    assert box_giou(a, b) == pytest.approx(iou - (cw * ch - (0.06 + 0.05 - inter)) / (cw * ch))
    d = 0.05 ** 2 + 0.05 ** 2
    assert box_diou(a, b) == pytest.approx(iou - (d / (cw ** 2 + ch ** 2)) ** 0.6)   # AlexeyAB's exponent
    assert box_diou(a, b, beta=1.0) == pytest.approx(iou - d / (cw ** 2 + ch ** 2))
    v = 4 / np.pi ** 2 * (np.arctan(0.25 / 0.2) - np.arctan(0.2 / 0.3)) ** 2
    alpha = v / (1 - iou + v + 1e-6)
    assert box_ciou(a, b) == pytest.approx(iou - (d / (cw ** 2 + ch ** 2) + alpha * v))


@pytest.mark.parametrize("kind", ["iou", "giou"])
def test_dx_box_iou_is_the_iou_gradient_for_x_y_and_twice_it_for_w_h(kind):
    truth = np.array([0.52, 0.47, 0.3, 0.25])
    measure = {"iou": box_iou, "giou": box_giou}[kind]
    for pred in (np.array([0.5, 0.5, 0.2, 0.3]), np.array([0.45, 0.55, 0.35, 0.18])):
        got = np.array(ab.dx_box_iou(pred, truth, kind))
        p = pred.copy()
        num, kinks = numerical_gradient(lambda: float(measure(p, truth)), p, h=1e-7)
        assert not kinks.any()
        assert np.allclose(got[:2], num[:2], rtol=1e-5) and np.allclose(got[2:], 2 * num[2:], rtol=1e-5)


def test_dx_box_iou_distance_terms():
    """DIoU/CIoU add the distance penalty d/c's term (the DIoU paper's, exponent 1, not the 0.6 of ``box_diou``) to
    the IoU part: for x, y ``−(∂d/∂x)/c − d·(∂c/∂x)/c²``, which is −∂(d/c) where the enclosing box does not move
    with the prediction and has the ∂c part's sign flipped where it does (AlexeyAB's code); CIoU adds
    ``α·(8/π²)(atan(w_t/h_t) − atan(w/h))·(h, −w)`` to the w, h parts, α held constant."""
    truth = np.array([0.52, 0.47, 0.3, 0.25])
    two = lambda p: np.broadcast_arrays(p, truth)
    dist = lambda p: float((p[0] - truth[0]) ** 2 + (p[1] - truth[1]) ** 2)
    diag = lambda p: float(sum(v ** 2 for v in enclosing(*two(p))))
    inside = 0
    for pred in (np.array([0.50, 0.48, 0.1, 0.1]), np.array([0.45, 0.55, 0.35, 0.18])):
        base = np.array(ab.dx_box_iou(pred, truth, "iou"))
        diou = np.array(ab.dx_box_iou(pred, truth, "diou"))
        p = pred.copy()
        dd, _ = numerical_gradient(lambda: dist(p), p, h=1e-7)
        dc, _ = numerical_gradient(lambda: diag(p), p, h=1e-7)
        d, c = dist(pred), diag(pred)
        assert np.allclose(diou[:2] - base[:2], -dd[:2] / c - d * dc[:2] / c ** 2, rtol=1e-5, atol=1e-9)
        if not dc[:2].any():      # inside the truth: the enclosing box is the truth's, the term is −∂(d/c)
            num, _ = numerical_gradient(lambda: float(box_iou(p, truth) - box_diou(p, truth, beta=1.0)), p, h=1e-7)
            assert np.allclose(diou[:2] - base[:2], -num[:2], rtol=1e-5)
            inside += 1
    assert inside == 1
    pred = np.array([0.45, 0.55, 0.35, 0.18])
    ciou = np.array(ab.dx_box_iou(pred, truth, "ciou"))
    diou = np.array(ab.dx_box_iou(pred, truth, "diou"))
    v = 4 / np.pi ** 2 * (np.arctan(0.3 / 0.25) - np.arctan(0.35 / 0.18)) ** 2
    alpha = v / (1 - box_iou(pred, truth) + v + 1e-6)
    diff = np.arctan(0.3 / 0.25) - np.arctan(0.35 / 0.18)
    assert ciou[2] - diou[2] == pytest.approx(alpha * 8 / np.pi ** 2 * diff * 0.18, rel=1e-6)
    assert ciou[3] - diou[3] == pytest.approx(-alpha * 8 / np.pi ** 2 * diff * 0.35, rel=1e-6)


# --- [yolo] training rules (process_batch) ----------------------------------------------------------------

def _layer_out(classes=2, seed=7, n=1):
    """A [yolo] output (N, 2·(5+K), 4, 4): logistic entries in (0, 1), w, h small."""
    rs = np.random.default_rng(seed)
    v = rs.uniform(0.05, 0.95, (n, 2, 5 + classes, 4, 4)).astype(np.float32)
    v[:, :, 2:4] = rs.uniform(-0.5, 0.5, (n, 2, 2, 4, 4))
    return v.reshape(n, 2 * (5 + classes), 4, 4)


ANCH = [(2.0, 3.0), (5.0, 4.0), (7.0, 7.0)]


def _deltas(out, truths, opt, net=16):
    asg = ab.yolo_assign_alexeyab(out, truths, ANCH, [0, 1], 2, net, net, opt)
    return asg, ab.yolo_deltas_alexeyab(out, asg, ANCH, [0, 1], 2, net, net, opt)


def test_mse_box_and_objectness_deltas_with_normalizers():
    out = _layer_out()
    t = np.array([[0.40, 0.30, 5.0 / 16, 4.0 / 16, 1]], np.float32)   # best anchor 1, cell (1, 1)
    opt = ab.AlexeyABYoloOptions(iou_normalizer=0.5, obj_normalizer=0.8, ignore_thresh=1.0)
    _, res = _deltas(out, [t], opt)
    v, d = out.reshape(1, 2, 7, 4, 4), res.delta.reshape(1, 2, 7, 4, 4)
    scale = np.float32(2) - t[0, 2] * t[0, 3]
    assert d[0, 1, 0, 1, 1] == pytest.approx(scale * (0.40 * 4 - 1 - v[0, 1, 0, 1, 1]) * 0.5, rel=1e-6)
    assert d[0, 1, 2, 1, 1] == pytest.approx(scale * (np.log(1.0) - v[0, 1, 2, 1, 1]) * 0.5, abs=1e-6)
    assert d[0, 1, 4, 1, 1] == pytest.approx(0.8 * (1 - v[0, 1, 4, 1, 1]), rel=1e-6)
    assert d[0, 0, 4, 2, 3] == pytest.approx(0.8 * -v[0, 0, 4, 2, 3], rel=1e-6)
    assert d[0, 1, 5 + 1, 1, 1] == pytest.approx(1 - v[0, 1, 6, 1, 1]) and d[0, 1, 5, 1, 1] == pytest.approx(-v[0, 1, 5, 1, 1])
    assert res.stats.count == 1


def test_ignore_needs_a_class_above_a_quarter():
    out = _layer_out()
    v = out.reshape(1, 2, 7, 4, 4)
    t = np.array([[0.40, 0.30, 5.0 / 16, 4.0 / 16, 1]], np.float32)
    opt = ab.AlexeyABYoloOptions(ignore_thresh=0.0)                     # every prediction overlapping the truth
    v[:, :, 5:] = 0.1                                                   # no class above 0.25: nothing is ignored
    asg, _ = _deltas(out, [t], opt)
    assert not asg.ignored.any()
    v[0, 0, 5, 0, 0] = 0.3
    asg, _ = _deltas(out, [t], opt)
    pred = np.array([v[0, 0, 0, 0, 0] / 4, v[0, 0, 1, 0, 0] / 4, 2 / 16 * np.exp(v[0, 0, 2, 0, 0]),
                     3 / 16 * np.exp(v[0, 0, 3, 0, 0])])
    assert asg.ignored[0, 0, 0, 0] == (box_iou(pred, t[0, :4]) > 0)   # the one prediction with a class > 0.25
    assert asg.ignored.sum() == asg.ignored[0, 0, 0, 0]


def test_class_multipliers_label_smoothing_and_cls_normalizer():
    out = _layer_out()
    v = out.reshape(1, 2, 7, 4, 4)
    t = np.array([[0.40, 0.30, 5.0 / 16, 4.0 / 16, 1]], np.float32)
    cm = ab.classes_multipliers([100, 25], 1e9)
    assert cm == (1.0, 4.0)
    opt = ab.AlexeyABYoloOptions(classes_multipliers=cm, cls_normalizer=0.5, label_smooth_eps=0.1, ignore_thresh=1.0)
    _, res = _deltas(out, [t], opt)
    d = res.delta.reshape(1, 2, 7, 4, 4)
    y1, y0 = 1 * 0.9 + 0.05, 0.05
    assert d[0, 1, 6, 1, 1] == pytest.approx((y1 - v[0, 1, 6, 1, 1]) * 4 * 0.5, rel=1e-5)   # truth class × m·cls
    assert d[0, 1, 5, 1, 1] == pytest.approx(y0 - v[0, 1, 5, 1, 1], rel=1e-5)
    assert d[0, 1, 4, 1, 1] == pytest.approx(4 * (1 - v[0, 1, 4, 1, 1]), rel=1e-5)          # obj × m
    assert ab.classes_multipliers([100, 1], 10.0) == (1.0, 10.0)                             # capped at max_delta


def test_ciou_deltas_clip_and_iou_thresh_averaging():
    out = _layer_out(seed=9)
    t = np.array([[0.40, 0.30, 4.0 / 16, 4.0 / 16, 0]], np.float32)
    opt = ab.AlexeyABYoloOptions(iou_loss="ciou", iou_normalizer=0.07, max_delta=0.01, ignore_thresh=1.0)
    _, res = _deltas(out, [t], opt)
    box = res.delta.reshape(1, 2, 7, 4, 4)[0, :, 0:4]
    assert np.abs(box).max() <= 0.01 + 1e-9 and np.count_nonzero(box) == 4
    # iou_thresh: a second anchor of the mask close enough in shape also trains the truth; the box deltas of a
    # cell are then divided by its number of positive class deltas
    opt = ab.AlexeyABYoloOptions(iou_thresh=0.2, ignore_thresh=1.0)
    asg, res = _deltas(out, [t], opt)
    assert [(n, a) for _, n, a in asg.trains[0]] == [(1, 1), (0, 0)]
    assert res.stats.count == 2


def test_truths_in_one_cell_add_their_box_deltas():
    out = _layer_out(seed=11)
    t = np.array([[0.40, 0.30, 5.0 / 16, 4.0 / 16, 0], [0.41, 0.31, 5.2 / 16, 4.1 / 16, 1]], np.float32)
    opt = ab.AlexeyABYoloOptions(ignore_thresh=1.0)
    _, both = _deltas(out, [t], opt)
    _, first = _deltas(out, [t[:1]], opt)
    _, second = _deltas(out, [t[1:]], opt)
    db, d1, d2 = (r.delta.reshape(1, 2, 7, 4, 4)[0, 1, 0:4, 1, 1] for r in (both, first, second))
    assert np.allclose(db, d1 + d2, rtol=1e-6)
    dc = both.delta.reshape(1, 2, 7, 4, 4)[0, 1, 5:7, 1, 1]
    v = out.reshape(1, 2, 7, 4, 4)[0, 1, 5:7, 1, 1]
    assert np.allclose(dc, 1 - v)                         # the second truth's class test: its own class only


def test_standard_numerics_refuse_iou_losses_and_weight_mse():
    net = dn.load_cfg_text(yolo_cfg("iou_loss=ciou\n"), numerics="standard", dtype=np.float64)
    net.train()
    net(np.random.default_rng(0).standard_normal((1, 4, 8, 8)))
    with pytest.raises(ValueRangeError, match=r"iou_loss has no standard form"):
        net.loss([np.array([[0, 0.4, 0.3, 0.3, 0.25]])])
    net = dn.load_cfg_text(yolo_cfg("iou_normalizer=0.5\nobj_normalizer=2\n"), numerics="standard",
                           dtype=np.float64)
    rng = np.random.default_rng(1)
    for p in net.parameters():
        p.data += 0.3 * rng.standard_normal(p.data.shape)
    x = rng.standard_normal((1, 4, 8, 8))
    targets = [np.array([[0, 0.4, 0.3, 0.3, 0.25]])]
    net.train()
    net(x)
    net.loss(targets)
    fixed = net.last_loss.assignments
    dx = net.backward()

    def objective():
        net(x)
        net.loss(targets, assignments=fixed)
        return net.loss_total
    num, kinks = numerical_gradient(objective, x)
    assert not kinks.any() and relative_error(dx, num) < 1e-7


# --- NMS kinds, the overwriting backward ---------------------------------------------------------------------

def test_nms_kinds():
    boxes = np.array([[0.50, 0.50, 0.40, 0.40], [0.62, 0.50, 0.40, 0.40]])
    dets = Detections(boxes, np.array([0.9, 0.8]), np.array([[0.9], [0.8]]))
    iou = float(box_iou(boxes[0], boxes[1]))
    diou06 = float(box_diou(boxes[0], boxes[1]))
    thresh = (iou + diou06) / 2                                         # between the two measures
    assert nms_sort(dets, thresh).probs[:, 0].tolist() == [0.9, 0.0]            # IoU above: suppressed
    assert nms_sort(dets, thresh, "greedynms").probs[:, 0].tolist() == [0.9, 0.8]  # DIoU (0.6) below: kept
    beta = 3.0
    assert float(box_diou(boxes[0], boxes[1], beta=beta)) > thresh
    assert nms_sort(dets, thresh, "diounms", beta).probs[:, 0].tolist() == [0.9, 0.0]
    with pytest.raises(ConfigError, match=r"unknown NMS kind 'soft'"):
        dn.load_cfg_text(yolo_cfg("nms_kind=soft\n"))


def test_alexeyab_convolution_backward_overwrites_its_inputs_gradient():
    """Layer 0 feeds the convolution 1 and the route 2. In AlexeyAB's Darknet numerics the convolution's backward
    (col2im_cpu_ext) replaces the gradient the route had already sent to layer 0; pjreddie's, and the standard
    numerics, add both."""
    text = (NET + "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[convolutional]\nfilters=4\nsize=3\n"
            "pad=1\nactivation=linear\n[route]\nlayers=-1,-2\n")
    x = np.random.default_rng(0).standard_normal((1, 4, 8, 8))
    grads = {}
    for fork, numerics in (("pjreddie", "darknet"), ("alexeyab", "darknet"), ("alexeyab", "standard")):
        deltaprop_seed = 3
        net = dn.load_cfg_text(text, fork=fork, numerics=numerics, dtype=np.float64)
        rs = np.random.default_rng(deltaprop_seed)
        for p in net.parameters():
            p.data[...] = rs.standard_normal(p.data.shape)
        net.train()
        out = net(x)
        net.backward(np.ones_like(out))                # the route sends 1 to each value of layer 0
        grads[fork, numerics] = net.layer_grads[0]
        assert net.overwriting_layers() == ([0, 1] if (fork, numerics) == ("alexeyab", "darknet") else [])
    assert np.allclose(grads["pjreddie", "darknet"], grads["alexeyab", "standard"])
    assert np.allclose(grads["pjreddie", "darknet"] - grads["alexeyab", "darknet"], 1.0)


def test_docs_list_every_key_of_both_forks_with_its_status():
    import re
    from conftest import ROOT
    text = (ROOT / "docs" / "darknet.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `\[(\w+)\]` \| `(\w+)` \| (✓?) \| (✓?) \| (.+) \|$", text, flags=re.M)
    listed = {(sec, key): status for sec, key, _, _, status in rows}
    every = {(sec, key) for table in (PJREDDIE_KEYS, ALEXEYAB_KEYS) for sec, keys in table.items() for key in keys}
    assert set(listed) == every
    for (sec, key), status in listed.items():
        if status.startswith("refused ("):       # read by the planner, which refuses it ([yolo] map, [softmax] tree)
            assert key in SECTION_KEYS[sec], (sec, key)
        else:
            assert status.startswith("refused") == (key not in SECTION_KEYS[sec]), (sec, key, status)
