"""``deltaprop detector``: the shipped digit detector trains on a handful of tiny digit scenes (the loss
falls), ``map``/``test``/``valid`` run on what it wrote, a resumed run ends bit-identical to an uninterrupted
one, a NaN stops training naming the layer, user mistakes end in one line.

The scenes are drawn with ``deltaprop.data.digits`` from made-up 28×28 "digits" (a bar whose place gives the
class), so no MNIST is needed. The training test is the heaviest here (2.4 s on the idle
2-core machine, 2026-12-02)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from deltaprop import backend, darknet
from deltaprop.cli import main
from deltaprop.errors import DivergenceError

pytest.importorskip("PIL", reason="the digit scenes are images (Pillow, the images extra)")

CFG = Path(darknet.__file__).resolve().parent.parent / "cfg" / "digits-tiny.cfg"


def fake_digits(n):
    x = np.zeros((n, 28, 28), np.uint8)
    y = np.arange(n) % 10
    for i, k in enumerate(y):
        x[i, 4:24, 4 + k:8 + k] = 255
        x[i, 4 + 2 * k:8 + 2 * k, 4:24] = 200
    return x, y


def small_cfg(tmp: Path, size: int) -> Path:
    """digits-tiny at ``size``×``size`` without burn-in (a few dozen steps must show the loss falling)."""
    text = CFG.read_text()
    text = re.sub(r"burn_in=\d+", "burn_in=0", text)
    text = text.replace("width=128", f"width={size}").replace("height=128", f"height={size}")
    p = tmp / f"digits-tiny-{size}.cfg"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from deltaprop.data.digits import DigitScenes, write_digit_scenes
    root = tmp_path_factory.mktemp("digits") / "set"
    data = write_digit_scenes(root, DigitScenes(train=8, test=4, size=64, digit_min=14, digit_max=30,
                                                max_digits=2), fake_digits(40), fake_digits(20), workers=1)
    return data


def _training(net, data, out, log=lambda s: None, **kw):
    from deltaprop.data.detection import read_data_file
    from deltaprop.detect.train import DetectorTraining, TrainOptions
    opts = TrainOptions(**dict(dict(log_every=1, save_every=0, workers=1, progress=False, chart=False), **kw))
    return DetectorTraining(net, read_data_file(data), out, "digits-tiny", opts, log=log)


def test_digit_detector_loss_falls_and_map_runs(scenes, tmp_path, capsys):
    cfg = small_cfg(tmp_path, 64)
    backend.manual_seed(0)
    lines = []
    run = _training(darknet.load(cfg), scenes, tmp_path / "backup", lines.append, max_batches=20, batch=4,
                    learning_rate=0.01)
    hist = run.fit()
    assert lines[-1].startswith("trained 20 batches (80 images) in ") and "images/s, avg loss" in lines[-1]
    assert lines[-1].endswith("digits-tiny_final.weights") and "1: loss" in lines[0]
    losses = [r["loss"] for r in hist if "loss" in r]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < 0.5 * np.mean(losses[:6])
    final = tmp_path / "backup" / "digits-tiny_final.weights"
    assert final.is_file() and (tmp_path / "backup" / "digits-tiny_last.weights").is_file()
    assert [json.loads(line)["batch"] for line in (tmp_path / "backup" / "history.jsonl").read_text().splitlines()] \
        == list(range(1, 21))

    out = tmp_path / "map.json"
    assert main(["detector", "map", str(scenes), str(cfg), str(final), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mAP@0.50" in text and "4 images" in text
    res = json.loads(out.read_text())
    assert 0.0 <= res["map50"] <= 1.0 and sum(res["gt"]) > 0

    img = sorted((scenes.parent / "images").glob("test_*"))[0]
    assert main(["detector", "test", str(scenes), str(cfg), str(final), str(img), "--out", str(tmp_path / "pred"),
                 "--thresh", "0.1", "--scale", "2"]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "pred" / (img.stem + "_pred.png")).size == (128, 128)
    two = sorted((scenes.parent / "images").glob("test_*"))[:2]
    grid = tmp_path / "grid" / "two.png"
    assert main(["detector", "test", str(scenes), str(cfg), str(final), *map(str, two), "--no-draw",
                 "--mosaic", str(grid)]) == 0
    assert Image.open(grid).size == (2 * 64 + 4, 64) and not list(scenes.parent.glob("images/*_pred.png"))

    vj = tmp_path / "dets.json"
    assert main(["detector", "valid", str(scenes), str(cfg), str(final), "--out", str(vj)]) == 0
    dets = json.loads(vj.read_text())
    assert isinstance(dets, list)
    for d in dets[:20]:
        assert set(d) == {"image_id", "category_id", "bbox", "score"} and 0 <= d["category_id"] < 10
        assert d["bbox"][0] >= 0 and d["bbox"][2] >= 0 and d["score"] > 0.005


def test_resume_is_exact(scenes, tmp_path):
    """4 batches in one go, or 2 + a new process-like run from digits-tiny_2.weights: the same bytes."""
    cfg = small_cfg(tmp_path, 32)
    kw = dict(max_batches=4, batch=2, learning_rate=0.005)
    backend.manual_seed(5)
    _training(darknet.load(cfg), scenes, tmp_path / "a", save_every=2, **kw).fit()
    backend.manual_seed(5)
    _training(darknet.load(cfg), scenes, tmp_path / "b", save_every=2, **dict(kw, max_batches=2)).fit()
    assert (tmp_path / "a" / "digits-tiny_2.weights").read_bytes() == \
        (tmp_path / "b" / "digits-tiny_last.weights").read_bytes()
    mid = tmp_path / "b" / "digits-tiny_last.weights"
    net = darknet.load(cfg, mid)
    assert net.seen == 4
    run = _training(net, scenes, tmp_path / "b", save_every=2, **kw)
    assert run.resume(mid)
    run.fit()
    a = (tmp_path / "a" / "digits-tiny_final.weights").read_bytes()
    b = (tmp_path / "b" / "digits-tiny_final.weights").read_bytes()
    assert a == b
    hist = [json.loads(line)["batch"] for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert hist == [1, 2, 3, 4]


def test_nan_names_batch_and_layer(scenes, tmp_path):
    cfg = small_cfg(tmp_path, 32)
    net = darknet.load(cfg)
    run = _training(net, scenes, tmp_path / "c", max_batches=3, batch=2)
    conv = net.layers[4]
    conv.weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(DivergenceError, match=r"batch 1: .*layer 4 \[convolutional\]"):
        run.fit()


def test_user_mistakes_are_one_line(scenes, tmp_path, capsys):
    cfg = small_cfg(tmp_path, 32)
    assert main(["detector", "map", str(tmp_path / "nope.data"), str(cfg), str(tmp_path / "w.weights")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err
    bad = tmp_path / "three.data"
    bad.write_text("classes = 3\ntrain = " + str(scenes.parent / "train.txt") + "\n")
    assert main(["detector", "train", str(bad), str(cfg), "--max-batches", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "classes=10" in err and "classes = 3" in err and err.count("\n") == 1
    assert main(["detector", "map", str(scenes), str(cfg), str(tmp_path / "missing.weights")]) == 1
    assert "missing.weights" in capsys.readouterr().err


# --- `deltaprop detector train` end to end: seed, Ctrl-C, the backup folder, --keep, a save cut short -----------

def _train_cli(scenes, cfg, backup, *extra):
    from cli_testutil import cli
    return cli("detector", "train", scenes, cfg, "--max-batches", "6", "--batch", "2", "--seed", "5",
               "--save-every", "2", "--log-every", "1", "--workers", "0", "--no-progress", "--backup", backup, *extra)


@pytest.fixture(scope="module")
def straight(scenes, tmp_path_factory):
    """One uninterrupted run of 6 batches: (cfg, its backup folder)."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = small_cfg(tmp, 32)
    rc, out, err = _train_cli(scenes, cfg, tmp / "backup")
    assert rc == 0, err
    return cfg, tmp / "backup"


