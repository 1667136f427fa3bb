"""Darknet-exact detection training in the Darknet trainer: yolov3-tiny's loss falls on a real coco128 photo,
``fit_detection`` on an in-memory iterable (subdivisions, .weights checkpoints, per-head statistics),
Darknet's multi-scale rule and ``DarknetNet.resize``, and the errors of bad settings."""
import argparse
import math

import numpy as np
import pytest

import deltaprop
import deltaprop.darknet as dn
from conftest import fixture_dir
from darknet_testutil import yolo_section
from deltaprop.darknet.trainer import DarknetTrainer, merge_yolo_stats, region_line
from deltaprop.errors import ConfigError

SMALL = """[net]
batch=4
subdivisions=2
width=32
height=32
channels=3
learning_rate=0.01
momentum=0.9
decay=0.0005
burn_in=3
max_batches=30
policy=steps
steps=20
scales=.1

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
filters=14
activation=linear

{head1}
[route]
layers=-4

[convolutional]
size=1
stride=1
filters=14
activation=linear

{head2}"""


ANCHORS = "4,5, 8,6, 12,14, 20,18"


def small_cfg(random=0, classes=2):
    return SMALL.format(head1=yolo_section([2, 3], ANCHORS, classes, random=random),
                        head2=yolo_section([0, 1], ANCHORS, classes, random=random))


def small_net(random=0):
    deltaprop.manual_seed(1)
    return dn.load_cfg_text(small_cfg(random))


def scene(rng, size=32):
    """An image with two bright rectangles and their boxes."""
    x = np.full((3, size, size), 0.2, np.float32)
    rows = []
    for cls, (w, h) in enumerate([(10, 12), (5, 4)]):
        cx, cy = rng.uniform(w, size - w), rng.uniform(h, size - h)
        x[cls, int(cy - h / 2):int(cy + h / 2), int(cx - w / 2):int(cx + w / 2)] = 0.9
        rows.append([cls, cx / size, cy / size, w / size, h / size])
    return x, np.array(rows, np.float32)


def batches(n_batches=3, per=2, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        xs, ts = zip(*[scene(rng) for _ in range(per)])
        out.append((np.stack(xs), list(ts)))
    return out


def test_yolov3_tiny_loss_falls_on_a_coco128_photo():
    """The heaviest here (5 s idle, 20 s with the machine loaded): the shipped yolov3-tiny.cfg, Darknet's random
    weights, at 128×128 (grids 4 and 8), 20 Darknet-exact steps on one letterboxed coco128 photo with its three
    labels."""
    from deltaprop.data.detection import DetectionDataset
    img = fixture_dir("coco128", "images", "000000002592.jpg")
    deltaprop.manual_seed(0)
    net = dn.load("yolov3-tiny", width=128, height=128, batch=1)
    assert net.numerics == "darknet" and [head.index for head in net.detection_heads] == [16, 23]
    x, rows = DetectionDataset([img], 80, 128, 128)[0]
    assert len(rows) == 3
    tr = DarknetTrainer(net, batch=1, subdivisions=1, learning_rate=0.001, max_batches=100, multiscale=False)
    tr.policy.burn_in = 0
    losses = []
    for _ in range(20):
        res = tr.train_step(x[None], [rows])
        assert [s["layer"] for s in res.yolo_stats] == [16, 23]
        assert sum(s["count"] for s in res.yolo_stats) == 3            # each truth in exactly one head
        losses.append(res.loss)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < losses[0] / 10, losses
    assert net.seen == 20


def test_fit_detection_on_an_in_memory_iterable(tmp_path):
    net = small_net()
    tr = DarknetTrainer(net, max_batches=30, multiscale=False)
    assert (tr.batch, tr.subdivisions, tr.mini_batch) == (4, 2, 2)
    logs = []
    hist = tr.fit_detection(batches(), out_dir=tmp_path, base="small", save_every=10, log_every=5,
                            progress=False, log=logs.append)
    assert net.seen == 120 and tr.current_batch == 30
    assert [r["batch"] for r in hist] == [5, 10, 15, 20, 25, 30]
    assert all(len(r["yolo"]) == 2 and r["yolo"][0]["layer"] == 3 and r["size"] == 32 for r in hist)
    assert hist[-1]["loss"] < hist[0]["loss"]
    # burn_in=3, then policy steps: ×0.1 from batch 20 (the classifier's schedule, DarknetLR)
    assert [r["lr"] for r in hist] == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.001], rel=1e-6)
    assert any(line.startswith("Region 3 Avg IOU:") for line in logs)
    assert any(line.startswith("Region 6 Avg IOU:") for line in logs)
    names = sorted(p.name for p in tmp_path.glob("*.weights"))
    assert names == ["small_10.weights", "small_20.weights", "small_final.weights", "small_last.weights"]
    assert sorted(p.name for p in tmp_path.glob("*.state.npz")) == \
        ["small_10.state.npz", "small_20.state.npz", "small_last.state.npz"]
    back = dn.load_cfg_text(small_cfg())
    dn.load_weights(back, tmp_path / "small_final.weights")
    assert back.seen == 120
    for a, b in zip(back.parameters(), net.parameters()):
        assert np.array_equal(a.data, b.data)


