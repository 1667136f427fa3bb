"""Issue 16, the bad values: every one ends in one line naming the option (or file) and what is allowed, a
non-zero exit status, no traceback, and no file of an earlier run changed (the bad commands point their
output at that run with --exist-ok, so a check that came too late would show as a changed file)."""
from __future__ import annotations

import numpy as np
import pytest

from cli_testutil import cli, cli_subprocess, leftovers, snapshot, write_tiny_mnist
from conftest import fixture_dir
from darknet_testutil import seeded_weights
from deltaprop import darknet, nn
from deltaprop.errors import ShapeError

TINY_YOLO = str(fixture_dir("darknet", "reference", "tiny_yolo", "tiny_yolo.cfg"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An earlier run (RUN), its data (DATA), a Darknet classifier's .weights (W), a picture (IMG)."""
    base = tmp_path_factory.mktemp("cli_errors")
    data = write_tiny_mnist(base / "mnist")
    run = base / "run"
    rc, out, err = cli("train", "--model", "mlp", "--data", data, "--out", run, "--limit", "120", "--epochs", "1",
                       "--batch-size", "32", "--no-progress")
    assert rc == 0, err
    net = darknet.load("mnist-tiny")
    darknet.save_weights(net, base / "cls.weights")
    darknet.save_weights(net, base / "part.weights", upto=3)
    yolo = darknet.load(TINY_YOLO)
    seeded_weights(yolo, 3)
    darknet.save_weights(yolo, base / "yolo.weights")
    from PIL import Image
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(base / "blank.png")
    return {"BASE": str(base), "DATA": str(data), "RUN": str(run), "MODEL": str(run / "model.npz"),
            "LAST": str(run / "last.npz"), "W": str(base / "cls.weights"), "YW": str(base / "yolo.weights"),
            "IMG": str(base / "blank.png"),
            "FILE": str(run / "result.json")}


T = ["train", "--data", "{DATA}", "--out", "{RUN}", "--exist-ok", "--no-progress", "--limit", "60"]
CFG = ["train", "--cfg", "mnist-tiny", "--data", "{DATA}", "--out", "{RUN}", "--exist-ok", "--no-progress"]

# (argv, words the message must hold)
CASES = [
    (T + ["--batch-size", "0"], ["--batch-size", "integer ≥ 1", "'0'"]),
    (T + ["--batch-size", "-5"], ["--batch-size", "integer ≥ 1", "'-5'"]),
    (["eval", "{MODEL}", "--data", "{DATA}", "--batch-size", "0"], ["--batch-size", "integer ≥ 1"]),
    (["eval", "{MODEL}", "--data", "{DATA}", "--limit", "0"], ["--limit", "integer ≥ 1"]),
    (T + ["--lr", "nan"], ["--lr", "finite number > 0", "'nan'"]),
    (T + ["--lr", "-1"], ["--lr", "> 0", "'-1'"]),
    (T + ["--momentum", "-1"], ["--momentum", "[0, 1)"]),
    (T + ["--weight-decay", "nan"], ["--weight-decay", "≥ 0", "'nan'"]),
    (T + ["--val-split", "1.5"], ["--val-split", "[0, 1)", "'1.5'"]),
    (T + ["--val-split", "1.0"], ["--val-split", "[0, 1)"]),
    (T + ["--val-split", "-0.1"], ["--val-split", "[0, 1)"]),
    (T + ["--limit", "0"], ["--limit", "integer ≥ 1"]),
    (T + ["--limit", "-5"], ["--limit", "integer ≥ 1"]),
    (T + ["--epochs", "0"], ["--epochs", "integer ≥ 1"]),
    (T + ["--epochs", "-1"], ["--epochs", "integer ≥ 1"]),
    (T + ["--patience", "-1"], ["--patience", "integer ≥ 1"]),
    (T + ["--limit", "3", "--val-split", "0.1"], ["--val-split 0.1", "no sample", "--limit 3"]),
    (T + ["--weights", "{W}"], ["--weights", "only with --cfg"]),
    (CFG + ["--batch-size", "0"], ["--batch-size", "integer ≥ 1"]),
    (CFG + ["--subdivisions", "0"], ["--subdivisions", "integer ≥ 1"]),
    (CFG + ["--subdivisions", "100"], ["--subdivisions 100", "batch size", "batch=64"]),
    (CFG + ["--batch-size", "8", "--subdivisions", "9"], ["--subdivisions 9", "--batch-size 8"]),
    (CFG + ["--optimizer", "adam"], ["--optimizer", "not used with --cfg"]),
    (CFG + ["--model", "lenet"], ["--model", "not used with --cfg"]),
    (["train", "--resume", "{LAST}", "--model", "lenet", "--no-progress"], ["--model lenet", "--model mlp",
                                                                           "resumed run"]),
    (["train", "--resume", "{LAST}", "--lr", "0.5", "--no-progress"], ["--lr 0.5", "--lr 0.05", "--resume"]),
    (["train", "--resume", "{LAST}", "--epochs", "1", "--no-progress"], ["--epochs 1", "1 epoch(s) already"]),
    (["train", "--resume", "{MODEL}", "--no-progress"], ["model file", "last.npz"]),
    (["train", "--resume", "{W}", "--no-progress"], ["Darknet .weights", "convert"]),
    (["eval", "{W}"], ["cls.weights", "Darknet .weights file, not a deltaprop .npz"]),
    (["predict", "{W}", "{IMG}"], ["cls.weights", "Darknet .weights file"]),
    (["explain", "{W}", "--no-plot"], ["cls.weights", "Darknet .weights file"]),
    (["detect", "--cfg", TINY_YOLO, "--weights", "{MODEL}", "{IMG}"], ["--weights", "deltaprop .npz file",
                                                                      "not Darknet .weights"]),
    (["detect", "--cfg", TINY_YOLO, "{IMG}"], ["--weights", "--random-weights", "required"]),
    (["detect", "--cfg", TINY_YOLO, "--random-weights", "--thresh", "2", "{IMG}"], ["--thresh", "[0, 1]"]),
    (["detect", "--cfg", TINY_YOLO, "--weights", "{YW}", "--names", "{YW}", "--out", "{BASE}/d", "{IMG}"],
     ["yolo.weights", "cannot read names file"]),
    (["detect", "--cfg", TINY_YOLO, "--random-weights", "--nms", "-1", "{IMG}"], ["--nms", "[0, 1]"]),
    (["summary", "yolov3-tiny", "--width", "400"], ["--width 400", "multiple of 32", "384 or 416"]),
    (["detect", "--cfg", "yolov3-tiny", "--random-weights", "--height", "400", "{IMG}"], ["--height 400",
                                                                                          "multiple of 32"]),
    (["convert", "--cfg", "mnist-tiny", "{W}", "{BASE}/out.weights", "--upto", "0"], ["--upto", "≥ 1"]),
    (["convert", "--cfg", "mnist-tiny", "{W}", "{BASE}/out.weights", "--upto", "99"], ["--upto 99",
                                                                                      "only 9 layers"]),
    (["convert", "{MODEL}", "{BASE}/out.weights"], ["holds a Sequential", "not a Darknet"]),
    (["convert", "--cfg", "mnist-tiny", "{MODEL}", "{BASE}/out.npz"], ["expected IN/OUT"]),
    # an --out that cannot be created: a path under a regular file (refused even to root)
    (T + ["--out", "{FILE}/sub"], ["result.json/sub", "Not a directory"]),
    (["convert", "--cfg", "mnist-tiny", "{W}", "{FILE}/x.npz"], ["result.json", "not a directory"]),
    (["detect", "--cfg", TINY_YOLO, "--weights", "{YW}", "--out", "{FILE}/d", "{IMG}"], ["result.json",
                                                                                        "Not a directory"]),
    (["explain", "{MODEL}", "--data", "{DATA}", "--out", "{FILE}/e"], ["result.json", "Not a directory"]),
    (["gradcheck", "--tol", "nan"], ["--tol", "finite number > 0"]),
    (T + ["--out", "/proc/deltaprop-test-run"], ["--out /proc/deltaprop-test-run", "cannot create the directory"]),
    (["data", "digits", "--out", "{BASE}/dd", "--seed", "-1"], ["--seed", "from 0 to 4294967295", "'-1'"]),
    (["data", "digits", "--out", "{BASE}/dd", "--noise", "nan"], ["--noise", "[0, 0.5]"]),
    (["data", "digits", "--out", "{BASE}/dd", "--digit-size", "3", "9"], ["--digit-size", "integer ≥ 4"]),
    (["data", "check", "{BASE}", "--classes", "0"], ["--classes", "integer ≥ 1"]),
    (["anchors", "{BASE}", "--classes", "1", "--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    (["anchors", "{BASE}", "--classes", "1", "-n", "0"], ["--num", "integer ≥ 1"]),
    (["detector", "train", "{BASE}/x.data", TINY_YOLO, "--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    (T + ["--data", "{FILE}"], ["--data", "result.json", "not a folder"]),
    (["eval", "{MODEL}", "--data", "{IMG}"], ["--data", "PNG image, not a folder"]),
    (["data", "digits", "--out", "{BASE}/dd", "--mnist", "{W}"], ["--mnist", "Darknet .weights file, not a folder"]),
    (["convert", "{W}", "{BASE}/c.npz"], ["cls.weights", "needs --cfg"]),
    (["convert", "{W}", "{BASE}/c.txt"], ["c.txt", "expected IN/OUT"]),
    (["explain", "{MODEL}", "--data", "{DATA}", "--history", "{IMG}", "--out", "{BASE}/ex"],
     ["blank.png", "not a history.jsonl", "not UTF-8"]),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(a[:1] + a[-3:]) for a, _ in CASES])
def test_bad_value_is_named_and_changes_nothing(world, argv, words):
    before = snapshot(world["BASE"])
    rc, out, err = cli(*(a.format(**world) for a in argv))
    assert rc != 0, out
    assert "Traceback" not in err and "internal error" not in err, err
    for w in words:
        assert w.format(**world) in err, (w, err)
    assert len([l for l in err.splitlines() if "error:" in l]) == 1, err
    assert snapshot(world["BASE"]) == before
    assert not leftovers(world["BASE"])


def test_as_a_real_process_no_traceback(world):
    """The same through the installed entry point: the real exit status and stderr."""
    before = snapshot(world["BASE"])
    p = cli_subprocess("train", "--data", world["DATA"], "--out", world["RUN"], "--exist-ok", "--batch-size", "0")
    assert p.returncode == 2 and "argument --batch-size: must be an integer ≥ 1, got '0'" in p.stderr
    p = cli_subprocess("eval", world["W"])
    assert p.returncode == 1 and "Traceback" not in p.stderr and "Darknet .weights file" in p.stderr
    assert snapshot(world["BASE"]) == before


def test_debug_shows_the_traceback(world):
    with pytest.raises(Exception, match="Darknet .weights file"):
        from deltaprop.cli import main
        main(["--debug", "eval", world["W"]])


def test_backward_with_a_wrong_shape_delta_names_both_shapes_and_keeps_the_cache():
    layer = nn.Linear(4, 3)
    layer(np.ones((2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"gradient of shape \(2, 5\).*expected \(2, 3\)"):
        layer.backward(np.ones((2, 5), np.float32))
    assert layer.backward(np.ones((2, 3), np.float32)).shape == (2, 4)   # the forward's cache is still there
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    seq(np.ones((2, 4), np.float32))
    with pytest.raises(ShapeError, match="Sequential"):
        seq.backward(np.ones((3, 3), np.float32))