def _interrupt_at_update(monkeypatch, k: int) -> None:
    """A real SIGINT right after the k-th update."""
    import signal
    from deltaprop.optim.darknet import DarknetSGD
    step, calls = DarknetSGD.step, [0]

    def interrupting(self, *a, **kw):
        r = step(self, *a, **kw)
        calls[0] += 1
        if calls[0] == k:
            signal.raise_signal(signal.SIGINT)
        return r
    monkeypatch.setattr(DarknetSGD, "step", interrupting)


def test_seed_makes_the_weights_and_a_second_run_leaves_the_first_alone(scenes, straight):
    """The same command twice: the second run finds the backup folder used, writes to backup-2 without touching
    a file of the first, and its weights are byte-identical (the initial weights come from --seed)."""
    from cli_testutil import snapshot
    cfg, backup = straight
    before = snapshot(backup)
    rc, out, err = _train_cli(scenes, cfg, backup)
    assert rc == 0, err
    second = backup.with_name("backup-2")
    assert f"this one writes to {second}" in err and snapshot(backup) == before
    for name in ("digits-tiny-32_final.weights", "digits-tiny-32_last.weights", "digits-tiny-32_4.weights"):
        assert (backup / name).read_bytes() == (second / name).read_bytes(), name
    first = darknet.load(cfg, backup / "digits-tiny-32_final.weights")
    backend.manual_seed(6)
    other = darknet.load(cfg)        # another seed: other initial weights
    assert not all(np.array_equal(a.data, b.data) for a, b in zip(first.parameters(), other.parameters()))


