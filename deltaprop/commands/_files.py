"""Files of the command line: what kind a file is (by its first bytes, not its name), run directories that
never clobber an earlier run, and the lock file that keeps two live runs out of one directory."""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..errors import CheckpointError, ConfigError, WeightsError

PathLike = Union[str, "os.PathLike[str]"]


def file_kind(path: PathLike) -> str:
    """"npz" (a zip archive), "weights" (a Darknet header: three small int32 version numbers), "cfg"
    (text starting with a [section] or a comment), "png", "jpeg", "missing", "directory" or "unknown"."""
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        return "directory"
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError:
        return "unknown"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    text = head.lstrip()
    if text[:1] in (b"[", b"#", b";"):
        return "cfg"
    if len(head) >= 20:
        major, minor, revision = struct.unpack("<3i", head[:12])
        if 0 <= major <= 10 and 0 <= minor <= 100 and 0 <= revision <= 10_000:
            return "weights"
    return "unknown"


_KIND_WORDS = {"npz": "a deltaprop .npz file", "weights": "a Darknet .weights file", "cfg": "a Darknet .cfg file",
               "png": "a PNG image", "jpeg": "a JPEG image", "directory": "a directory"}


def _require_kind(path: PathLike, want: str, wanted: str, error: type, prefix: str, hints: dict) -> None:
    """``error`` naming what ``path`` is (prefixed with ``prefix``) when its first bytes are not of kind
    ``want`` (``wanted``: its name in the message); ``hints`` adds advice for a kind (how to convert it).
    The one home of both file-kind checks."""
    kind = file_kind(path)
    if kind == want or kind == "unknown":
        return   # an unrecognised file is left to the reader, whose message names what is wrong in it
    if kind == "missing":
        raise error(f"{prefix}: no such file")
    raise error(f"{prefix}: this is {_KIND_WORDS[kind]}, not {wanted}{hints.get(kind, '')}")


def require_npz(path: PathLike) -> None:
    """CheckpointError naming what ``path`` is when it is not a deltaprop .npz model or checkpoint."""
    _require_kind(path, "npz", "a deltaprop .npz model", CheckpointError, str(path),
                  {"weights": f"; convert it first: deltaprop convert --cfg CFG {path} MODEL.npz"})


def require_weights(path: PathLike, option: str = "--weights") -> None:
    """WeightsError naming what ``path`` is when it is not a Darknet .weights file."""
    _require_kind(path, "weights", "Darknet .weights", WeightsError, f"{option} {path}",
                  {"npz": f"; write .weights from it with: deltaprop convert {path} OUT.weights"})


def check_folder(path: Optional[PathLike], option: str) -> None:
    """ConfigError naming ``option`` when ``path`` exists and is not a directory (an MNIST folder given as a
    file would otherwise become the target of a download)."""
    if path is not None and Path(path).expanduser().exists() and not Path(path).expanduser().is_dir():
        raise ConfigError(f"{option} {path}: this is {_KIND_WORDS.get(file_kind(path), 'a file')}, not a folder "
                          f"(the folder holding the MNIST files)")


def check_images(paths) -> None:
    """DataError naming the first of ``paths`` that is not a picture deltaprop can read (missing, a directory or
    FIFO, beyond the pixel budget, not an image, damaged: ``data.images.check_image`` opens and decodes it):
    called before a command writes anything, so a bad file late in the list leaves no output."""
    from ..data.images import check_image
    for path in paths:
        check_image(path)


def prediction_paths(images: Sequence[PathLike], out: Optional[PathLike], suffix: str = "_pred.png") -> List[Path]:
    """Where the drawn picture of each of ``images`` goes: ``<stem><suffix>`` in ``out`` (or beside the
    image). Two different images whose names would meet in one folder (``a/x.jpg`` and ``b/x.png`` with one
    ``--out``) get their folders' names in front (``a_x_pred.png``, ``b_x_pred.png``), numbered if that is not
    enough; the same image listed twice keeps one name. Nothing is overwritten by another image's boxes."""
    keys = [os.path.normpath(os.path.abspath(os.fspath(p))) for p in images]
    folders = [Path(out) if out is not None else Path(k).parent for k in keys]
    plain = [f / (Path(k).stem + suffix) for f, k in zip(folders, keys)]
    owners: Dict[Path, set] = {}
    for target, key in zip(plain, keys):
        owners.setdefault(target, set()).add(key)
    chosen: Dict[str, Path] = {}
    taken = set(t for t, ks in owners.items() if len(ks) == 1)
    result = []
    for target, key, folder in zip(plain, keys, folders):
        if key in chosen:
            result.append(chosen[key])
            continue
        if len(owners[target]) > 1:
            parent = Path(key).parent.name or "root"
            cand = folder / f"{parent}_{Path(key).stem}{suffix}"
            k = 2
            while cand in taken:
                cand = folder / f"{parent}_{Path(key).stem}-{k}{suffix}"
                k += 1
            target = cand
        taken.add(target)
        chosen[key] = target
        result.append(target)
    return result


__all__ = ["file_kind", "check_folder", "check_images", "prediction_paths", "require_npz", "require_weights"]
