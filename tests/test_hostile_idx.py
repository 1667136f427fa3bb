"""Hostile IDX files (issue 19): a small file never costs more than the size its header declares."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from deltaprop.data.idx import encode_idx, parse_idx, read_idx
from deltaprop.errors import DataError

from hostile_testutil import gzip_bomb, raises_cheaply

ONE_BYTE = b"\0\0\x08\x01" + (1).to_bytes(4, "big") + b"\x07"  # uint8, shape (1,), value 7: 9 bytes


def test_gzip_bomb_stops_past_the_declared_size(tmp_path):
    p = tmp_path / "bomb-idx1-ubyte.gz"
    p.write_bytes(gzip_bomb(ONE_BYTE, 1024))  # 9 bytes declared, then 1 GiB of zeros, in about 1 MB
    assert p.stat().st_size < 1.2 * 2 ** 20
    err = raises_cheaply(DataError, lambda: read_idx(p), match="trailing data")
    assert str(p) in str(err) and "needs 9 bytes" in str(err)


def test_gzip_without_bomb_still_reads(tmp_path):
    p = tmp_path / "ok.gz"
    a = np.arange(3 * 70000, dtype=np.int32).reshape(3, 70000)  # several chunks of decompression
    p.write_bytes(gzip.compress(encode_idx(a)))
    np.testing.assert_array_equal(read_idx(p), a)


@pytest.mark.parametrize("dims", [[65536] * 4, [2 ** 31 - 1] * 3, [2 ** 31 - 1] * 255])
@pytest.mark.parametrize("gz", [False, True])
def test_dimension_product_is_not_wrapped(tmp_path, dims, gz):
    """65536⁴ is 0 in int64 (the old check then passed for an empty body); every product here is far beyond
    the addressable size: DataError naming the declared size, before any value is read."""
    raw = bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    p = tmp_path / ("x.gz" if gz else "x")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    raises_cheaply(DataError, lambda: read_idx(p), match="more than the limit")
    raises_cheaply(DataError, lambda: parse_idx(raw), match="more than the limit")


def test_declared_size_checked_against_max_bytes_before_reading(tmp_path):
    """A header declaring 1 GiB in a gzip holding 20 bytes: refused by the cap, or, under a larger cap, read only
    as far as the data go (the body is not allocated from the declared size)."""
    raw = bytes([0, 0, 0x08, 1]) + (2 ** 30).to_bytes(4, "big") + bytes(20)
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(raw))
    raises_cheaply(DataError, lambda: read_idx(p, max_bytes=2 ** 20), match="more than the limit")
    err = raises_cheaply(DataError, lambda: read_idx(p, max_bytes=2 ** 31), match="truncated")
    assert "got 28" in str(err)


def test_plain_file_size_checked_before_reading(tmp_path):
    raw = bytes([0, 0, 0x0D, 2]) + (20000).to_bytes(4, "big") * 2 + bytes(8)
    p = tmp_path / "x"
    p.write_bytes(raw)
    raises_cheaply(DataError, lambda: read_idx(p), match="truncated")
