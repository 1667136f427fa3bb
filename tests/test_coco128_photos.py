"""The real-photo path of ``deltaprop detector train`` on the three coco128 fixture photos: a ``.data`` file and
list, JPEG decoding, Darknet's label rule, augmentation with the cfg's settings (jitter from the last [yolo]
layer, as Darknet's ``train_detector`` reads it), the threaded loader, a dozen Darknet-exact steps at 64×64 in
which the loss falls, and mAP on the same photos. A few seconds on an idle 2-core machine; the full run on
16 photos at 320×320 is ``bench/coco128_overfit.py`` (docs/detection.md); its list and cfg are checked here."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import fixture_dir
from deltaprop import backend, darknet

pytest.importorskip("PIL", reason="the photos are JPEGs (Pillow, the images extra)")

# yolov3-tiny's head in miniature: 80 classes, two of its anchors, the [yolo] keys of yolov3-tiny.cfg
# (jitter=.3 there and only there: [net] has none, so the default .2 of [net] would be wrong).
CFG = """[net]
batch=3
subdivisions=1
width=64
height=64
channels=3
momentum=0.9
decay=0.0005
saturation = 1.5
exposure = 1.5
hue=.1
learning_rate=0.01
burn_in=0
max_batches=12
policy=constant

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=170
activation=linear

[yolo]
mask = 0,1
anchors = 10,14,  81,82
classes=80
num=2
jitter=.3
ignore_thresh = .7
truth_thresh = 1
random=0
"""


@pytest.fixture()
def coco_data(tmp_path):
    images = sorted(fixture_dir("coco128", "images").glob("*.jpg"))
    assert len(images) == 3
    (tmp_path / "photos.txt").write_text("".join(f"{p}\n" for p in images))
    (tmp_path / "photos.data").write_text(
        f"classes = 80\ntrain = photos.txt\nvalid = photos.txt\n"
        f"names = {fixture_dir('coco128', 'coco.names')}\nbackup = backup\n")
    (tmp_path / "mini.cfg").write_text(CFG)
    return tmp_path


def _training(root: Path, **kw):
    from deltaprop.data.detection import read_data_file
    from deltaprop.detect.train import DetectorTraining, TrainOptions
    backend.manual_seed(0)
    net = darknet.load(root / "mini.cfg")
    opts = TrainOptions(**dict(dict(log_every=1, save_every=0, workers=1, progress=False, chart=False), **kw))
    return DetectorTraining(net, read_data_file(root / "photos.data"), root / "backup", "mini", opts,
                            log=lambda s: None)


def test_augmentation_settings_come_from_the_cfg_as_in_darknet(coco_data):
    run = _training(coco_data)
    a = run.augment
    assert (a.jitter, a.hue, a.saturation, a.exposure, a.flip) == (0.3, 0.1, 1.5, 1.5, True)
    assert run.random is False and len(run.dataset) == 3
    x, targets = run.loader.make_batch(0, 0, 64, 64)
    run.loader.close()
    assert x.shape == (3, 3, 64, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # every box of the photos is on the canvas (a few tiny ones may be cut off by the jitter)
    assert sum(len(t) for t in targets) >= 8 and all(((t[:, 1:] >= 0) & (t[:, 1:] <= 1)).all() for t in targets)
    # augmented, not just letterboxed: another epoch draws other crops and colours of the same photos
    x1, _ = run.loader.make_batch(1, 0, 64, 64)
    assert not np.array_equal(np.sort(x.reshape(3, -1).sum(1)), np.sort(x1.reshape(3, -1).sum(1)))


def test_loss_falls_on_the_fixture_photos_and_map_runs(coco_data):
    run = _training(coco_data, max_batches=12)
    hist = run.fit()
    losses = [r["loss"] for r in hist if "loss" in r]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert sum(h["count"] for h in run.net.yolo_stats) > 0
    assert (coco_data / "backup" / "mini_final.weights").is_file()
    from deltaprop.data.detection import image_list
    from deltaprop.detect.evaluate import evaluate_detector
    res = evaluate_detector(run.net, image_list(coco_data / "photos.txt"), 80, workers=1)
    assert int(res.gt.sum()) == 11 and 0 <= res.map50 <= 1


def _recipe():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "bench" / "coco128_overfit.py"
    spec = importlib.util.spec_from_file_location("coco128_overfit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_overfit_recipe_lists_labelled_photos_and_writes_its_cfg(tmp_path):
    """bench/coco128_overfit.py on a coco128-shaped folder: only photos with boxes are taken, in name order; the
    cfg is yolov3-tiny at 320x320 with the run's [net] settings and no multi-scale."""
    recipe = _recipe()
    coco = tmp_path / "coco"
    (coco / "images" / "train2017").mkdir(parents=True)
    (coco / "labels" / "train2017").mkdir(parents=True)
    for stem, label in [("b", "0 0.5 0.5 0.2 0.2\n"), ("a", "1 0.4 0.4 0.1 0.3\n"), ("c", ""), ("d", "2 .5 .5 .1 .1\n")]:
        (coco / "images" / "train2017" / f"{stem}.jpg").write_bytes(b"")
        (coco / "labels" / "train2017" / f"{stem}.txt").write_text(label)
    picked = recipe.pick_images(coco, 3)
    assert [p.stem for p in picked] == ["a", "b", "d"]
    with pytest.raises(SystemExit, match="fewer than 4"):
        recipe.pick_images(coco, 4)
    cfg = tmp_path / "y.cfg"
    recipe.write_cfg(cfg, 8, 0.001, 30, 1000, (700, 900))
    net = darknet.load(cfg)
    opts = net.net_options
    assert tuple(net.input_shape) == (3, 320, 320)
    assert (opts["batch"], opts["learning_rate"], opts["burn_in"], opts["max_batches"]) == (8, 0.001, 30, 1000)
    assert not any(layer.random for layer in net.layers if layer.kind == "yolo")
