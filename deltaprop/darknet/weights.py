"""Darknet ``.weights`` files (``parser.c``: ``load_weights_upto``/``save_weights_upto``).

Header: int32 major, minor, revision; then ``seen`` as uint64 when ``major·10 + minor ≥ 2`` and both are
below 1000, else int32. Then, layer by layer in cfg order, little-endian float32:
convolutional = biases, [scales, rolling_mean, rolling_variance], weights; connected = biases, weights,
[scales, rolling_mean, rolling_variance], the weights stored transposed ([inputs][outputs]) when major or
minor exceeds 1000. Layers with ``dontload``/``dontsave`` are skipped as Darknet does.

Every size is checked before anything is assigned. A file holding only the first M whole layers (Darknet's
``darknet53.conv.74``, ``yolov3-tiny.conv.15``, made by ``darknet partial``; whatever its name) loads those
layers, as Darknet's loader reads as many whole layers as the file holds, and the rest keep their initial values:
``load_weights`` returns a ``WeightsReport`` whose ``message`` says ``loaded layers 0..M-1 of N from FILE; the
rest start fresh`` (``partial=False``, the default of ``load_weights_bytes`` for checkpoints, refuses such a file
and names the ``upto`` that fits). With ``upto=N`` a file of the first M ≥ N whole layers (or all of them) gives
its first N. A file whose size is no layer boundary of the cfg (another cfg's weights, or a file cut inside a
layer) is a ``WeightsError`` naming the cfg and the sizes its layers end at.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import WeightsError
from ..atomic import atomic_write_bytes
from .layers import ConnectedLayer

DEFAULT_VERSION = (0, 2, 0)


def seen_is_64bit(major: int, minor: int) -> bool:
    """Darknet's test: ``seen`` is a size_t (8 bytes) for versions ≥ 0.2 below 1000."""
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def is_transposed(major: int, minor: int) -> bool:
    """Connected weights are stored [inputs][outputs] in files whose major or minor exceeds 1000."""
    return major > 1000 or minor > 1000


def header_size(major: int, minor: int) -> int:
    """Bytes of a .weights header: three int32 versions, then the images seen (int64 from 0.2, else int32)."""
    return 12 + (8 if seen_is_64bit(major, minor) else 4)


def parse_header(data: bytes, name: str = "<bytes>") -> Tuple[Tuple[int, int, int], int, int]:
    """``((major, minor, revision), seen, header_bytes)``."""
    if len(data) < 12:
        raise WeightsError(f"{name}: truncated header: expected at least 12 bytes (major, minor, revision), "
                           f"got {len(data)} bytes")
    major, minor, revision = struct.unpack_from("<iii", data, 0)
    hs = header_size(major, minor)
    if len(data) < hs:
        raise WeightsError(f"{name}: truncated header: version {major}.{minor}.{revision} needs {hs} bytes, "
                           f"got {len(data)} bytes")
    seen = struct.unpack_from("<Q" if hs == 20 else "<i", data, 12)[0]
    return (major, minor, revision), seen, hs


def _layout(net, n_layers: int, loading: bool) -> List[Tuple[int, object, List[Tuple[str, int]]]]:
    out = []
    for i, layer in enumerate(net.layers[:n_layers]):
        skip = layer.dontload if loading else layer.dontsave
        spec = layer.weight_layout(loading)
        if spec and not skip:
            out.append((i, layer, spec))
    return out


def expected_floats(net, upto: Optional[int] = None, loading: bool = True) -> int:
    """Number of float32 values the first ``upto`` layers (all by default) hold in a ``.weights`` file."""
    n = len(net.layers) if upto is None else min(int(upto), len(net.layers))
    return sum(c for _, _, spec in _layout(net, n, loading) for _, c in spec)


def _prefix_sizes(net) -> List[int]:
    """floats held by layers [0, k) for k = 0..n (for naming a partial file's layer count)."""
    sizes = [0]
    for layer in net.layers:
        spec = [] if layer.dontload else layer.weight_layout(True)
        sizes.append(sizes[-1] + sum(c for _, c in spec))
    return sizes


