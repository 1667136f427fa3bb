"""``deltaprop export``: a digit detector trained here (the shipped digits-tiny, 10 batches on small synthetic
scenes) exported with ``--cfg --weights`` finds through ONNX Runtime, with the decode and NMS of
``deltaprop.detect`` (the docs/export.md example), the boxes ``deltaprop detector test`` prints; its outputs equal
deltaprop's at the cfg size and another; ``.npz`` models export; every user mistake ends in one line and leaves no
file; the same command writes the same bytes, in another process too."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_testutil import cli, leftovers
from conftest import rel_err
import deltaprop as dp
from deltaprop import darknet, io, models
from export_testutil import RTOL, onnx, run_onnx

pytest.importorskip("PIL", reason="the digit scenes are images (Pillow, the images extra)")


def glyphs(n: int):
    """Made-up 28×28 "digits": class k is an L whose arms sit by k (no MNIST needed)."""
    x = np.zeros((n, 28, 28), np.uint8)
    y = np.arange(n) % 10
    for i, k in enumerate(y):
        x[i, 3:25, 3 + k:7 + k] = 255
        x[i, 21 - k:25 - k, 3:25] = 220
    return x, y


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(data file, 64×64 cfg, trained weights, test scenes): digits-tiny trained for 4 batches of 4 at a rate low
    enough that every seeded start still scores boxes (10 batches at 0.001 collapse some starts to no box)."""
    from deltaprop.data.detection import image_list, read_data_file
    from deltaprop.data.digits import DigitScenes, write_digit_scenes
    root = tmp_path_factory.mktemp("digits")
    data = write_digit_scenes(root / "set", DigitScenes(train=8, test=4, size=64, digit_min=16, digit_max=30,
                                                        max_digits=2), glyphs(40), glyphs(20), workers=1)
    text = Path(darknet.shipped_cfg("digits-tiny")).read_text()
    text = re.sub(r"burn_in=\d+", "burn_in=0", text).replace("width=128", "width=64").replace("height=128",
                                                                                           "height=64")
    cfg = root / "digits64.cfg"
    cfg.write_text(text)
    dp.manual_seed(0)                 # the initial weights, whatever ran before in this process
    rc, out, err = cli("detector", "train", data, cfg, "--max-batches", "4", "--batch", "4", "--lr", "0.0001",
                       "--backup", root / "backup", "--workers", "1", "--seed", "1", "--save-every", "0",
                       "--no-progress", "--log-every", "10")
    assert rc == 0, err
    weights = next((root / "backup").glob("*_final.weights"))
    return data, cfg, weights, image_list(read_data_file(data).valid)


def threshold_for_boxes(cfg, weights, images) -> float:
    """A score threshold in the widest gap between deltaprop's best distinct scores on ``images`` (at most the
    first eight), so that float rounding cannot move a box across it: a detector trained for seconds scores
    anything from 0 to 1, depending on its initial weights."""
    from deltaprop.detect import detect_image, load_image
    net = darknet.load(cfg, weights)
    scores = sorted({b.prob for p in images for b in detect_image(net, load_image(p, channels=3), 1e-6)},
                    reverse=True)[:9] + [0.0]
    assert len(scores) > 1, "the trained detector scores nothing"
    k = max(range(len(scores) - 1), key=lambda i: scores[i] - scores[i + 1])
    return (scores[k] + scores[k + 1]) / 2


def test_exported_detector_finds_the_boxes_of_detector_test(detector, tmp_path):
    import onnxruntime as ort
    from deltaprop.data.detection import read_data_file, read_names
    from deltaprop.detect import letterbox_image, load_image, network_detections, nms_sort, report
    data, cfg, weights, images = detector
    thresh = threshold_for_boxes(cfg, weights, images)
    rc, out, err = cli("export", "--cfg", cfg, "--weights", weights, tmp_path / "digits.onnx")
    assert rc == 0 and "outputs yolo_16 1x45x2x2, yolo_23 1x45x4x4" in out, (out, err)
    rc, printed, err = cli("detector", "test", data, cfg, weights, *images, "--no-draw", "--thresh", repr(thresh))
    assert rc == 0, err
    names = read_names(read_data_file(data).names)
    # the docs/export.md example: the cfg gives the anchors, ONNX Runtime the [yolo] outputs
    net = darknet.load(cfg)
    sess = ort.InferenceSession(str(tmp_path / "digits.onnx"), providers=["CPUExecutionProvider"])
    lines, found = [], 0
    for path in images:
        img = load_image(path, channels=3)
        x = letterbox_image(img, 64, 64)[None].astype(np.float32)
        outs = sess.run(None, {"input": x})
        dets = nms_sort(network_detections(net, outs, img.shape[2], img.shape[1], thresh), 0.45)
        boxes = report(dets, img.shape[2], img.shape[1], thresh, names)
        found += len(boxes)
        lines += [f"{path}: {len(boxes)} box(es)"] + [f"  {b}" for b in boxes]
    assert found >= 1, printed
    assert lines == printed.strip().splitlines()
    print(f"{found} boxes (score > {thresh:.3f}) on {len(images)} test scenes, the same through ONNX Runtime and "
          f"detector test")


