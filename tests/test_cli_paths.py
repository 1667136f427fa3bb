"""Issue 16, the documented paths and the runs that were silently wrong: convbn on MNIST, a converted Darknet
classifier through eval/predict/explain, explain without matplotlib, detect's weights and names, summary and
convert counting alike, Darknet's partial, file modes, progress bars, run directories and the lock, resume
settings, and Ctrl-C (in-process at an exact batch, and a real SIGINT to a real process)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from cli_testutil import REPO, cli, leftovers, snapshot, write_tiny_mnist
from conftest import fixture_dir
from darknet_testutil import seeded_weights
from deltaprop import darknet, io
from deltaprop.data import scale01
from deltaprop.data.idx import read_idx

TINY_YOLO = str(fixture_dir("darknet", "reference", "tiny_yolo", "tiny_yolo.cfg"))
SMALL = ["--model", "mlp", "--limit", "120", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_tiny_mnist(tmp_path_factory.mktemp("mnist")))


@pytest.fixture(scope="module")
def yolo_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("yolo")
    net = darknet.load(TINY_YOLO)
    seeded_weights(net, 3)
    darknet.save_weights(net, d / "yolo.weights")
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(d / "img.png")
    return d / "yolo.weights", d / "img.png"


def test_convbn_trains_on_mnist_as_documented(tmp_path, data):
    rc, out, err = cli("train", "--model", "convbn", "--data", data, "--out", tmp_path / "r", "--limit", "40",
                       "--val-split", "0", "--epochs", "1", "--batch-size", "20", "--no-progress")
    assert rc == 0, err
    assert "test accuracy" in out
    assert len((tmp_path / "r" / "history.jsonl").read_text().splitlines()) == 1
    rc, out, err = cli("eval", tmp_path / "r" / "model.npz", "--data", data)
    assert rc == 0 and "test accuracy" in out, err


def test_converted_darknet_classifier_works_with_eval_predict_explain(tmp_path, data):
    net = darknet.load("mnist-tiny")
    seeded_weights(net, 1)
    darknet.save_weights(net, tmp_path / "c.weights")
    rc, out, err = cli("convert", "--cfg", "mnist-tiny", tmp_path / "c.weights", tmp_path / "c.npz")
    assert rc == 0, err
    assert io.read_checkpoint(tmp_path / "c.npz").extra["preprocess"] == {"scale": 1 / 255, "mean": 0.0,
                                                                          "std": 1.0}
    images = read_idx(Path(data) / "t10k-images-idx3-ubyte")
    labels = read_idx(Path(data) / "t10k-labels-idx1-ubyte")
    net.eval()
    prob = net(scale01(images)[:, None]).reshape(len(images), -1)       # Darknet's own [softmax] output
    rc, out, err = cli("eval", tmp_path / "c.npz", "--data", data)
    assert rc == 0, err
    correct = int((prob.argmax(1) == labels).sum())
    assert f"({correct}/{len(labels)})" in out
    rc, out, err = cli("predict", tmp_path / "c.npz", Path(data) / "t10k-images-idx3-ubyte", "--index", "0",
                       "--top", "1")
    assert rc == 0, err
    top = int(prob[0].argmax())
    assert re.search(rf"\[0\]: {top} \({100 * prob[0, top]:.1f}%\)", out), (out, prob[0])   # not softmaxed twice
    rc, out, err = cli("explain", tmp_path / "c.npz", "--data", data, "--no-plot")
    assert rc == 0 and "SoftmaxLayer" in out, err


def test_explain_without_matplotlib_names_the_extra(tmp_path, data, monkeypatch):
    from deltaprop import io as dio, models
    dio.save_model(tmp_path / "m.npz", models.build("mlp", hidden=(8,)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib -> ImportError
    rc, out, err = cli("explain", tmp_path / "m.npz", "--data", data)
    assert rc == 1 and "pip install 'deltaprop[plot]'" in err and "--no-plot" in err
    assert not (tmp_path / "explain").exists()


def test_detect_random_weights_warns_and_names_mismatch(tmp_path, yolo_weights):
    weights, img = yolo_weights
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = cli("detect", "--cfg", TINY_YOLO, "--random-weights", "--no-draw", img)
    assert "untrained" in err and "mean nothing" in err and "Traceback" not in err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    (tmp_path / "three.names").write_text("a\nb\nc\n")
    rc, out, err = cli("detect", "--cfg", TINY_YOLO, "--weights", weights, "--names", tmp_path / "three.names",
                       "--no-draw", img)
    assert rc == 0 and "3 class names" in err and "detects 2 classes" in err


def test_summary_and_convert_count_alike(tmp_path, yolo_weights):
    weights, _ = yolo_weights
    rc, s_out, _ = cli("summary", TINY_YOLO)
    rc2, c_out, _ = cli("convert", "--cfg", TINY_YOLO, weights, tmp_path / "y.npz")
    assert rc == rc2 == 0
    count = re.compile(r"([\d,]+) trainable parameters \+ ([\d,]+) batch-norm running statistics = ([\d,]+) values")
    a, b = count.search(s_out).groups(), count.search(c_out).groups()
    assert a == b
    trainable, running, total = (int(v.replace(",", "")) for v in a)
    net = darknet.load(TINY_YOLO)
    assert trainable == net.num_parameters() and trainable + running == total
    assert 20 + 4 * total == weights.stat().st_size        # the header and float32 values of the file


def test_convert_partial(tmp_path, yolo_weights):
    weights, _ = yolo_weights
    rc, out, err = cli("convert", "--cfg", TINY_YOLO, weights, tmp_path / "p.weights", "--upto", "3")
    assert rc == 0 and "first 3 of 6 layers" in out, err
    rc, out, err = cli("convert", "--cfg", TINY_YOLO, weights, tmp_path / "y.npz")
    rc, out, err = cli("convert", tmp_path / "y.npz", tmp_path / "q.weights", "--upto", "3")
    assert rc == 0 and "first 3 of 6 layers" in out, err
    assert (tmp_path / "p.weights").read_bytes() == (tmp_path / "q.weights").read_bytes()
    rc, out, err = cli("convert", "--cfg", TINY_YOLO, tmp_path / "p.weights", tmp_path / "r.weights", "--upto", "3")
    assert rc == 0 and (tmp_path / "r.weights").read_bytes() == (tmp_path / "p.weights").read_bytes(), err
    whole, part = darknet.load(TINY_YOLO, weights), darknet.load(TINY_YOLO, tmp_path / "p.weights", upto=3)
    sd_w, sd_p = whole.state_dict(), part.state_dict()
    layer = lambda k: int(k.split(".")[0])                              # keys are "<cfg layer>.<name>"
    assert all(np.array_equal(sd_w[k], sd_p[k]) for k in sd_w if layer(k) < 3)
    assert not np.array_equal(sd_w["4.weight"], sd_p["4.weight"])      # layer 4 is not in the partial file


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_files_honour_the_umask(tmp_path, yolo_weights, data, mask, mode):
    weights, img = yolo_weights
    old = os.umask(mask)
    try:
        assert cli("convert", "--cfg", TINY_YOLO, weights, tmp_path / "y.npz")[0] == 0
        assert cli("convert", tmp_path / "y.npz", tmp_path / "y.weights")[0] == 0
        assert cli("detect", "--cfg", TINY_YOLO, "--weights", weights, "--out", tmp_path / "d", img)[0] == 0
        assert cli("data", "digits", "--out", tmp_path / "s", "--train", "1", "--test", "1", "--size", "32",
                   "--digit-size", "8", "16", "--mnist", data)[0] == 0
    finally:
        os.umask(old)
    for f in (tmp_path / "y.npz", tmp_path / "y.weights", tmp_path / "d" / "img_pred.png",
              tmp_path / "s" / "digits.data"):
        assert f.stat().st_mode & 0o777 == mode, (f, oct(f.stat().st_mode))
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o777 & ~mask      # the data set's folder, like mkdir's


def test_progress_bar_only_on_a_tty_or_when_asked(tmp_path, data):
    base = ["train", *SMALL[:-1], "--data", data, "--epochs", "1"]
    rc, out, err = cli(*base, "--out", tmp_path / "a")          # stderr is not a terminal here
    assert rc == 0 and "epoch 1/1: train loss" in out and "samples/s]" not in err and "\r" not in err
    rc, out, err = cli(*base, "--out", tmp_path / "b", "--progress")
    assert rc == 0 and "samples/s]" in err


def test_runs_never_clobber_each_other(tmp_path, data):
    run = ["train", *SMALL, "--data", data, "--epochs", "1", "--out", tmp_path / "r"]
    assert cli(*run)[0] == 0
    first = snapshot(tmp_path / "r")
    rc, out, err = cli(*run)
    assert rc == 0 and f"writes to {tmp_path / 'r-2'}" in err and "--exist-ok" in err
    assert snapshot(tmp_path / "r") == first and (tmp_path / "r-2" / "model.npz").is_file()
    rc, out, err = cli(*run, "--exist-ok")
    assert rc == 0 and not (tmp_path / "r-3").exists()
    assert snapshot(tmp_path / "r") != first
    assert not (tmp_path / "r" / ".lock").exists()


def test_a_live_lock_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path, data):
    import socket
    out = tmp_path / "r"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        before = snapshot(tmp_path)
        rc, _, err = cli("train", *SMALL, "--data", data, "--epochs", "1", "--out", out, "--exist-ok")
        assert rc == 1 and f"another run (pid {sleeper.pid})" in err and ".lock" in err
        assert snapshot(tmp_path) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    rc, _, err = cli("train", *SMALL, "--data", data, "--epochs", "1", "--out", out, "--exist-ok")
    assert rc == 0, err                                       # the dead process's lock is taken over
    assert not (out / ".lock").exists()


def test_resume_applies_epochs_and_result_json_records_what_ran(tmp_path, data):
    assert cli("train", *SMALL, "--data", data, "--epochs", "1", "--out", tmp_path / "r", "--lr", "0.02")[0] == 0
    rc, out, err = cli("train", "--resume", tmp_path / "r" / "last.npz", "--epochs", "2", "--lr", "0.02",
                       "--no-progress")
    assert rc == 0, err
    res = json.loads((tmp_path / "r" / "result.json").read_text())
    assert res["epochs_run"] == 2 and res["settings"]["epochs"] == 2 and res["settings"]["lr"] == 0.02
    assert res["settings"]["model"] == "mlp" and res["resumed_from"] == str(tmp_path / "r" / "last.npz")


def _interrupt_at_step(monkeypatch, k: int) -> None:
    """Deliver a real SIGINT right after the k-th optimizer step (mid-epoch)."""
    from deltaprop import optim
    step, calls = optim.SGD.step, [0]

    def interrupting(self, *a, **kw):
        r = step(self, *a, **kw)
        calls[0] += 1
        if calls[0] == k:
            signal.raise_signal(signal.SIGINT)
        return r
    monkeypatch.setattr(optim.SGD, "step", interrupting)


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_bit_identically(tmp_path, data, monkeypatch):
    args = ["train", *SMALL, "--data", data, "--epochs", "2"]
    assert cli(*args, "--out", tmp_path / "a")[0] == 0
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 3)                                 # epoch 1 has 7 batches
        rc, out, err = cli(*args, "--out", tmp_path / "b")
    assert rc == 130
    ckpt = tmp_path / "b" / "last.npz"
    assert f"deltaprop train --resume {ckpt}" in err and "epoch 1" in err
    assert io.read_checkpoint(ckpt).extra["fit"]["batch"] == 3 and not (tmp_path / "b" / ".lock").exists()
    rc, out, err = cli("train", "--resume", ckpt, "--no-progress")
    assert rc == 0 and "+ 3 batch(es)" in out, err
    a = io.read_checkpoint(tmp_path / "a" / "model.npz").model_state
    b = io.read_checkpoint(tmp_path / "b" / "model.npz").model_state
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ha = [json.loads(l) for l in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(l) for l in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]


def test_ctrl_c_to_a_real_process_prints_the_resume_command(tmp_path, data):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "deltaprop", "train", "--model", "mlp", "--data", data,
                          "--epochs", "200", "--batch-size", "8", "--lr", "0.005", "--out", str(tmp_path / "r")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        header = p.stdout.readline()                             # printed just before the first batch
        assert header.startswith("model mlp"), header
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert f"deltaprop train --resume {tmp_path / 'r' / 'last.npz'}" in err and "Traceback" not in err
    assert io.read_checkpoint(tmp_path / "r" / "last.npz").extra["fit"] is not None
    assert not leftovers(tmp_path) and not (tmp_path / "r" / ".lock").exists()
    assert "samples/s]" not in err                               # not a terminal: no progress bar


def test_predict_flags_a_blank_picture(tmp_path, data):
    from PIL import Image
    assert cli("train", *SMALL, "--data", data, "--epochs", "1", "--out", tmp_path / "r")[0] == 0
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "blank.png")
    rc, out, err = cli("predict", tmp_path / "r" / "model.npz", tmp_path / "blank.png")
    assert rc == 0 and "blank picture" in out


def test_ctrl_c_in_a_cfg_run_resumes_to_the_same_weights(tmp_path, data, monkeypatch):
    """`train --cfg`: a Ctrl-C after batch 2 saves OUT/last.npz and prints the resume command; `train --resume`
    ends with the .weights of the uninterrupted run, byte for byte; resume refuses other settings."""
    from deltaprop.optim.darknet import DarknetSGD
    args = ["train", "--cfg", "mnist-tiny", "--data", data, "--batch-size", "16", "--epochs", "1", "--lr", "0.01",
            "--val-split", "0", "--no-progress"]
    assert cli(*args, "--out", tmp_path / "a")[0] == 0
    step, calls = DarknetSGD.step, [0]

    def interrupting(self, *a, **kw):
        r = step(self, *a, **kw)
        calls[0] += 1
        if calls[0] == 2:
            signal.raise_signal(signal.SIGINT)
        return r
    with monkeypatch.context() as m:
        m.setattr(DarknetSGD, "step", interrupting)
        rc, out, err = cli(*args, "--out", tmp_path / "b")
    ckpt = tmp_path / "b" / "last.npz"
    assert rc == 130 and f"deltaprop train --resume {ckpt}" in err and "batch 2" in err, err
    assert not (tmp_path / "b" / ".lock").exists() and not leftovers(tmp_path)
    before = snapshot(tmp_path)
    for bad, words in ((["--lr", "0.5"], ["--lr 0.5", "--lr 0.01"]), (["--weights", ckpt], ["--weights", "--resume"]),
                       (["--out", tmp_path / "c"], ["--out", "checkpoint's directory"])):
        rc, _, err = cli("train", "--resume", ckpt, "--no-progress", *bad)
        assert rc == 1 and all(w in err for w in words) and "Traceback" not in err, err
    assert snapshot(tmp_path) == before
    rc, out, err = cli("train", "--resume", ckpt, "--no-progress")
    assert rc == 0 and "resumed from" in out, err
    final = "mnist-tiny_final.weights"
    assert (tmp_path / "a" / final).read_bytes() == (tmp_path / "b" / final).read_bytes()
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in "ab")
    assert a["ran"] == b["ran"] and b["resumed_from"] == str(ckpt)                # result.json: what really ran
    assert (b["ran"]["batch"], b["ran"]["learning_rate"]) == (16, 0.01) and b["settings"]["lr"] == 0.01
    assert b["ran"]["max_batches"] == -(-len(read_idx(Path(data) / "train-images-idx3-ubyte")) // 16)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, data):
    """A digit-scene detection set (4 + 2 scenes) and a 10-class copy of the tiny YOLO cfg with weights."""
    d = tmp_path_factory.mktemp("scenes")
    rc, _, err = cli("data", "digits", "--out", d / "digits", "--train", "4", "--test", "2", "--size", "32",
                     "--digit-size", "8", "16", "--mnist", data, "--format", "png")
    assert rc == 0, err
    text = Path(TINY_YOLO).read_text().replace("classes=2", "classes=10").replace("filters=21", "filters=45")
    (d / "d.cfg").write_text(text)
    darknet.save_weights(darknet.load(d / "d.cfg"), d / "d.weights")
    return d


def test_a_bad_picture_late_in_the_list_writes_nothing(tmp_path, scenes, yolo_weights):
    weights, img = yolo_weights
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n but cut short")
    before = snapshot(tmp_path)
    for line in (["detect", "--cfg", TINY_YOLO, "--weights", weights, "--out", tmp_path / "o", img,
                  tmp_path / "bad.png"],
                 ["detector", "test", scenes / "digits" / "digits.data", scenes / "d.cfg", scenes / "d.weights",
                  "--out", tmp_path / "o", img, tmp_path / "bad.png"]):
        rc, out, err = cli(*line)
        assert rc == 1 and "bad.png: cannot read image" in err and "Traceback" not in err, err
        assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_detector_train_progress_bar_only_on_a_tty(tmp_path, scenes):
    base = ["detector", "train", scenes / "digits" / "digits.data", scenes / "d.cfg", "--max-batches", "1",
            "--workers", "0"]
    rc, out, err = cli(*base, "--backup", tmp_path / "a")                 # stderr is not a terminal here
    assert rc == 0 and "batch/s" not in err and "\r" not in err, err
    rc, out, err = cli(*base, "--backup", tmp_path / "b", "--progress")
    assert rc == 0 and "batch/s" in err, err


def test_out_dot_in_a_folder_with_files_numbers_the_folder(tmp_path, data, monkeypatch):
    """`--out .` where files are: the run goes to the folder's numbered sibling, nothing here changes."""
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(here)
    before = snapshot(here)
    rc, out, err = cli("train", *SMALL, "--data", data, "--epochs", "1", "--out", ".")
    assert rc == 0 and "work-2" in err, err
    assert snapshot(here) == before and (tmp_path / "work-2" / "model.npz").is_file()
