"""safetensors files of a model's ``state_dict`` (PyTorch's key names), written and read with NumPy alone.

The format (huggingface/safetensors): 8 bytes, the header's length N as a little-endian u64; N bytes of UTF-8
JSON, ``{"<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ..., "__metadata__":
{"<key>": "<string>"}}``, padded with spaces; then the tensors' bytes, little-endian, C order, back to back, the
offsets counted from the end of the header. A file written here loads with ``safetensors.torch.load_file`` into
the PyTorch twin of the model, and one written by it loads here.

Reading checks the file before trusting a number of it: the header's length against the file, the JSON (no
repeated names), every dtype, shape and offset, and that the tensors tile the data exactly (no gap, no overlap,
nothing after); a crafted file raises CheckpointError naming the tensor or field."""
from __future__ import annotations

import json
import math
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from .atomic import atomic_write_bytes
from .errors import CheckpointError, StateDictError

PathLike = Union[str, "os.PathLike[str]"]

#: safetensors dtype names -> NumPy little-endian dtypes (the ones NumPy has: no bfloat16, no float8)
DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
NAME_OF = {dt.newbyteorder("="): name for name, dt in DTYPES.items()}
#: The safetensors library's own cap on the header (100 MB): a larger length is not a header.
MAX_HEADER = 100_000_000
#: Default cap on a file read (``read_safetensors(max_bytes=)``), as for checkpoints.
MAX_BYTES = 4 * 2 ** 30
METADATA = "__metadata__"


def _state_of(model_or_state) -> "OrderedDict[str, np.ndarray]":
    if hasattr(model_or_state, "state_dict"):
        return model_or_state.state_dict()
    return OrderedDict((k, np.asarray(v)) for k, v in model_or_state.items())


def to_bytes(model_or_state, metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The safetensors bytes of a model's ``state_dict()`` (or of a mapping of arrays). Tensors are laid out
    widest dtype first (the library's order, which keeps every tensor aligned), in ``state_dict`` order within a
    dtype width; ``metadata`` (string keys and values) goes into ``__metadata__`` with ``"format": "pt"``."""
    state = _state_of(model_or_state)
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise CheckpointError(f"safetensors metadata holds strings only, got {k!r}: {type(v).__name__}")
        meta[k] = v
    arrays = []
    for key, value in state.items():
        a = np.asarray(value)
        name = NAME_OF.get(a.dtype.newbyteorder("=")) if a.dtype.kind in "fiub" else None
        if name is None or not isinstance(key, str) or not key or key == METADATA:
            raise CheckpointError(f"cannot store {key!r} ({a.dtype}) in a safetensors file")
        arrays.append((key, name, np.array(a, dtype=DTYPES[name], order="C")))   # 0-d stays 0-d
    arrays.sort(key=lambda t: -t[2].dtype.itemsize)          # stable: state_dict order within a width
    header: Dict[str, Any] = {METADATA: meta}
    offset = 0
    for key, name, a in arrays:
        header[key] = {"dtype": name, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)                     # the data starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text] + [a.tobytes() for _, _, a in arrays])


def save_safetensors(model_or_state, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write a model's ``state_dict()`` (or a mapping of arrays) to ``path`` as safetensors, atomically."""
    return atomic_write_bytes(path, to_bytes(model_or_state, metadata))


def _no_repeats(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise CheckpointError(f"the header names {k!r} twice")
        out[k] = v
    return out


def _entry(where: str, key: str, e: Any, data_len: int) -> Tuple[np.dtype, Tuple[int, ...], int, int]:
    """(dtype, shape, begin, end) of one header entry, each checked."""
    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{where}: tensor {key!r}: expected {{dtype, shape, data_offsets}}, got {e!r:.200}")
    if e["dtype"] not in DTYPES:
        raise CheckpointError(f"{where}: tensor {key!r}: dtype {e['dtype']!r} is not one NumPy reads "
                              f"({', '.join(DTYPES)})")
    shape, offs = e["shape"], e["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or len(shape) > 64:
        raise CheckpointError(f"{where}: tensor {key!r}: shape {shape!r:.200} is not a list of sizes ≥ 0")
    if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
            and 0 <= offs[0] <= offs[1] <= data_len):
        raise CheckpointError(f"{where}: tensor {key!r}: data_offsets {offs!r:.200} are not [begin, end] within "
                              f"the {data_len:,} bytes of data")
    dt = DTYPES[e["dtype"]]
    if math.prod(shape) * dt.itemsize != offs[1] - offs[0]:
        raise CheckpointError(f"{where}: tensor {key!r}: shape {shape} of {e['dtype']} needs "
                              f"{math.prod(shape) * dt.itemsize:,} bytes, its offsets hold {offs[1] - offs[0]:,}")
    return dt, tuple(shape), offs[0], offs[1]


def read_safetensors(path: PathLike, max_bytes: int = MAX_BYTES
                     ) -> Tuple["OrderedDict[str, np.ndarray]", Dict[str, str]]:
    """(tensors in file order, metadata) of a safetensors file, every field checked first (module docstring)."""
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{where}: no such safetensors file")
    size = p.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{where}: {size:,} bytes, more than the limit of {max_bytes:,}")
    raw = p.read_bytes()
    if len(raw) < 8:
        raise CheckpointError(f"{where}: not a safetensors file ({len(raw)} bytes, shorter than its 8-byte header "
                              f"length)")
    n = struct.unpack("<Q", raw[:8])[0]
    if n > min(MAX_HEADER, len(raw) - 8) or n < 2:
        raise CheckpointError(f"{where}: not a safetensors file (its header claims {n:,} bytes of a "
                              f"{len(raw):,}-byte file)")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=_no_repeats)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: the header is a JSON {type(header).__name__}, not an object")
    meta = header.pop(METADATA, {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{where}: __metadata__ must map strings to strings")
    data = memoryview(raw)[8 + n:]
    entries = sorted(((_entry(where, k, e, len(data)), k) for k, e in header.items()), key=lambda t: t[0][2:])
    end = 0
    for (_, _, begin, stop), key in entries:
        if begin != end:
            raise CheckpointError(f"{where}: tensor {key!r} starts at byte {begin:,} of the data, not at {end:,} "
                                  f"(the tensors must lie back to back, without gap or overlap)")
        end = stop
    if end != len(data):
        raise CheckpointError(f"{where}: the tensors end at byte {end:,} of {len(data):,} bytes of data")
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for (dt, shape, begin, stop), key in entries:
        out[key] = np.frombuffer(data[begin:stop], dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
    return out, dict(meta)


def load_safetensors(model, path: PathLike, strict: bool = True) -> Dict[str, str]:
    """Load a safetensors file into ``model`` (``load_state_dict``: the keys and shapes must match, float
    arrays take the model's dtype); returns the file's metadata. CheckpointError names what does not fit."""
    state, meta = read_safetensors(path)
    try:
        model.load_state_dict(state, strict=strict)
    except StateDictError as e:
        raise CheckpointError(f"{path}: does not fit the model ({type(model).__name__}): {e}") from None
    return meta


def is_safetensors(path: PathLike) -> bool:
    """True when ``path`` starts as a safetensors file does: a plausible header length, then ``{``."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    return len(head) == 9 and 2 <= struct.unpack("<Q", head[:8])[0] <= min(MAX_HEADER, size - 8) and head[8:] == b"{"


__all__ = ["save_safetensors", "load_safetensors", "read_safetensors", "to_bytes", "is_safetensors", "DTYPES"]