def test_subdivisions_add_up_to_one_update():
    """batch 4 as 2 × 2 gives the update of batch 4 as 1 × 4 (the BN statistics aside: no BN here)."""
    cfg = small_cfg().replace("batch_normalize=1\n", "")
    (x1, t1), (x2, t2) = batches(2)
    X, T = np.concatenate([x1, x2]), t1 + t2
    params = []
    for sub in (2, 1):
        deltaprop.manual_seed(1)
        net = dn.load_cfg_text(cfg)
        res = DarknetTrainer(net, subdivisions=sub).train_step(X, T)
        params.append([p.data.copy() for p in net.parameters()])
        stats = res.yolo_stats
    for a, b in zip(*params):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert stats[0]["count"] + stats[1]["count"] > 0
    assert res.lr == pytest.approx(0.01 * (1 / 3) ** 4, rel=1e-6) and res.batch_num == 1    # burn_in=3


def test_merge_stats_weights_by_count():
    a = {"layer": 3, "avg_iou": 0.5, "class": 0.2, "obj": 0.1, "recall50": 1.0, "recall75": 0.0, "count": 1,
         "no_obj": 0.2, "predictions": 10}
    b = {"layer": 3, "avg_iou": 0.2, "class": 0.5, "obj": 0.4, "recall50": 0.0, "recall75": 0.0, "count": 3,
         "no_obj": 0.4, "predictions": 30}
    (m,) = merge_yolo_stats([[a], [b]])
    assert m["avg_iou"] == pytest.approx((0.5 + 3 * 0.2) / 4) and m["count"] == 4
    assert m["no_obj"] == pytest.approx((2 + 12) / 40)
    assert region_line(m).startswith("Region 3 Avg IOU: 0.275000, Class: 0.425000")


class SizedLoader:
    """An in-memory stand-in for DetectionLoader: scenes drawn at the size last asked for."""

    def __init__(self):
        self.size, self.asked = 32, []
        self.rng = np.random.default_rng(0)

    def set_size(self, w, h):
        self.asked.append((w, h))
        self.size = w

    def __iter__(self):
        for _ in range(3):
            xs, ts = zip(*[scene(self.rng, self.size) for _ in range(4)])
            yield np.stack(xs), list(ts)


def test_multiscale_rule_and_resize():
    net = small_net(random=1)
    tr = DarknetTrainer(net, max_batches=10_000, multiscale=(64, 128))
    sizes = [tr.next_size() for _ in range(31)]
    assert [k for k, s in enumerate(sizes) if s is not None] == [0, 10, 20, 30]
    assert all(s in (64, 96, 128) for s in sizes if s is not None)
    object.__setattr__(net, "seen", (10_000 - 150) * tr.batch)          # fewer than 200 batches left
    tr._scale_count = 0
    assert tr.next_size() == 128

    net = small_net(random=1)
    tr = DarknetTrainer(net, max_batches=12, multiscale=(64, 96), learning_rate=0.001)
    loader = SizedLoader()
    hist = tr.fit_detection(loader, log_every=4, progress=False, log=lambda s: None)
    assert loader.asked == [(96, 96)]        # batch 0 (the largest, near the end); batch 10 keeps it
    assert tr._scale_count == 12
    assert net.input_shape == (3, 96, 96) and hist[-1]["size"] == 96
    assert net.layers[3].out_shape[1:] == (24, 24)           # 96 / 4


