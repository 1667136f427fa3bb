"""``deltaprop detector test`` as Darknet's users type it (folders, list files, standard input, the ``Enter Image
Path:`` prompt, ``Predicted in N ms``, AlexeyAB's ``-ext_output`` listing), ``detector demo`` on a video and on a
folder of frames, and ``anchors --out/--plot``.

The network is digits-tiny at 64×64 with seeded random weights whose batch-norm variances are set to 1 (Darknet's
random start has variances of 0, whose outputs overflow): its boxes mean nothing, but they are many and stable,
which is what drawing and listing need."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_testutil import cli, leftovers, snapshot
from test_detector_train import fake_digits, small_cfg

pytest.importorskip("PIL", reason="the digit scenes are images (Pillow, the images extra)")

THRESH = "0.7"
HEADLINE = re.compile(r"^(?P<path>.+): Predicted in (?P<ms>\d+\.\d) ms, (?P<n>\d+) box\(es\)(?P<rest>.*)$")
EXT_LINE = re.compile(r"^(?P<name>\S+): (?P<p>\d+)%\t\(left_x: +(?P<l>-?\d+)   top_y: +(?P<t>-?\d+)   width: +"
                      r"(?P<w>\d+)   height: +(?P<h>\d+)\)$")
CORNERS = re.compile(r"^  (?P<name>\S+): (?P<p>\d+)%  left (?P<l>\d+) top (?P<t>\d+) right (?P<r>\d+) bottom "
                     r"(?P<b>\d+)$")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(folder, .data, cfg, weights, test pictures): eight train and four test digit scenes of 64×64."""
    from deltaprop import backend, darknet
    from deltaprop.darknet.weights import save_weights
    from deltaprop.data.digits import DigitScenes, write_digit_scenes
    root = tmp_path_factory.mktemp("verbs")
    data = write_digit_scenes(root / "set", DigitScenes(train=8, test=4, size=64, digit_min=14, digit_max=30,
                                                        max_digits=2), fake_digits(40), fake_digits(20), workers=1)
    cfg = small_cfg(root, 64)
    backend.manual_seed(0)
    net = darknet.load(cfg)
    for name, buf in net.named_buffers():
        if name.endswith("running_var"):
            buf[...] = 1.0
    save_weights(net, root / "seeded.weights")
    tests = sorted((root / "set" / "images").glob("test_*"))
    return root, data, cfg, root / "seeded.weights", tests


def _headlines(out: str):
    return [m.groupdict() for m in map(HEADLINE.match, out.splitlines()) if m]


def _test(world, *args, stdin=None, monkeypatch=None):
    root, data, cfg, weights, _ = world
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", stdin)
    return cli("detector", "test", data, cfg, weights, *args, "--thresh", THRESH)


