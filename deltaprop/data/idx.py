"""IDX files (the MNIST format): read and write, gzipped or not.

Layout: a 4-byte big-endian magic ``0x00 0x00 <type> <ndim>`` (2051 = uint8 images of 3 dimensions,
2049 = uint8 labels of 1 dimension), then ``ndim`` big-endian int32 sizes, then the values, big-endian.
Every size is checked against the file's length: a truncated or padded file raises ``DataError`` naming
the file, the expected and the actual number of bytes. Sizes are multiplied as Python integers and checked
against ``max_bytes`` before anything proportional to them is read; a gzipped file is decompressed in
chunks and only up to one byte past the size its header declares (a gzip bomb stops there).
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, List, Optional, Tuple, Union

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import DataError

PathLike = Union[str, os.PathLike]

# IDX type code -> big-endian dtype
IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in IDX_TYPES.items()}

MAGIC_IMAGES = 2051  # 0x00000803: uint8, 3 dimensions
MAGIC_LABELS = 2049  # 0x00000801: uint8, 1 dimension


#: Default cap on the bytes of values an IDX header may declare (``read_idx(..., max_bytes=)``): MNIST's
#: largest file holds 47 MB. A header is checked against it before anything proportional to it is read.
MAX_BYTES = 2 ** 31
_CHUNK = 1 << 20


@dataclass(frozen=True)
class IdxHeader:
    """What the magic number and the sizes declare: the dtype, the shape and the byte counts."""
    dtype: np.dtype
    shape: Tuple[int, ...]
    header_bytes: int
    data_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.data_bytes


def _magic(head: bytes, name: str, expect_magic: Optional[int]) -> Tuple[int, int]:
    """(type code, ndim) from the first 4 bytes."""
    if len(head) < 4:
        raise DataError(f"{name}: too short for an IDX header: expected at least 4 bytes, got {len(head)}")
    magic = int.from_bytes(head[:4], "big")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{name}: bad IDX magic number {magic} (0x{magic:08x}): the first two bytes must be zero "
                        f"(2051 for images, 2049 for labels)")
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        raise DataError(f"{name}: bad IDX magic number {magic} (0x{magic:08x}): unknown type code 0x{code:02x} "
                        f"(known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: IDX magic number is {magic}, expected {expect_magic}")
    return code, ndim


def _header(code: int, ndim: int, sizes: bytes, name: str, max_bytes: int) -> IdxHeader:
    """The declared layout; sizes are multiplied as Python integers (no wrap-around) and the product is
    checked against ``max_bytes`` before anything proportional to it is allocated or read."""
    shape = tuple(int.from_bytes(sizes[4 * i:4 * i + 4], "big", signed=True) for i in range(ndim))
    if any(s < 0 for s in shape):
        raise DataError(f"{name}: negative dimension in IDX shape {shape}")
    dtype = IDX_TYPES[code]
    data_bytes = math.prod(shape) * dtype.itemsize
    if data_bytes > max_bytes:
        raise DataError(f"{name}: IDX header declares shape {shape} of {dtype.name}, {data_bytes:,} bytes, more "
                        f"than the limit of {max_bytes:,} bytes (read_idx(..., max_bytes=) raises it)")
    return IdxHeader(dtype, shape, 4 + 4 * ndim, data_bytes)


def _size_error(name: str, h: IdxHeader, got: str, truncated: bool) -> DataError:
    what = "truncated" if truncated else "has trailing data"
    return DataError(f"{name}: IDX file {what}: shape {h.shape} of {h.dtype.name} needs {h.total_bytes} bytes, "
                     f"got {got}")


def _to_array(buf, h: IdxHeader) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=h.dtype, count=math.prod(h.shape)).reshape(h.shape)
    return arr.astype(h.dtype.newbyteorder("="), copy=True)


def parse_idx(data: bytes, name: str = "<bytes>", expect_magic: Optional[int] = None,
              max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode IDX bytes into a native-endian array, checking the magic and every size."""
    code, ndim = _magic(data[:4], name, expect_magic)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: expected {header} bytes for {ndim} dimensions, "
                        f"got {len(data)}")
    h = _header(code, ndim, data[4:header], name, max_bytes)
    if len(data) != h.total_bytes:
        raise _size_error(name, h, str(len(data)), len(data) < h.total_bytes)
    return _to_array(memoryview(data)[header:], h)


def _read_upto(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream; read in chunks, so that memory follows the
    data actually present, never ``n`` alone."""
    parts: List[bytes] = []
    left = n
    while left > 0:
        part = stream.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_stream(f: BinaryIO, name: str, expect_magic: Optional[int], max_bytes: int,
                 size: Optional[int]) -> np.ndarray:
    """Read one IDX file from ``f`` (``size``: its length when known, i.e. not gzipped). A gzip stream is
    decompressed only up to one byte past the declared size: a bomb stops there."""
    head = _read_upto(f, 4)
    code, ndim = _magic(head, name, expect_magic)
    sizes = _read_upto(f, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header: expected {4 + 4 * ndim} bytes for {ndim} dimensions, "
                        f"got {4 + len(sizes)}")
    h = _header(code, ndim, sizes, name, max_bytes)
    if size is not None and size != h.total_bytes:
        raise _size_error(name, h, str(size), size < h.total_bytes)
    body = _read_upto(f, h.data_bytes)
    if len(body) < h.data_bytes:
        raise _size_error(name, h, str(h.header_bytes + len(body)), True)
    if size is None and f.read(1):
        raise _size_error(name, h, f"more (decompression stopped {h.total_bytes + 1} bytes in)", False)
    return _to_array(body, h)


def read_idx(path: PathLike, expect_magic: Optional[int] = None, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (plain or gzipped, detected from its first bytes) into a native-endian array.
    ``max_bytes`` caps the size a header may declare (DataError beyond it, before reading the values)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"  # gzip, whatever the name says
            f.seek(0)
            if gz:
                with gzip.GzipFile(fileobj=f) as g:
                    return _read_stream(g, str(path), expect_magic, max_bytes, None)
            return _read_stream(f, str(path), expect_magic, max_bytes, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an IDX file") from None
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from None


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for ``array`` (uint8, int8, int16, int32, float32 or float64)."""
    a = np.asarray(array)
    key = a.dtype.newbyteorder("=") if a.dtype.itemsize > 1 else a.dtype
    if key not in _CODES:
        raise DataError(f"IDX cannot store dtype {a.dtype} (uint8, int8, int16, int32, float32, float64)")
    if a.ndim > 255:
        raise DataError(f"IDX stores at most 255 dimensions, got {a.ndim}")
    code = _CODES[key]
    head = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">i4").tobytes()
    return head + np.ascontiguousarray(a, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path: PathLike, array: np.ndarray, compress: Optional[bool] = None) -> Path:
    """Write ``array`` as IDX; gzipped when ``compress`` is True or (None) the name ends in ``.gz``.
    Written to a temporary file first, then renamed: never half-written."""
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = encode_idx(array)
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)
