"""Detection data in Darknet's layout: .data/.names/list files, the label rule, letterbox, DetectionDataset and
the threaded DetectionLoader (determinism, exact resume, multi-scale)."""
import numpy as np
import pytest
from PIL import Image

from conftest import fixture_dir
from deltaprop.data.augment import Augment
from deltaprop.data.detection import (DetectionDataset, DetectionLoader, image_list, label_path, letterbox,
                                      letterbox_rows, read_data_file, read_labels, read_names)
from deltaprop.errors import DataError


def make_set(root, n=10, size=(40, 30), classes=3):
    """n small PNG images under root/images with one box each under root/labels; returns their paths."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        p = root / "images" / f"im{i:02d}.png"
        Image.fromarray(arr).save(p)
        (root / "labels" / f"im{i:02d}.txt").write_text(f"{i % classes} 0.5 0.5 {(i + 1) / 20:.3f} 0.25\n")
        paths.append(p)
    return paths


def test_label_path_rule(tmp_path):
    assert label_path("/d/images/train/a.jpg") == label_path("/d/images/train/a.png")
    assert str(label_path("/d/images/train/a.jpg")) == "/d/labels/train/a.txt"
    assert str(label_path("/voc/VOC2007/JPEGImages/0001.JPEG")) == "/voc/VOC2007/labels/0001.txt"
    # only a whole path component named images is replaced, the last one (Darknet's substring rule would
    # have turned my_images into my_labels)
    assert str(label_path("/my_images/images/x/images/b.jpg")) == "/my_images/images/x/labels/b.txt"
    assert str(label_path("/plain/folder/c.jpeg")) == "/plain/folder/c.txt"


def test_read_data_file_resolves_paths_against_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.txt").write_text("")
    f = tmp_path / "sub" / "set.data"
    f.write_text("# comment\nclasses= 3\ntrain  = train.txt\nvalid = /abs/valid.txt\n\nnames = x.names\n"
                 "backup = backup/\neval=coco\n")
    cfg = read_data_file(f)
    assert cfg.classes == 3
    assert cfg.train == tmp_path / "sub" / "train.txt"
    assert str(cfg.valid) == "/abs/valid.txt"
    assert cfg.names == tmp_path / "sub" / "x.names"
    assert cfg.backup == tmp_path / "sub" / "backup"
    assert cfg.options["eval"] == "coco" and cfg.path == f


@pytest.mark.parametrize("text, message", [
    ("train = a.txt\n", "missing the required key 'classes'"),
    ("classes = three\n", ":1: classes 'three' is not an integer"),
    ("classes = 0\n", ":1: classes must be at least 1"),
    ("classes = 2\njust words\n", ":2: expected 'key = value'"),
])
def test_read_data_file_errors_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "bad.data"
    f.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_data_file(f)
    assert str(f) in str(e.value)


def test_read_names_and_image_list(tmp_path):
    names = tmp_path / "x.names"
    names.write_text("cat\ndog\n\n")
    assert read_names(names) == ["cat", "dog"]
    names.write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match=":2: empty class name"):
        read_names(names)
    with pytest.raises(DataError, match="no such names file"):
        read_names(tmp_path / "none.names")
    paths = make_set(tmp_path / "set", n=3)
    (tmp_path / "set" / "images" / "notes.txt").write_text("not an image")
    assert image_list(tmp_path / "set" / "images") == sorted(paths)
    lst = tmp_path / "set" / "list.txt"
    lst.write_text("images/im01.png\n\n# skipped\n" + str(paths[2]) + "\n")
    assert image_list(lst) == [paths[1], paths[2]]
    with pytest.raises(DataError, match="no such image list or folder"):
        image_list(tmp_path / "missing.txt")


def test_coco128_fixture_photos_load_with_their_labels():
    images = image_list(fixture_dir("coco128", "images"))
    assert len(images) == 3
    ds = DetectionDataset(images, 80, 160, 128)
    for i in range(len(ds)):
        x, rows = ds[i]
        assert x.shape == (3, 128, 160) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(rows[:, 0], read_labels(label_path(images[i]), 80)[:, 0])


def test_letterbox_rows_follow_the_letterboxed_image():
    # a 60x30 image with a white square, letterboxed into 40x40: 40x20 centred vertically
    im = np.zeros((3, 30, 60), np.float32)
    im[:, 10:20, 30:45] = 1.0
    rows = np.array([[0, 37.5 / 60, 15 / 30, 15 / 60, 10 / 30]], np.float32)
    x = letterbox(im, 40, 40)
    assert x.shape == (3, 40, 40)
    assert (x[:, :10] == 0.5).all() and (x[:, 30:] == 0.5).all()
    out = letterbox_rows(rows, 60, 30, 40, 40)
    c, bx, by, bw, bh = out[0]
    l, r, t, b = (bx - bw / 2) * 40, (bx + bw / 2) * 40, (by - bh / 2) * 40, (by + bh / 2) * 40
    np.testing.assert_allclose([l, r, t, b], [20, 30, 10 + 20 / 3, 10 + 40 / 3], atol=1e-4)
    white = np.nonzero(x[0] > 0.9)
    assert white[1].min() >= 20 and white[1].max() < 30 and white[0].min() >= int(t) and white[0].max() <= b


def test_unaugmented_samples_do_not_depend_on_seed(tmp_path):
    paths = make_set(tmp_path, n=2)
    a, b = DetectionDataset(paths, 3, 32, 32, seed=1), DetectionDataset(paths, 3, 32, 32, seed=2)
    np.testing.assert_array_equal(a[0][0], b[0][0])


def _batches(loader, k):
    it = loader.batches()
    return [next(it) for _ in range(k)]


def _equal(b1, b2):
    np.testing.assert_array_equal(b1[0], b2[0])
    assert len(b1[1]) == len(b2[1])
    for t1, t2 in zip(b1[1], b2[1]):
        np.testing.assert_array_equal(t1, t2)


def test_loader_batches_shapes_and_targets(tmp_path):
    paths = make_set(tmp_path, n=10)
    ds = DetectionDataset(paths, 3, 48, 32, augment=Augment(), seed=0)
    loader = DetectionLoader(ds, 4, shuffle=True, seed=0, workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 3, 32, 48), (4, 3, 32, 48), (2, 3, 32, 48)]
    assert len(loader) == 3 and loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0
    for x, targets in batches:
        assert x.dtype == np.float32 and isinstance(targets, list)
        for t in targets:
            assert t.dtype == np.float32 and t.shape == (1, 5)
    plain = DetectionLoader(DetectionDataset(paths, 3, 40, 30), 4, shuffle=True, seed=0, workers=2)
    widths = [float(t[0, 3]) for _, ts in plain for t in ts]                    # box i is (i + 1) / 20 wide
    assert sorted(round(w * 20) for w in widths) == list(range(1, 11))          # each image once an epoch
    assert [round(w * 20) for w in widths] != list(range(1, 11))                # in a shuffled order
    assert len(DetectionLoader(ds, 4, drop_last=True, workers=0)) == 2


def test_same_seed_same_batches_whatever_the_threads(tmp_path):
    paths = make_set(tmp_path, n=9)
    ds = DetectionDataset(paths, 3, 32, 32, augment=Augment(), seed=7)
    threaded = _batches(DetectionLoader(ds, 3, seed=5, workers=2), 6)      # two epochs
    inline = _batches(DetectionLoader(ds, 3, seed=5, workers=0), 6)
    for a, b in zip(threaded, inline):
        _equal(a, b)
    other = _batches(DetectionLoader(DetectionDataset(paths, 3, 32, 32, augment=Augment(), seed=8), 3, seed=5,
                                     workers=0), 1)
    assert not np.array_equal(other[0][0], inline[0][0])
    # a new epoch is a new order and new augmentation
    assert not np.array_equal(inline[0][0], inline[3][0])


def test_resume_continues_exactly(tmp_path):
    paths = make_set(tmp_path, n=10)
    ds = DetectionDataset(paths, 3, 32, 32, augment=Augment(), seed=0)
    full = _batches(DetectionLoader(ds, 3, seed=1, workers=2), 7)
    first = DetectionLoader(ds, 3, seed=1, workers=2)
    it = first.batches()
    for _ in range(5):
        next(it)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == 1
    resumed = DetectionLoader(ds, 3, seed=1, workers=2)
    resumed.load_state_dict(state)
    rest = _batches(resumed, 2)
    _equal(rest[0], full[5])
    _equal(rest[1], full[6])
    with pytest.raises(DataError, match="out of range"):
        resumed.load_state_dict({"epoch": 0, "position": 99})
    with pytest.raises(DataError, match="'epoch' and 'position'"):
        resumed.load_state_dict({"epoch": 0})


def test_set_size_applies_to_the_next_batch(tmp_path):
    paths = make_set(tmp_path, n=12)
    ds = DetectionDataset(paths, 3, 32, 32, augment=Augment(), seed=0)
    loader = DetectionLoader(ds, 2, seed=0, workers=2)
    it = iter(loader)
    assert next(it)[0].shape == (2, 3, 32, 32)
    loader.set_size(64, 48)                           # batches already built ahead at 32x32 are rebuilt
    x, _ = next(it)
    assert x.shape == (2, 3, 48, 64)
    ref = DetectionLoader(ds, 2, seed=0, workers=0)
    np.testing.assert_array_equal(x, ref.make_batch(0, 1, 64, 48)[0])
    with pytest.raises(DataError):
        loader.set_size(0, 32)


def test_batches_runs_across_epochs(tmp_path):
    paths = make_set(tmp_path, n=3)
    loader = DetectionLoader(DetectionDataset(paths, 3, 16, 16), 2, workers=0)
    gen = loader.batches()
    shapes = [next(gen)[0].shape[0] for _ in range(5)]
    assert shapes == [2, 1, 2, 1, 2] and loader.epoch == 2


def test_loader_argument_errors(tmp_path):
    ds = DetectionDataset(make_set(tmp_path, n=3), 3, 16, 16)
    with pytest.raises(DataError, match="batch_size"):
        DetectionLoader(ds, 0)
    with pytest.raises(DataError, match="no batch"):
        DetectionLoader(ds, 4, drop_last=True)
    with pytest.raises(DataError, match="workers"):
        DetectionLoader(ds, 1, workers=-1)


def test_threads_build_the_next_batch_while_the_step_runs(tmp_path, monkeypatch):
    """With workers, a batch is built during the previous step: next() does not wait for it."""
    import time
    ds = DetectionDataset(make_set(tmp_path, n=8), 3, 16, 16)
    slow = ds.sample

    def sample(*args, **kw):
        time.sleep(0.05)                               # 0.1 s a batch of 2
        return slow(*args, **kw)
    monkeypatch.setattr(ds, "sample", sample)
    for workers in (2, 0):
        it = DetectionLoader(ds, 2, workers=workers).batches()
        next(it)
        waits = []
        for _ in range(3):
            time.sleep(0.3)                            # the "training step"
            t = time.perf_counter()
            next(it)
            waits.append(time.perf_counter() - t)
        if workers:
            assert max(waits) < 0.05, waits
        else:
            assert min(waits) >= 0.1, waits