def test_a_folder_a_list_and_standard_input_name_the_same_pictures(world, tmp_path, monkeypatch):
    root, data, cfg, weights, tests = world
    folder = tmp_path / "pics"
    folder.mkdir()
    for p in tests[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not a picture\n")          # a folder's pictures only
    rc, by_folder, err = _test(world, folder, "--no-draw")
    assert rc == 0, err
    heads = _headlines(by_folder)
    assert [h["path"] for h in heads] == [str(folder / p.name) for p in tests[:3]]
    assert all(float(h["ms"]) > 0 for h in heads)
    lst = tmp_path / "pics.txt"
    lst.write_text("\n".join([f"pics/{p.name}" for p in tests[:3]] + [f"pics/{tests[0].name}", "# a comment", ""]))
    rc, by_list, err = _test(world, lst, "--no-draw")
    assert rc == 0, err
    assert [h["path"] for h in _headlines(by_list)] == [str(folder / p.name) for p in tests[:3]]   # repeat: once
    piped = io.StringIO("\n".join(str(folder / p.name) for p in tests[:3]) + "\n\n")
    rc, by_dash, err = _test(world, "-", "--no-draw", stdin=piped, monkeypatch=monkeypatch)
    assert rc == 0, err
    rc, by_pipe, err = _test(world, "--no-draw", stdin=io.StringIO(piped.getvalue()), monkeypatch=monkeypatch)
    assert rc == 0, err

    def boxes(out):
        return [line for line in out.splitlines() if not HEADLINE.match(line)]
    assert boxes(by_folder) == boxes(by_list) == boxes(by_dash) == boxes(by_pipe)
    assert len(boxes(by_folder)) == sum(int(h["n"]) for h in heads) > 0
    assert not list(folder.glob("*_pred.png"))                      # --no-draw


def test_ext_output_is_alexeyabs_listing_of_the_same_boxes(world):
    _, _, _, _, tests = world
    rc, plain, err = _test(world, tests[0], "--no-draw")
    assert rc == 0, err
    rc, ext, err = _test(world, tests[0], "--no-draw", "--ext-output")
    assert rc == 0, err
    corners = [CORNERS.match(line) for line in plain.splitlines()[1:]]
    listed = [EXT_LINE.match(line) for line in ext.splitlines()[1:]]
    assert corners and all(corners) and all(listed) and len(listed) == len(corners), ext
    for c, e in zip(corners, listed):
        assert (e["name"], e["p"], int(e["l"]), int(e["t"])) == (c["name"], c["p"], int(c["l"]), int(c["t"]))
        assert (int(e["w"]), int(e["h"])) == (int(c["r"]) - int(c["l"]), int(c["b"]) - int(c["t"]))
    assert "\t(left_x: " in ext.splitlines()[1] and ext.splitlines()[1].split(": ")[1].endswith("%\t(left_x")


def test_the_prompt_reads_paths_until_end_of_input_and_survives_a_typo(world, tmp_path, monkeypatch):
    _, _, _, _, tests = world

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    typed = [str(tests[1]), str(tmp_path / "typo.jpg"), "", str(tests[2])]
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        if not typed:
            raise EOFError
        return typed.pop(0)
    monkeypatch.setattr("builtins.input", ask)
    rc, out, err = _test(world, "--out", tmp_path / "drawn", stdin=Terminal(), monkeypatch=monkeypatch)
    assert rc == 0, err
    assert prompts == ["Enter Image Path: "] * 5
    assert [h["path"] for h in _headlines(out)] == [str(tests[1]), str(tests[2])]
    assert err.count("\n") == 1 and "typo.jpg" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == [tests[1].stem + "_pred.png",
                                                                       tests[2].stem + "_pred.png"]


def test_two_pictures_of_one_name_from_two_folders_get_two_pngs(world, tmp_path):
    _, _, _, _, tests = world
    for folder, src in (("a", tests[0]), ("b", tests[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / "x.jpg")
    rc, out, err = _test(world, tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", "--out", tmp_path / "o")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_x_pred.png", "b_x_pred.png"]
    assert (tmp_path / "o" / "a_x_pred.png").read_bytes() != (tmp_path / "o" / "b_x_pred.png").read_bytes()


def test_a_large_photo_is_reduced_and_its_boxes_printed_in_its_own_pixels(world, tmp_path):
    """A 2112×2112 photo (over 4 Mpx, 33 times the 64×64 input) is decoded at 1/16 (132×132); the boxes print in
    the photo's pixels: 16 times those found on the reduced picture."""
    from PIL import Image
    _, _, _, _, tests = world
    big = tmp_path / "big.png"
    Image.open(tests[0]).convert("RGB").resize((2112, 2112), Image.NEAREST).save(big)
    rc, out, err = _test(world, big, "--no-draw")
    assert rc == 0, err
    head = _headlines(out)[0]
    assert head["rest"] == " (found on the picture reduced to 132x132; pixels of the 2112x2112 original)"
    small = tmp_path / "small.png"
    Image.open(big).reduce(16).save(small)
    rc, reduced, err = _test(world, small, "--no-draw")
    assert rc == 0, err
    got = [CORNERS.match(line) for line in out.splitlines()[1:]]
    want = [CORNERS.match(line) for line in reduced.splitlines()[1:]]
    assert got and len(got) == len(want)
    for g, w in zip(got, want):
        assert [int(g[k]) for k in "ltrb"] == [min(16 * int(w[k]), 2111) for k in "ltrb"]


def test_a_bad_picture_in_a_list_stops_before_any_png(world, tmp_path):
    _, _, _, _, tests = world
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    lst = tmp_path / "l.txt"
    lst.write_text(f"{tests[0]}\nbroken.jpg\n")
    before = snapshot(tmp_path)
    rc, out, err = _test(world, lst, "--out", tmp_path / "o")
    assert rc == 1 and err.count("\n") == 1 and "broken.jpg" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before
    rc, out, err = _test(world, tmp_path / "empty.txt")
    assert rc == 1 and "empty.txt" in err and err.count("\n") == 1
    (tmp_path / "none").mkdir()
    rc, out, err = _test(world, tmp_path / "none")
    assert rc == 1 and err.strip().endswith("none: no pictures in this folder")


def test_a_width_that_does_not_fit_names_the_sizes_that_do(world):
    root, data, cfg, weights, tests = world
    rc, out, err = cli("detector", "test", data, cfg, weights, tests[0], "--width", "100")
    assert rc == 1 and err.count("\n") == 1, err
    assert "--width 100: must be a multiple of 32" in err and "e.g. 96 or 128" in err


# --- detector demo -----------------------------------------------------------------------------------------------

def test_demo_on_a_folder_draws_each_frame_as_detector_test_does(world, tmp_path):
    root, data, cfg, weights, tests = world
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in tests:
        shutil.copy(p, frames / p.name)
    rc, out, err = cli("detector", "demo", data, cfg, weights, frames, "--thresh", THRESH)
    assert rc == 0, err
    drawn = tmp_path / "frames_pred"                                  # the default: beside the folder
    assert sorted(p.name for p in drawn.iterdir()) == [p.stem + "_pred.png" for p in tests]
    assert [h["path"] for h in _headlines(out)] == [str(frames / p.name) for p in tests]
    assert re.search(rf"^{len(tests)} frames, \d+ boxes in [\d.]+ s: AVG_FPS [\d.]+ .*wrote {re.escape(str(drawn))}$",
                     out, re.M), out
    rc, _, err = _test(world, frames, "--out", tmp_path / "by-test")
    assert rc == 0, err
    for p in tests:                                                    # the same pixels, byte for byte
        assert (drawn / (p.stem + "_pred.png")).read_bytes() == \
            (tmp_path / "by-test" / (p.stem + "_pred.png")).read_bytes()
    before = snapshot(tmp_path)
    rc, _, err = cli("detector", "demo", data, cfg, weights, frames, "--out", drawn)
    assert rc == 1 and "holds files" in err and "--exist-ok" in err and err.count("\n") == 1
    assert snapshot(tmp_path) == before
    rc, out, err = cli("detector", "demo", data, cfg, weights, frames, "--out", drawn, "--exist-ok", "--frames", "1")
    assert rc == 0 and len(_headlines(out)) == 1, err


def _write_video(path: Path, frames) -> None:
    """A video written with PyAV directly (not through deltaprop), lossless enough for the check: MJPEG."""
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=4)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuvj444p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _read_video(path: Path):
    import av
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)], float(rate)


