"""DataLoader (seeded shuffling, epochs, drop_last), train/val split, normalisation, digit pictures."""
import numpy as np
import pytest

import deltaprop as dp
from deltaprop.data import DataLoader, default_preprocess, preprocess, scale01, standardize, train_val_split
from deltaprop.errors import ShapeError


def _ids(loader):
    return np.concatenate([yb for _, yb in loader])


def test_no_shuffle_in_order():
    X = np.arange(10, dtype=np.float32)[:, None]
    dl = DataLoader(X, np.arange(10), batch_size=4)
    sizes = [len(xb) for xb, _ in dl]
    assert sizes == [4, 4, 2] and len(dl) == 3 and dl.num_samples == 10
    np.testing.assert_array_equal(_ids(dl), np.arange(10))


def test_drop_last():
    dl = DataLoader(np.zeros((10, 2)), np.arange(10), batch_size=4, shuffle=True, seed=0, drop_last=True)
    assert [len(x) for x, _ in dl] == [4, 4] and len(dl) == 2 and dl.num_samples == 8


def test_shuffle_is_a_seeded_permutation_per_epoch():
    y = np.arange(100)
    a = DataLoader(np.zeros((100, 1)), y, batch_size=7, shuffle=True, seed=3)
    b = DataLoader(np.zeros((100, 1)), y, batch_size=7, shuffle=True, seed=3)
    e0, e1 = _ids(a), _ids(a)            # plain iteration advances the epoch
    assert sorted(e0) == list(range(100)) and not np.array_equal(e0, e1)
    b.set_epoch(1)
    np.testing.assert_array_equal(_ids(b), e1)  # epoch 1 is the same order whoever asks
    np.testing.assert_array_equal(a.order(0), e0)
    c = DataLoader(np.zeros((100, 1)), y, batch_size=7, shuffle=True, seed=4)
    assert not np.array_equal(_ids(c), e0)


def test_seed_none_follows_manual_seed():
    dp.manual_seed(7)
    a = DataLoader(np.zeros((50, 1)), np.arange(50), shuffle=True)
    dp.manual_seed(7)
    b = DataLoader(np.zeros((50, 1)), np.arange(50), shuffle=True)
    assert a.seed == b.seed


def test_loader_errors():
    with pytest.raises(ShapeError, match="10 inputs but 9"):
        DataLoader(np.zeros((10, 1)), np.zeros(9))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros((10, 1)), batch_size=0)


@pytest.mark.parametrize("stratify", [False, True])
def test_train_val_split(stratify):
    X = np.arange(200)[:, None]
    y = np.arange(200) % 4
    (xt, yt), (xv, yv) = train_val_split(X, y, 0.25, seed=1, stratify=stratify)
    assert len(xv) == 50 and len(xt) == 150
    assert set(xt[:, 0]).isdisjoint(xv[:, 0]) and len(set(xt[:, 0]) | set(xv[:, 0])) == 200
    np.testing.assert_array_equal(yv, xv[:, 0] % 4)
    if stratify:
        assert set(np.bincount(yv).tolist()) <= {12, 13}
    (xt2, _), (xv2, _) = train_val_split(X, y, 0.25, seed=1, stratify=stratify)
    np.testing.assert_array_equal(xv, xv2)
    with pytest.raises(ValueError):
        train_val_split(X, y, 1.0)


def test_normalisation():
    img = np.array([[[0, 255], [51, 102]]], np.uint8)
    s = scale01(img)
    assert s.dtype == np.float32 and s.max() == 1.0 and s.min() == 0.0
    z, m, sd = standardize(s)
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5 and z.dtype == np.float32
    p = preprocess(img)
    assert p.shape == (1, 1, 2, 2) and p.dtype == np.float32
    spec = default_preprocess()
    np.testing.assert_allclose(p[0, 0, 0, 1], (1.0 - spec["mean"]) / spec["std"], rtol=1e-6)
    assert preprocess(img, dtype=np.float64).dtype == np.float64


def test_digit_pictures(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from deltaprop.data.images import load_digit
    # a dark "1" on white paper, 60x40, off centre
    a = np.full((60, 40), 255, np.uint8)
    a[10:50, 5:9] = 0
    Image.fromarray(a).save(tmp_path / "one.png")
    d = load_digit(tmp_path / "one.png")
    assert d.shape == (28, 28) and d.dtype == np.uint8
    assert d[0].max() == 0 and d.max() > 200               # inverted: white ink on black
    ys, xs = np.nonzero(d > 30)
    assert ys.max() - ys.min() + 1 <= 20 and abs(xs.mean() - 13.5) < 2  # fits 20x20, centred
    Image.fromarray(a).convert("RGB").save(tmp_path / "one.jpg")
    assert load_digit(tmp_path / "one.jpg").shape == (28, 28)
    from deltaprop.errors import DataError
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_digit(tmp_path / "bad.png")


def test_pictures_without_pillow_say_what_to_install(monkeypatch, tmp_path):
    import sys
    from deltaprop.data import images
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'deltaprop\[images\]'"):
        images.load_digit(tmp_path / "x.png")
