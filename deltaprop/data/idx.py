"""IDX files (the MNIST format): read and write, gzipped or not.

Layout: a 4-byte big-endian magic ``0x00 0x00 <type> <ndim>`` (2051 = uint8 images of 3 dimensions,
2049 = uint8 labels of 1 dimension), then ``ndim`` big-endian int32 sizes, then the values, big-endian.
Every size is checked against the file's length: a truncated or padded file raises ``DataError`` naming
the file, the expected and the actual number of bytes.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Optional, Union

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


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":  # gzip, whatever the name says
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from None


def parse_idx(data: bytes, name: str = "<bytes>", expect_magic: Optional[int] = None) -> np.ndarray:
    """Decode IDX bytes into a native-endian array, checking the magic and every size."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header: expected at least 4 bytes, got {len(data)}")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad IDX magic number {magic} (0x{magic:08x}): the first two bytes must be zero "
                        f"(2051 for images, 2049 for labels)")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DataError(f"{name}: bad IDX magic number {magic} (0x{magic:08x}): unknown type code 0x{code:02x} "
                        f"(known: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)})")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: IDX magic number is {magic}, expected {expect_magic}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: expected {header} bytes for {ndim} dimensions, "
                        f"got {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(s < 0 for s in shape):
        raise DataError(f"{name}: negative dimension in IDX shape {shape}")
    dtype = IDX_TYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing data"
        raise DataError(f"{name}: IDX file {what}: shape {shape} of {dtype.name} needs {expected} bytes, "
                        f"got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: PathLike, expect_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file (plain or gzipped, detected from its first bytes) into a native-endian array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), expect_magic)


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