def test_demo_on_a_video_writes_the_annotated_video(world, tmp_path):
    pytest.importorskip("av", reason="videos need PyAV (the video extra, part of the test extra)")
    from PIL import Image
    from deltaprop import darknet
    from deltaprop.detect import detect_image
    from deltaprop.detect.draw import draw_boxes
    root, data, cfg, weights, tests = world
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in tests] + \
             [np.asarray(Image.open(tests[0]).convert("RGB"))[:, ::-1].copy()]
    video = tmp_path / "scenes.avi"
    _write_video(video, frames)
    rc, out, err = cli("detector", "demo", data, cfg, weights, video, "--thresh", THRESH, "--ext-output")
    assert rc == 0, err
    result = tmp_path / "scenes_pred.avi"                            # the source's container, beside it
    heads = _headlines(out)
    assert [h["path"] for h in heads] == [f"frame {k}" for k in range(1, 6)]
    assert any(EXT_LINE.match(line) for line in out.splitlines())
    assert f"5 frames of 64x64 at 4 fps -> {result}" in out.splitlines()[0]
    written, rate = _read_video(result)
    assert len(written) == 5 and written[0].shape == (64, 64, 3) and rate == 4
    decoded, _ = _read_video(video)
    net = darknet.load(cfg, weights)
    net.eval()
    for k in (0, 4):                      # the frame as read, detected and drawn: what the video shows
        image = decoded[k].transpose(2, 0, 1).astype(np.float32) / 255
        boxes = detect_image(net, image, float(THRESH), 0.45)
        assert len(boxes) == int(heads[k]["n"]) > 0
        want = np.asarray(draw_boxes(image, boxes, 10), np.float32)
        got = written[k].astype(np.float32)
        assert np.abs(got - want).mean() < 0.5 * np.abs(got - decoded[k]).mean(), k   # the boxes are drawn
    rc, out, err = cli("detector", "demo", data, cfg, weights, video, "--out", tmp_path / "two.mp4", "--frames", "2")
    assert rc == 0, err
    assert len(_read_video(tmp_path / "two.mp4")[0]) == 2 and not leftovers(tmp_path)