@dataclass(frozen=True)
class WeightsReport:
    """What a ``.weights`` load did: the first ``layers`` of the network's ``total`` layers are as ``source`` has
    them, and layer ``layers`` (one with weights) is the first that keeps its initial values."""
    source: str
    layers: int
    total: int
    seen: int

    @property
    def partial(self) -> bool:
        """Whether layers after the file's start fresh (a ``darknet partial`` file such as ``*.conv.15``)."""
        return self.layers < self.total

    @property
    def message(self) -> Optional[str]:
        """``loaded layers 0..M-1 of N from FILE; the rest start fresh`` for a partial file, else None."""
        if not self.partial:
            return None
        return f"loaded layers 0..{self.layers - 1} of {self.total} from {self.source}; the rest start fresh"


def _cfg_name(net) -> str:
    return os.path.basename(str(getattr(net, "source", "") or "the cfg")) or "the cfg"


def _not_this_cfg(net, name: str, got: int, hs: int, size: int) -> WeightsError:
    """The error for a file whose float count ends at no layer boundary of ``net``'s cfg."""
    prefix = _prefix_sizes(net)
    n = len(net.layers)
    full = prefix[-1]
    below = max(k for k, s in enumerate(prefix) if s < got) if got > 0 else 0
    head = f"{name} holds {got:,} float32 values after its {hs}-byte header ({size:,} bytes)"
    if got > full:
        return WeightsError(f"{head}, more than the {full:,} expected for all {n} layers of {_cfg_name(net)}: the "
                            f"weights of another, larger cfg, not of {_cfg_name(net)}")
    above = min(k for k, s in enumerate(prefix) if s > got)
    return WeightsError(f"{head}: not the weights of {_cfg_name(net)}, which expected all {n} layers' {full:,} values "
                        f"or those of its first whole layers (its first {below} layers take {prefix[below]:,} and "
                        f"its first {above} take {prefix[above]:,}): the weights of another cfg, or a file cut off "
                        f"inside layer {above - 1}")


def _check_upto(net, upto: Optional[int]) -> int:
    n = len(net.layers)
    if upto is None:
        return n
    if isinstance(upto, bool) or not isinstance(upto, (int, np.integer)) or upto < 0:
        raise WeightsError(f"upto must be a non-negative layer count, got {upto!r}")
    return min(int(upto), n)


def load_weights_bytes(net, data: bytes, upto: Optional[int] = None, name: str = "<bytes>",
                       partial: bool = False) -> WeightsReport:
    """Load ``.weights`` content into ``net`` (sets ``net.seen``, ``net.weights_version`` and
    ``net.weights_report``). ``partial``: a file of the first M whole layers loads those (else it is refused,
    naming the ``upto`` that fits). Returns the ``WeightsReport``."""
    n = _check_upto(net, upto)
    version, seen, hs = parse_header(data, name)
    body = len(data) - hs
    want = expected_floats(net, n)
    if body % 4:
        raise WeightsError(f"{name}: {body} bytes after the {hs}-byte header is not a whole number of float32 "
                           f"values (expected {4 * want} bytes for {n} layers)")
    got = body // 4
    prefix = _prefix_sizes(net)
    holds = [k for k, s in enumerate(prefix) if s == got and k > 0]
    if upto is None and got != want and holds and partial:
        n, want = holds[-1], got                  # every layer before the first that starts fresh
    # with upto=N, a file of the whole net or of its first M ≥ N whole layers serves: Darknet reads the first N
    longer = upto is not None and got > want and got in prefix[n:]
    if got != want and not longer:
        if got == 0:
            raise WeightsError(f"truncated file: {name}: only a header, no weights (expected {want:,} float32 values "
                               f"for {'the first ' + str(n) if upto is not None else 'all ' + str(n)} layers)")
        if not holds:
            raise _not_this_cfg(net, name, got, hs, len(data))
        msg = (f"{name}: expected {want:,} float32 values ({hs + 4 * want:,} bytes) for "
               f"{'the first ' + str(n) if upto is not None else 'all ' + str(n)} layers, got {got:,} "
               f"({len(data):,} bytes)")
        if got < want:
            hint = (f"; the file holds exactly the first {holds[0]} layers: load it with upto={holds[0]}"
                    if upto is None else f"; the file holds only the first {holds[0]} layers")
            raise WeightsError(f"truncated file: {msg}{hint}")
        raise WeightsError(f"oversized file: {msg}: {4 * (got - want):,} bytes too many (is it another cfg's "
                           f"weights?)")
    floats = np.frombuffer(data, dtype="<f4", count=want, offset=hs)
    transpose = is_transposed(version[0], version[1])
    pos = 0
    staged = []
    for i, layer, spec in _layout(net, n, True):
        for arr_name, count in spec:
            arr = floats[pos:pos + count]
            pos += count
            if not np.isfinite(arr).all():
                bad = int(count - np.count_nonzero(np.isfinite(arr)))
                raise WeightsError(f"{name}: layer {i} [{layer.kind}] {arr_name}: {bad} NaN or infinite value(s)")
            if transpose and isinstance(layer, ConnectedLayer) and arr_name == "weights":
                arr = arr.reshape(layer.in_features, layer.out_features).T
            staged.append((layer, arr_name, np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)))
    for layer, arr_name, arr in staged:  # assign only once everything checked out
        layer.set_darknet_array(arr_name, arr)
    object.__setattr__(net, "seen", int(seen))
    object.__setattr__(net, "weights_version", tuple(version))
    report = WeightsReport(name, n, len(net.layers), int(seen))
    object.__setattr__(net, "weights_report", report)
    return report