def test_ctrl_c_saves_prints_the_command_and_the_resumed_run_ends_as_the_straight_one(scenes, straight, tmp_path,
                                                                                      monkeypatch):
    from cli_testutil import cli, leftovers
    cfg, backup = straight
    with monkeypatch.context() as m:
        _interrupt_at_update(m, 3)
        rc, out, err = _train_cli(scenes, cfg, tmp_path / "b")
    assert rc == 130, err
    last = tmp_path / "b" / "digits-tiny-32_last.weights"
    assert "interrupted at batch 3 of 6" in err and "Traceback" not in err
    command = err.split("continue with:\n")[1].splitlines()[0].split()
    assert command[:3] == ["deltaprop", "detector", "train"] and command[5] == str(last), command
    assert (tmp_path / "b" / "chart.png").is_file() and not (tmp_path / "b" / ".lock").exists()
    assert not leftovers(tmp_path) and not (tmp_path / "b" / "digits-tiny-32_final.weights").exists()
    rc, out, err = cli(*command[1:])
    assert rc == 0 and "resumed exactly" in out, err
    for name in ("digits-tiny-32_final.weights", "digits-tiny-32_4.weights"):
        assert (backup / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    hist = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (backup / "history.jsonl").read_text().splitlines()]
    assert [r["batch"] for r in hist] == list(range(1, 7))
    assert [r["loss"] for r in hist] == [r["loss"] for r in ref]


def test_keep_bounds_the_numbered_checkpoints(scenes, straight, tmp_path):
    cfg, _ = straight
    rc, _, err = _train_cli(scenes, cfg, tmp_path / "k", "--save-every", "1", "--keep", "2")
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "k").iterdir() if p.name[-1] != "g")   # not chart.png
    assert names == ["digits-tiny-32_4.state.npz", "digits-tiny-32_4.weights", "digits-tiny-32_5.state.npz",
                     "digits-tiny-32_5.weights", "digits-tiny-32_final.weights", "digits-tiny-32_last.state.npz",
                     "digits-tiny-32_last.weights", "history.jsonl"]


def test_a_save_cut_short_leaves_the_previous_checkpoint_and_resume_names_it(scenes, straight, tmp_path,
                                                                          monkeypatch):
    """Killed between a checkpoint's two files (the state written, its .weights not): the pair disagrees, the
    resume refuses it naming the newest whole checkpoint, and from that one the run ends as the straight one."""
    from cli_testutil import cli
    from deltaprop.darknet import weights as dw
    cfg, backup = straight
    save, calls = dw.save_weights, [0]

    def dies_at_fourth(net, path, *a, **kw):     # batch 2: _2, _last; batch 4: _4, then _last's .weights
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt               # as a kill would: the .weights of _last stays the old one
        return save(net, path, *a, **kw)
    with monkeypatch.context() as m:
        m.setattr(dw, "save_weights", dies_at_fourth)
        assert _train_cli(scenes, cfg, tmp_path / "c")[0] == 130
    last = tmp_path / "c" / "digits-tiny-32_last.weights"
    rc, _, err = cli("detector", "train", scenes, cfg, last, "--max-batches", "6", "--batch", "2",
                     "--workers", "0", "--no-progress")
    whole = tmp_path / "c" / "digits-tiny-32_4.weights"
    assert rc == 1 and "not a whole checkpoint" in err and f"newest whole checkpoint is {whole} (batch 4)" in err
    final = backup / "digits-tiny-32_final.weights"
    for start in (tmp_path / "c" / "digits-tiny-32_last.state.npz", whole):   # the state file is whole too
        rc, out, err = cli("detector", "train", scenes, cfg, start, "--max-batches", "6", "--batch", "2",
                           "--save-every", "2", "--workers", "0", "--no-progress")
        assert rc == 0 and "from batch 4 to 6 (resumed exactly" in out, err
        assert final.read_bytes() == (tmp_path / "c" / final.name).read_bytes(), start


def test_a_live_run_holds_the_backup_folder(scenes, straight, tmp_path):
    """Even with --exist-ok, a second run into a folder whose run is alive is refused before it writes."""
    import socket
    import subprocess
    import sys
    from cli_testutil import snapshot
    cfg, _ = straight
    busy = tmp_path / "busy"
    busy.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (busy / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        before = snapshot(tmp_path)
        rc, _, err = _train_cli(scenes, cfg, busy, "--exist-ok")
        assert rc == 1 and f"--backup {busy}: another run (pid {sleeper.pid})" in err
        assert snapshot(tmp_path) == before
    finally:
        sleeper.kill()
        sleeper.wait()
