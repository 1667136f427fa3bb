"""Darknet's command-line habits (issue 29): single-dash options read as deltaprop's (``-map``, ``-clear``,
``-thresh``, ``-dont_show``, ``-ext_output``) or answered in one line (``-gpus``, an option the verb lacks),
``detector calc_anchors``, ``detector demo``, ``cfg/yolov3-tiny.cfg`` and ``digits_tiny`` for the shipped cfgs,
a cfg name that is not found listing the shipped ones. Every answer is one line, never argparse's usage."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli_testutil import cli
from conftest import fixture_dir
from deltaprop import darknet

TINY_YOLO = fixture_dir("darknet", "reference", "tiny_yolo", "tiny_yolo.cfg")
PHOTO = fixture_dir("coco128", "images", "000000002592.jpg")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "usage:" not in err and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A .data file, the tiny YOLO cfg (2 classes) and weights for it."""
    d = tmp_path_factory.mktemp("habits")
    (d / "names").write_text("cat\ndog\n")
    (d / "x.data").write_text(f"classes = 2\nnames = {d / 'names'}\n")
    darknet.save_weights(darknet.load(TINY_YOLO), d / "w.weights")
    return d


def test_thresh_ext_output_dont_show_are_read_as_deltaprops(detector):
    rc, out, err = cli("detector", "test", detector / "x.data", TINY_YOLO, detector / "w.weights", "-thresh", "0.3",
                       "-ext_output", "-dont_show", PHOTO, "--no-draw")
    assert rc == 0, err
    note = one_line(err)
    assert "-thresh read as --thresh" in note and "-dont_show dropped" in note and "-ext_output" in note
    assert "000000002592.jpg" in out


def test_map_and_clear_reach_detector_train():
    from deltaprop.cli import build_parser, darknet_habits
    argv, notes = darknet_habits(build_parser(), ["detector", "train", "a.data", "b.cfg", "w.conv.15", "-map",
                                                  "-clear", "-dont_show"])
    assert argv == ["detector", "train", "a.data", "b.cfg", "w.conv.15", "--map", "--clear"]
    assert notes == ["-map read as --map", "-clear read as --clear", "-dont_show dropped (no window is ever opened)"]


def test_gpus_is_answered_in_one_line(detector):
    rc, out, err = cli("detector", "train", detector / "x.data", TINY_YOLO, "-gpus", "0,1")
    assert rc == 2 and "deltaprop runs on the CPU" in one_line(err) and "-gpus" in err
    rc, out, err = cli("detector", "test", detector / "x.data", TINY_YOLO, detector / "w.weights", "-i", "0", PHOTO)
    assert rc == 2 and "GPU index" in one_line(err)


def test_an_option_the_verb_lacks_is_answered_with_the_spelling(detector):
    rc, out, err = cli("detector", "map", detector / "x.data", TINY_YOLO, detector / "w.weights", "-points", "101")
    assert rc == 2 and "101 recall points" in one_line(err)
    rc, out, err = cli("detector", "test", detector / "x.data", TINY_YOLO, detector / "w.weights", "-benchmark")
    assert rc == 2 and one_line(err).endswith("detector test has no --benchmark (its options have two dashes: "
                                              "deltaprop detector test --help)")


def test_calc_anchors_runs_anchors(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(3):
        (imgs / f"{k}.jpg").write_bytes(PHOTO.read_bytes())
        (imgs / f"{k}.txt").write_text("0 0.5 0.5 0.2 0.3\n1 0.4 0.6 0.5 0.4\n")
    rc, out, err = cli("detector", "calc_anchors", imgs, "-num_of_clusters", "2", "-width", "320", "-height", "320",
                       "--classes", "2")
    assert rc == 0, err
    assert "calc_anchors is `deltaprop anchors`" in one_line(err) and "--size" in err
    assert "anchors" in out.lower()


def test_demo_is_answered(detector):
    rc, out, err = cli("detector", "demo", detector / "x.data", TINY_YOLO, detector / "w.weights", "v.mp4")
    assert rc == 2 and "no demo (video) verb" in one_line(err)


def test_shipped_cfg_names_as_darknet_writes_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                            # no cfg/ folder here: the shipped cfg is meant
    rc, out, err = cli("summary", "cfg/yolov3-tiny.cfg")
    assert rc == 0 and "yolo" in out, err
    rc, out, err = cli("summary", "digits_tiny")
    assert rc == 0, err
    rc, out, err = cli("summary", "yolov9-tiny")
    line = one_line(err)
    assert rc == 1 and "yolov9-tiny: no such cfg file" in line
    assert "shipped: " + ", ".join(darknet.shipped_names()) in line and "digits-tiny" in line
    rc, out, err = cli("summary", "somewhere/else/yolov3-tiny.cfg")       # a real path is not second-guessed
    assert rc == 1 and "somewhere/else/yolov3-tiny.cfg: no such cfg file" in one_line(err)
    assert Path(darknet.shipped_cfg("cfg/yolov3-tiny.cfg")).name == "yolov3-tiny.cfg"