def load_weights(net, path: "os.PathLike[str] | str", upto: Optional[int] = None,
                 partial: bool = True) -> WeightsReport:
    """Load a ``.weights`` file into ``net``; sizes are checked against the file's size before reading. A file of
    the first M whole layers loads those (``partial``; the report's ``message`` says so). Returns the
    ``WeightsReport`` (also ``net.weights_report``)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from None
    n = _check_upto(net, upto)
    limit = 20 + 4 * max(expected_floats(net, n), expected_floats(net))
    if size > limit:
        raise WeightsError(f"oversized file: {path}: expected at most {limit:,} bytes for {_cfg_name(net)} "
                           f"({len(net.layers)} layers), got {size:,} bytes: not the weights of this cfg")
    with open(path, "rb") as f:
        data = f.read()
    return load_weights_bytes(net, data, upto, path, partial=partial)


def weights_to_bytes(net, upto: Optional[int] = None, version: Optional[Sequence[int]] = None) -> bytes:
    """The ``.weights`` content of ``net``'s first ``upto`` layers. The header version is ``version``,
    else the one the network was loaded with (so a round trip is byte-identical), else 0.2.0."""
    n = _check_upto(net, upto)
    major, minor, revision = (int(v) for v in (version or getattr(net, "weights_version", DEFAULT_VERSION)))
    seen = int(getattr(net, "seen", 0))
    head = struct.pack("<iii", major, minor, revision)
    if seen_is_64bit(major, minor):
        if not 0 <= seen < 2 ** 64:
            raise WeightsError(f"seen={seen} does not fit the file's uint64")
        head += struct.pack("<Q", seen)
    else:
        if not -2 ** 31 <= seen < 2 ** 31:
            raise WeightsError(f"seen={seen} does not fit the int32 of a version {major}.{minor} file")
        head += struct.pack("<i", seen)
    transpose = is_transposed(major, minor)
    parts = [head]
    for _, layer, spec in _layout(net, n, False):
        for arr_name, _ in spec:
            arr = layer.get_darknet_array(arr_name)
            if transpose and isinstance(layer, ConnectedLayer) and arr_name == "weights":
                arr = arr.reshape(layer.out_features, layer.in_features).T
            parts.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
    return b"".join(parts)


def save_weights(net, path: "os.PathLike[str] | str", upto: Optional[int] = None,
                 version: Optional[Sequence[int]] = None) -> None:
    """Write ``net``'s first ``upto`` layers (all by default) as a Darknet ``.weights`` file, atomically."""
    atomic_write_bytes(path, weights_to_bytes(net, upto, version))
