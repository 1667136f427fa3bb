"""``deltaprop data digits`` on a tiny synthetic MNIST (IDX files written here): Darknet's layout, train digits
in train scenes and test digits in test scenes, tight boxes around the ink, determinism by seed."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deltaprop.cli import main
from deltaprop.data.detection import DetectionDataset, image_list, read_data_file, read_names
from deltaprop.data.digits import DigitScenes, ink_crop
from deltaprop.data.idx import write_idx
from deltaprop.errors import ValueRangeError


def tiny_mnist(root: Path, n: int = 20) -> Path:
    """IDX files of solid ink rectangles (255) inside a faint frame (20, below the ink threshold) at a random
    place in 28x28; train labels 0..4, test labels 5..9, so a scene tells which split its digits came from."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, stem, base in (("train", "train", 0), ("test", "t10k", 5)):
        x = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            h, w = rng.integers(12, 21), rng.integers(6, 15)
            t, l = rng.integers(2, 28 - h - 1), rng.integers(2, 28 - w - 1)
            x[i, t - 1:t + h + 1, l - 1:l + w + 1] = 20
            x[i, t:t + h, l:l + w] = 255
        y = (base + np.arange(n) % 5).astype(np.uint8)
        write_idx(root / f"{stem}-images-idx3-ubyte", x)
        write_idx(root / f"{stem}-labels-idx1-ubyte", y)
    return root


def _digits(out, mnist, *extra):
    return main(["data", "digits", "--out", str(out), "--mnist", str(mnist), "--train", "8", "--test", "4",
                 "--format", "png", *extra])


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    mnist = tiny_mnist(root / "mnist")
    assert _digits(root / "set", mnist, "--noise", "0", "--seed", "3") == 0
    return root / "set", mnist


def test_layout_is_darknets(scenes):
    out, _ = scenes
    cfg = read_data_file(out / "digits.data")
    assert (cfg.classes, cfg.train, cfg.valid, cfg.names, cfg.backup) == (
        10, out / "train.txt", out / "test.txt", out / "digits.names", out / "backup")
    assert read_names(cfg.names) == [str(d) for d in range(10)]
    assert (out / "backup").is_dir()
    train, test = image_list(cfg.train), image_list(cfg.valid)
    assert len(train) == 8 and len(test) == 4
    assert all(p.parent == out / "images" and p.suffix == ".png" for p in train + test)
    assert (out / "train.txt").read_text().splitlines()[0] == "images/train_000000.png"   # relative: movable
    assert main(["data", "check", str(out / "digits.data")]) == 0


def test_train_digits_in_train_scenes_test_digits_in_test_scenes(scenes):
    out, _ = scenes
    cfg = read_data_file(out / "digits.data")
    for source, allowed in ((cfg.train, set(range(5))), (cfg.valid, set(range(5, 10)))):
        ds = DetectionDataset(source, 10, 32, 32)
        counts = [len(ds.labels(i)) for i in range(len(ds))]
        assert all(1 <= c <= 6 for c in counts)
        classes = {int(c) for i in range(len(ds)) for c in ds.labels(i)[:, 0]}
        assert classes <= allowed and classes


def test_boxes_are_tight_around_the_ink(scenes):
    out, _ = scenes
    ds = DetectionDataset(out / "train.txt", 10, 32, 32)
    opts = DigitScenes()
    for i in range(len(ds)):
        img = np.asarray(Image.open(ds.images[i]).convert("RGB"), dtype=np.float64) / 255
        s = img.shape[0]
        for c, x, y, w, h in ds.labels(i):
            l, r = int(round((x - w / 2) * s)), int(round((x + w / 2) * s))
            t, b = int(round((y - h / 2) * s)), int(round((y + h / 2) * s))
            assert opts.digit_min - 1 <= max(r - l, b - t) <= opts.digit_max + 1
            inside = img[t + 1:b - 1, l + 1:r - 1].reshape(-1, 3)
            ink = np.median(inside, axis=0)
            assert np.abs(inside - ink).max() < 0.02            # solid ink fills the box: no frame inside
            for edge in (img[t - 1, l:r] if t > 0 else None, img[b, l:r] if b < s else None,
                         img[t:b, l - 1] if l > 0 else None, img[t:b, r] if r < s else None):
                if edge is not None:                            # just outside: no full-strength ink
                    assert np.abs(edge - ink).max(axis=1).min() > 0.05


def test_same_seed_same_set_other_seed_other_set(scenes, tmp_path):
    out, mnist = scenes
    assert _digits(tmp_path / "again", mnist, "--noise", "0", "--seed", "3") == 0
    for f in sorted((out / "labels").iterdir()):
        assert (tmp_path / "again" / "labels" / f.name).read_bytes() == f.read_bytes()
    for f in sorted((out / "images").iterdir()):
        assert (tmp_path / "again" / "images" / f.name).read_bytes() == f.read_bytes()
    assert _digits(tmp_path / "other", mnist, "--noise", "0", "--seed", "4") == 0
    assert (tmp_path / "other" / "labels" / "train_000000.txt").read_bytes() != \
        (out / "labels" / "train_000000.txt").read_bytes()


def test_options_and_refusals(scenes, tmp_path, capsys):
    out, mnist = scenes
    assert _digits(out, mnist) == 1                             # not empty: refused, nothing touched
    assert f"{out}: folder exists and is not empty" in capsys.readouterr().err
    target = tmp_path / "forced"
    assert _digits(target, mnist, "--seed", "1") == 0
    before = (target / "labels" / "train_000000.txt").read_text()
    assert _digits(target, mnist, "--seed", "2", "--force", "--size", "64", "--digit-size", "10", "20",
                   "--digits", "2", "3") == 0
    assert (target / "labels" / "train_000000.txt").read_text() != before
    assert Image.open(target / "images" / "train_000000.png").size == (64, 64)
    ds = DetectionDataset(target / "train.txt", 10, 32, 32)
    assert all(2 <= len(ds.labels(i)) <= 3 for i in range(len(ds)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temporary folders left
    capsys.readouterr()
    assert _digits(tmp_path / "x", tmp_path / "no-mnist") == 1
    assert _digits(tmp_path / "y", mnist, "--digit-size", "60", "14") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("deltaprop data: error: MNIST not found in")
    assert err[1] == "deltaprop data: error: digit sizes must satisfy 4 <= min <= max, got 60..14"


def test_jpeg_default_and_ink_crop():
    assert DigitScenes().format == "jpg"
    d = np.zeros((28, 28), np.uint8)
    d[3:9, 10:12] = 200
    d[2, 2] = 30                                                 # faint: below the ink threshold
    assert ink_crop(d).shape == (6, 2)
    with pytest.raises(ValueRangeError):
        DigitScenes(digit_max=200)