@pytest.mark.parametrize("size", [None, (160, 96)], ids=["cfg-size", "160x96"])
def test_shipped_digits_tiny_with_the_trained_weights(detector, tmp_path, size):
    """The shipped digits-tiny.cfg (128×128) with the weights trained above: outputs equal at the cfg size and at
    160×96 (``--size``), on the test scenes letterboxed."""
    from deltaprop.detect import letterbox_image, load_image
    _, _, weights, images = detector
    w, h = size or (128, 128)
    argv = ["export", "--cfg", "digits-tiny", "--weights", weights, tmp_path / "d.onnx", "--dynamic-batch"]
    assert cli(*argv, *(["--size", *map(str, size)] if size else []))[0] == 0
    x = np.stack([letterbox_image(load_image(p, channels=3), w, h) for p in images]).astype(np.float32)
    net = darknet.load("digits-tiny", weights, width=w, height=h)
    got, want = run_onnx(tmp_path / "d.onnx", x), net.predict(x)
    errs = [rel_err(g, r) for g, r in zip(got, want)]
    assert max(errs) <= RTOL, errs
    print(f"digits-tiny {w}x{h}: max rel diff {max(errs):.2e}")


def test_npz_model_exports_with_its_preprocessing(tmp_path):
    io.save_model(tmp_path / "m.npz", models.build("lenet"), extra={"preprocess": {"scale": 0.5, "mean": 0.1,
                                                                                  "std": 0.3}})
    rc, out, err = cli("export", tmp_path / "m.npz", tmp_path / "m.onnx", "--batch", "2", "--no-fold",
                       "--opset", "9")
    assert rc == 0 and "opset 9, input input 2x1x28x28, output output 2x10" in out, err
    proto = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["deltaprop.preprocess"]) == {"mean": 0.1, "scale": 0.5, "std": 0.3}
    assert json.loads(props["deltaprop.input"]) == {"name": "input", "shape": [1, 28, 28]}
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    model = io.load_model(tmp_path / "m.npz").eval()
    assert rel_err(run_onnx(proto, x)[0], model(x)) <= RTOL


EXPORT_SCRIPT = ("import sys, deltaprop as dp; from deltaprop import darknet; from deltaprop.export import to_onnx; "
                 "dp.manual_seed(0); to_onnx(darknet.load('digits-tiny'), sys.argv[1], dynamic_batch=True)")


def test_same_bytes_in_another_process(tmp_path):
    """Nothing of the process (hash seed, the order of sets) reaches the bytes."""
    exec(EXPORT_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / "a.onnx"))), {})
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(tmp_path / "b.onnx")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    darknet.save_weights(darknet.load("yolov3-tiny"), d / "yolo.weights")
    io.save_model(d / "model.npz", models.build("mlp"))
    (d / "file").write_text("not a folder")
    (d / "dir").mkdir()
    return d


@pytest.mark.parametrize("argv,words", [
    (["--cfg", "yolov3-tiny", "{D}/o.onnx"], ["--cfg needs --weights"]),
    (["--weights", "{D}/yolo.weights", "{D}/model.npz", "{D}/o.onnx"], ["--weights is used only with --cfg"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/model.npz", "{D}/o.onnx"], ["only OUT.onnx"]),
    (["{D}/o.onnx"], ["expected MODEL.npz OUT.onnx"]),
    (["{D}/model.npz", "{D}/o.npz"], ["OUT", "must end in .onnx"]),
    (["--cfg", "mnist-tiny", "--weights", "{D}/yolo.weights", "{D}/o.onnx"], ["yolo.weights", "oversized",
                                                                             "expected at most"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/model.npz", "{D}/o.onnx"], ["deltaprop .npz file",
                                                                           "not Darknet .weights"]),
    (["{D}/yolo.weights", "{D}/o.onnx"], ["Darknet .weights file, not a deltaprop .npz"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/o.onnx", "--opset", "10"],
     ["layer 19 [upsample]", "opset ≥ 11, got opset 10"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/o.onnx", "--opset", "8"],
     ["--opset 8", "opsets 9 to"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/o.onnx", "--size", "100", "100"],
     ["size 100x100", "route"]),
    (["{D}/model.npz", "{D}/o.onnx", "--size", "30", "30"], ["size 30x30", "Linear", "784"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/file/o.onnx"], ["is a file, not a folder"]),
    (["--cfg", "yolov3-tiny", "--weights", "{D}/yolo.weights", "{D}/dir.onnx", "--batch", "0"], ["--batch",
                                                                                                "integer ≥ 1"]),
    (["{D}/model.npz", "{D}/o.onnx", "--batch", "2", "--dynamic-batch"], ["not allowed with argument"]),
])
def test_user_mistakes_are_one_line_and_write_nothing(files, argv, words):
    before = sorted(p.name for p in files.rglob("*"))
    rc, out, err = cli("export", *[a.replace("{D}", str(files)) for a in argv])
    assert rc in (1, 2) and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert all(w in last for w in words), last
    if rc == 1:
        assert err.strip().startswith("deltaprop export: error: ") and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in files.rglob("*")) == before and not leftovers(files)