def test_multiscale_needs_a_resizable_loader():
    tr = DarknetTrainer(small_net(random=1), max_batches=5)
    with pytest.raises(ConfigError, match="random=1"):
        tr.fit_detection(batches(), progress=False)
    # multiscale=False trains at the cfg's size
    DarknetTrainer(small_net(random=1), max_batches=2, multiscale=False).fit_detection(batches(), progress=False,
                                                                                      log=lambda s: None)


def test_resize_keeps_the_parameters_and_equals_a_net_built_at_that_size():
    net = small_net()
    rng = np.random.default_rng(3)
    for p in net.parameters():
        p.data += 0.1 * rng.standard_normal(p.data.shape).astype(np.float32)
    ids = [id(p) for p in net.parameters()]
    net.resize(64, 48)
    assert [id(p) for p in net.parameters()] == ids and net.input_shape == (3, 48, 64)
    fresh = dn.load_cfg_text(small_cfg(), width=64, height=48)
    for a, b in zip(fresh.parameters(), net.parameters()):
        a.data = b.data.copy()
    for name in ("running_mean", "running_var"):
        for la, lb in zip(fresh.layers, net.layers):
            if getattr(la, "bn", None) is not None:
                setattr(la.bn, name, getattr(lb.bn, name).copy())
    x = rng.uniform(0, 1, (2, 3, 48, 64)).astype(np.float32)
    for a, b in zip(net.predict(x), fresh.predict(x)):
        assert np.array_equal(a, b)
    conn = dn.load_cfg_text("[net]\nwidth=8\nheight=8\nchannels=1\n\n[connected]\noutput=3\n\n[softmax]\n")
    with pytest.raises(ConfigError, match="connected"):
        conn.resize(16, 16)


def test_cli_refuses_more_subdivisions_than_batch(tmp_path):
    from deltaprop.darknet import trainer_cli
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nbatch=2\nsubdivisions=1\nwidth=8\nheight=8\nchannels=1\nmax_batches=2\n\n"
                   "[connected]\noutput=3\n\n[softmax]\n")
    args = argparse.Namespace(cfg=str(cfg), weights=None, clear=False, data=None, subdivisions=4, batch_size=None,
                              out=str(tmp_path / "run"), seed=0)
    with pytest.raises(ConfigError, match="--subdivisions 4 with a batch of 2"):
        trainer_cli.run(args)


def test_cli_sends_detectors_to_the_detector_command(tmp_path):
    from deltaprop.darknet import trainer_cli
    cfg = tmp_path / "small.cfg"
    cfg.write_text(small_cfg())
    args = argparse.Namespace(cfg=str(cfg), weights=None, clear=False, data=None, subdivisions=None,
                              batch_size=None, out=str(tmp_path / "run"), seed=0)
    with pytest.raises(ConfigError, match="deltaprop detector train"):
        trainer_cli.run(args)


def test_fit_detection_with_the_detection_loader(tmp_path):
    """C's DetectionLoader (letterboxed coco128 fixture photos, 64×64, threads) feeds fit_detection."""
    from deltaprop.data.detection import DetectionDataset, DetectionLoader
    cfg = small_cfg(classes=80).replace("filters=14", "filters=170")
    deltaprop.manual_seed(2)
    net = dn.load_cfg_text(cfg, width=64, height=64)
    ds = DetectionDataset(sorted(fixture_dir("coco128", "images").glob("*.jpg")), 80, 64, 64)
    loader = DetectionLoader(ds, batch_size=2, seed=0, workers=1)
    try:
        tr = DarknetTrainer(net, max_batches=3, learning_rate=0.001, multiscale=False)
        hist = tr.fit_detection(loader, log_every=1, progress=False, log=lambda s: None)
    finally:
        loader.close()
    assert [r["batch"] for r in hist] == [1, 2, 3] and net.seen == 12
    assert all(math.isfinite(r["loss"]) for r in hist)
    assert sum(h["count"] for r in hist for h in r["yolo"]) > 0


def test_layer_grads_kept_only_when_asked():
    x, t = batches(1, per=4)[0]
    net = small_net()
    DarknetTrainer(net).train_step(x, t)
    assert net.layer_grads == [] and net.keep_layer_grads            # the trainer's default: no copies
    net = small_net()
    DarknetTrainer(net, keep_layer_grads=True).train_step(x, t)
    assert len(net.layer_grads) == 7 and net.layer_grads[2].shape == net.layer_outputs[2].shape
