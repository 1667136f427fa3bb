"""MNIST lookup order, download with MD5 checks (a fake urlopen: no internet in tests), loading."""
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from deltaprop.data import mnist
from deltaprop.data.idx import write_idx
from deltaprop.errors import DataError


def _fake_mnist(d: Path, n_train=6, n_test=4, tag=0):
    """Tiny files in the MNIST layout; pixel value ``tag`` marks which directory was read."""
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = mnist.FILES[split]
        write_idx(d / (img + ".gz"), np.full((n, 28, 28), tag, np.uint8))
        write_idx(d / lab, (np.arange(n) % 10).astype(np.uint8))
    return d


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No env var, no ../shared, an empty cache: every location under tmp_path."""
    monkeypatch.delenv("DELTAPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist, "REPO_ROOT", tmp_path / "repo" / "main")
    (tmp_path / "work" / "main").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "main")

    def no_net(*a, **k):
        raise AssertionError("tests must not reach the network")
    monkeypatch.setattr(mnist, "urlopen", no_net)
    return tmp_path


def _which(root=None):
    imgs, labels = mnist.load_mnist(root, split="test", download=False)
    return int(imgs[0, 0, 0])


def test_lookup_order(isolated, monkeypatch):
    t = isolated
    _fake_mnist(t / "cache" / "deltaprop" / "mnist", tag=5)
    assert _which() == 5
    _fake_mnist(t / "work" / "shared" / "data" / "mnist", tag=4)   # ../shared/data from the cwd
    assert _which() == 4
    _fake_mnist(t / "repo" / "shared" / "data" / "mnist", tag=3)   # ../shared/data beside the package's repo
    assert _which() == 3
    _fake_mnist(t / "env", tag=2)
    monkeypatch.setenv("DELTAPROP_DATA", str(t / "env"))
    assert _which() == 2
    _fake_mnist(t / "explicit" / "mnist", tag=1)
    assert _which(t / "explicit") == 1


def test_not_found_without_download(isolated):
    with pytest.raises(DataError, match="MNIST not found"):
        mnist.load_mnist(download=False)


def test_load_shapes_and_label_check(isolated):
    d = _fake_mnist(isolated / "x")
    imgs, labels = mnist.load_mnist(d, "train")
    assert imgs.shape == (6, 28, 28) and imgs.dtype == np.uint8 and labels.tolist() == [0, 1, 2, 3, 4, 5]
    write_idx(d / "t10k-labels-idx1-ubyte", np.array([0, 1, 12, 3], np.uint8))
    with pytest.raises(DataError, match="label 12"):
        mnist.load_mnist(d, "test")
    write_idx(d / "t10k-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8))
    with pytest.raises(DataError, match="3 labels for 4 images"):
        mnist.load_mnist(d, "test")
    with pytest.raises(ValueError, match="split"):
        mnist.load_mnist(d, "validation")


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def _server(files, bad_hosts=(), garbage_hosts=()):
    """A fake urlopen serving ``files`` {name: bytes}; hosts in bad_hosts fail, garbage_hosts send wrong bytes."""
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        if any(h in url for h in bad_hosts):
            raise OSError("connection refused")
        name = url.rsplit("/", 1)[1]
        if any(h in url for h in garbage_hosts):
            return _Response(gzip.compress(b"not mnist"))
        return _Response(files[name])
    return urlopen, calls


def test_download_checks_md5_and_falls_back(isolated, monkeypatch):
    # Synthetic files with their own MD5 sums: tests the mechanism without the real 11 MB.
    raw = {stem: bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([i, i, i]) for i, stem in enumerate(mnist.MD5)}
    monkeypatch.setattr(mnist, "MD5", {k: hashlib.md5(v).hexdigest() for k, v in raw.items()})
    urlopen, calls = _server({k + ".gz": gzip.compress(v) for k, v in raw.items()},
                             bad_hosts=["mirror-a"], garbage_hosts=["mirror-b"])
    monkeypatch.setattr(mnist, "urlopen", urlopen)
    mirrors = ["https://mirror-a/mnist/", "https://mirror-b/mnist/", "https://mirror-c/mnist/"]
    d = mnist.download_mnist(isolated / "dl", mirrors=mirrors, verbose=False)
    assert len(calls) == 12  # every file tried a, b, then c
    for stem, data in raw.items():
        assert gzip.decompress((d / (stem + ".gz")).read_bytes()) == data
    assert all(mnist.verify_mnist(d).values())
    calls.clear()
    mnist.download_mnist(d, mirrors=mirrors, verbose=False)  # already there and verified: no request
    assert calls == []
    assert not list(d.glob(".*tmp"))


def test_download_all_mirrors_bad(isolated, monkeypatch):
    urlopen, _ = _server({}, garbage_hosts=["m"])
    monkeypatch.setattr(mnist, "urlopen", urlopen)
    with pytest.raises(DataError) as e:
        mnist.download_mnist(isolated / "dl", mirrors=["https://m1/", "https://m2/"], verbose=False)
    assert "MD5" in str(e.value) and "expected" in str(e.value)
    assert not list((isolated / "dl").glob("*.gz"))


def test_find_downloads_into_cache_when_missing(isolated, monkeypatch):
    src = _fake_mnist(isolated / "src")
    files = {}
    for p in src.iterdir():
        raw = p.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        files[p.name.replace(".gz", "") + ".gz"] = gzip.compress(raw)
    monkeypatch.setattr(mnist, "MD5", {k[:-3]: hashlib.md5(gzip.decompress(v)).hexdigest() for k, v in files.items()})
    urlopen, calls = _server(files)
    monkeypatch.setattr(mnist, "urlopen", urlopen)
    imgs, labels = mnist.load_mnist(split="train")
    assert imgs.shape == (6, 28, 28) and len(calls) == 4
    assert calls[0].startswith(mnist.MIRRORS[0])
    assert (isolated / "cache" / "deltaprop" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_real_mnist_md5_via_fake_download(shared_dir, isolated, monkeypatch):
    """The real files, served by the fake urlopen, pass the canonical MD5 sums."""
    src = shared_dir / "data" / "mnist"
    files = {p.name: p.read_bytes() for p in src.glob("*.gz")}
    urlopen, calls = _server(files)
    monkeypatch.setattr(mnist, "urlopen", urlopen)
    d = mnist.download_mnist(isolated / "dl", verbose=False)
    assert len(calls) == 4 and all(mnist.verify_mnist(d).values())


def test_real_mnist_loads(shared_dir):
    imgs, labels = mnist.load_mnist(shared_dir / "data" / "mnist", "train", download=False)
    assert imgs.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert labels[:5].tolist() == [5, 0, 4, 1, 9] and np.bincount(labels).min() > 5000
    timgs, tlabels = mnist.load_mnist(shared_dir / "data", "test", download=False)
    assert timgs.shape == (10000, 28, 28) and tlabels[:3].tolist() == [7, 2, 1]
