"""IDX files: round trips, and clear errors for truncated, padded, corrupt and mislabelled files."""
import gzip

import numpy as np
import pytest

from deltaprop.data.idx import MAGIC_IMAGES, MAGIC_LABELS, encode_idx, parse_idx, read_idx, write_idx
from deltaprop.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, rng, dtype, suffix):
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    p = write_idx(tmp_path / f"a-idx3{suffix}", a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    raw = p.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_mnist_magic_numbers(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    assert int.from_bytes(encode_idx(imgs)[:4], "big") == MAGIC_IMAGES
    assert int.from_bytes(encode_idx(np.array([1, 2], np.uint8))[:4], "big") == MAGIC_LABELS
    # a header written by hand, as the MNIST files have it
    raw = (2051).to_bytes(4, "big") + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + imgs.tobytes()
    np.testing.assert_array_equal(parse_idx(raw, expect_magic=MAGIC_IMAGES), imgs)


def test_big_endian_values(tmp_path):
    raw = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + (258).to_bytes(4, "big")
    (tmp_path / "x").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [1, 258])


def test_truncated_file_names_expected_and_actual(tmp_path):
    a = np.zeros((10, 28, 28), np.uint8)
    raw = encode_idx(a)
    p = tmp_path / "imgs-idx3-ubyte"
    p.write_bytes(raw[:-100])
    with pytest.raises(DataError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg and str(len(raw)) in msg and str(len(raw) - 100) in msg and "truncated" in msg


def test_trailing_bytes(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(encode_idx(np.zeros(5, np.uint8)) + b"\0\0")
    with pytest.raises(DataError, match="trailing"):
        read_idx(p)


def test_truncated_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(encode_idx(np.zeros((50, 50), np.uint8)))[:-20])
    with pytest.raises(DataError, match="x.gz"):
        read_idx(p)


@pytest.mark.parametrize("header,match", [
    (bytes([1, 0, 8, 3]), "bad IDX magic"),
    (bytes([0, 0, 0x42, 1]), "unknown type code"),
    (bytes([0, 0]), "too short"),
    (bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
])
def test_bad_headers(tmp_path, header, match):
    p = tmp_path / "bad"
    p.write_bytes(header)
    with pytest.raises(DataError, match=match):
        read_idx(p)


def test_expected_magic_mismatch(tmp_path):
    p = write_idx(tmp_path / "labels", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="2049, expected 2051"):
        read_idx(p, expect_magic=MAGIC_IMAGES)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(tmp_path / "nope")


def test_unsupported_dtype():
    with pytest.raises(DataError, match="dtype"):
        encode_idx(np.zeros(3, np.complex64))