def test_demo_mistakes_are_one_line_and_leave_nothing(world, tmp_path):
    root, data, cfg, weights, tests = world
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path)
    for source, words in ((tmp_path / "clip.mp4", "clip.mp4: cannot read video"),
                          (tmp_path / "missing.mp4", "missing.mp4"),
                          (empty, "empty: no pictures in this folder")):
        rc, out, err = cli("detector", "demo", data, cfg, weights, source)
        assert rc == 1 and words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "empty"]


# --- anchors ------------------------------------------------------------------------------------------------------

def test_anchors_are_written_beside_the_data_and_drawn(world, tmp_path, monkeypatch):
    root, data, cfg, weights, tests = world
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = cli("anchors", data, "-n", "3", "--size", "64", "64", "--plot", tmp_path / "k.png")
    assert rc == 0, err
    line = out.splitlines()[-1]
    assert line.startswith("anchors = ") and f"saved the anchors to {data.parent / 'anchors.txt'}" in out
    assert (data.parent / "anchors.txt").read_text() == line[len("anchors = "):] + "\n"
    assert not list(elsewhere.iterdir())                                 # nothing where the command was typed
    from PIL import Image
    picture = np.asarray(Image.open(tmp_path / "k.png").convert("RGB")).astype(int)
    colours = {tuple(c) for c in picture.reshape(-1, 3)[::7]}
    tab10 = {(31, 119, 180), (255, 127, 14), (44, 160, 44)}             # the three clusters' colours are used
    assert all(any(sum(abs(a - b) for a, b in zip(c, t)) < 12 for c in colours) for t in tab10)
    rc, out2, err = cli("anchors", data, "-n", "3", "--size", "64", "64", "--out", tmp_path / "a" / "mine.txt")
    assert rc == 0 and (tmp_path / "a" / "mine.txt").read_text() == line[len("anchors = "):] + "\n"
    before = snapshot(tmp_path)
    rc, out3, err = cli("anchors", data, "-n", "3", "--out", tmp_path / "a")
    assert rc == 1 and err.strip().endswith(f"--out {tmp_path / 'a'}: is a folder; name the file to write")
    assert snapshot(tmp_path) == before


def test_anchors_without_matplotlib_for_plot_say_so_before_any_work(world, tmp_path, monkeypatch):
    import builtins
    root, data, cfg, weights, tests = world
    real = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    rc, out, err = cli("anchors", data, "-n", "3", "--plot", tmp_path / "k.png", "--out", tmp_path / "a.txt")
    assert rc == 1 and "matplotlib" in err and "deltaprop[plot]" in err and out == ""
    assert not (tmp_path / "a.txt").exists() and not (tmp_path / "k.png").exists()


def test_standard_input_that_names_nothing_or_cannot_be_read_is_one_line(world, monkeypatch):
    class Closed(io.StringIO):
        def read(self, *a):
            raise OSError("reading from a closed stream")
    for stdin, words in ((io.StringIO("\n# nothing\n"), "standard input: no picture paths (one a line)"),
                         (Closed(), "standard input: cannot read the picture paths (reading from a closed stream)")):
        rc, out, err = _test(world, "--no-draw", stdin=stdin, monkeypatch=monkeypatch)
        assert rc == 1 and err.strip() == f"deltaprop detector: error: {words}", err
