"""MNIST: find it, download it once (MD5-checked), load it as uint8 images and labels.

Lookup order for the four standard files (``train-images-idx3-ubyte[.gz]`` ...):
1. an explicit ``root`` (files in ``root`` or ``root/mnist``; downloaded there if missing),
2. ``$DELTAPROP_DATA`` (same layout),
3. ``../shared/data`` beside the checkout (relative to the package's repository root, then to the cwd),
4. the user cache directory (``$XDG_CACHE_HOME/deltaprop`` or ``~/.cache/deltaprop``),
5. a download into that cache directory from the first mirror that answers with the right MD5 sums.
"""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.request import urlopen  # module attribute: tests replace it, there is no internet there

import numpy as np

from ..runtime.settings import env_path, user_cache_dir
from ..atomic import atomic_write_bytes
from ..errors import DataError
from .idx import MAGIC_IMAGES, MAGIC_LABELS, parse_idx, read_idx

FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 of the UNCOMPRESSED files (the canonical MNIST sums).
MD5: Dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SIZES = {"train": 60000, "test": 10000}
MIRRORS: List[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
ENV_VAR = "DELTAPROP_DATA"
# the repository root: deltaprop/data/mnist.py -> parents[2]
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deltaprop`` or ``~/.cache/deltaprop``."""
    return user_cache_dir()


def _file_in(directory: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _complete(directory: Path) -> Optional[Path]:
    """``directory`` or ``directory/mnist`` if it holds all four files, else None."""
    for d in (directory, directory / "mnist"):
        if all(_file_in(d, stem) for pair in FILES.values() for stem in pair):
            return d
    return None


def candidate_dirs(root=None) -> List[Path]:
    """The directories searched, in order (see the module docstring)."""
    dirs: List[Path] = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    from_env = env_path(ENV_VAR)
    if from_env is not None:
        dirs.append(from_env)
    dirs.append(REPO_ROOT.parent / "shared" / "data")
    dirs.append(Path.cwd().parent / "shared" / "data")
    dirs.append(cache_dir())
    out: List[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_mnist(root=None, download: bool = True) -> Path:
    """The directory holding the four MNIST files; downloads them if no candidate has them.

    An explicit ``root`` is authoritative: if it lacks the files they are downloaded into it."""
    if root is not None:
        found = _complete(Path(root).expanduser())
        if found:
            return found
        if not download:
            raise DataError(f"MNIST not found in {root} (expected {', '.join(FILES['train'] + FILES['test'])}, "
                            f"optionally .gz)")
        return download_mnist(Path(root).expanduser())
    for d in candidate_dirs():
        found = _complete(d)
        if found:
            return found
    if not download:
        raise DataError("MNIST not found in: " + ", ".join(str(d) for d in candidate_dirs()))
    return download_mnist(cache_dir() / "mnist")


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _fetch(url: str, timeout: float) -> bytes:
    with urlopen(url, timeout=timeout) as r:
        return r.read()


def download_mnist(dest=None, mirrors: Sequence[str] = MIRRORS, timeout: float = 60.0,
                   verbose: bool = True) -> Path:
    """Download the four files into ``dest`` (default: the cache directory) as ``.gz``.

    Each file is decompressed and its MD5 checked against the canonical sum before it is written
    (atomically); a mirror that fails or answers with wrong bytes is skipped for the next one.
    Files already present with the right sum are kept."""
    dest = Path(dest) if dest is not None else cache_dir() / "mnist"
    dest.mkdir(parents=True, exist_ok=True)
    for stem, want in MD5.items():
        have = _file_in(dest, stem)
        if have is not None:
            try:
                raw = have.read_bytes()
                if md5_of(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw) == want:
                    continue
            except (OSError, EOFError):
                pass
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + stem + ".gz"
            try:
                if verbose:
                    print(f"downloading {url}", flush=True)
                blob = _fetch(url, timeout)
                raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
            except Exception as e:  # network errors, bad gzip: try the next mirror
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            got = md5_of(raw)
            if got != want:
                errors.append(f"{url}: MD5 of the uncompressed file is {got}, expected {want}")
                continue
            target = dest / (stem + ".gz")
            atomic_write_bytes(target, blob if blob[:2] == b"\x1f\x8b" else gzip.compress(raw, mtime=0))
            break
        else:
            raise DataError(f"could not download {stem}.gz into {dest}:\n  " + "\n  ".join(errors) +
                            f"\nPut the four MNIST files in {dest} (or set ${ENV_VAR}) and retry.")
    return dest


def verify_mnist(directory) -> Dict[str, bool]:
    """MD5 check of the uncompressed files in ``directory``: {file stem: ok}."""
    d = Path(directory)
    out = {}
    for stem, want in MD5.items():
        p = _file_in(d, stem)
        if p is None:
            out[stem] = False
            continue
        raw = p.read_bytes()
        out[stem] = md5_of(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw) == want
    return out


def load_mnist(root=None, split: str = "train", download: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train": 60,000 or "test": 10,000) as (images uint8 (N, 28, 28), labels uint8 (N,))."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = find_mnist(root, download=download)
    img_stem, lab_stem = FILES[split]
    img_path, lab_path = _file_in(d, img_stem), _file_in(d, lab_stem)
    images = read_idx(img_path, expect_magic=MAGIC_IMAGES)
    labels = read_idx(lab_path, expect_magic=MAGIC_LABELS)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{lab_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{lab_path}: label {int(labels.max())} out of range 0..9")
    return images, labels


__all__ = ["FILES", "MD5", "MIRRORS", "cache_dir", "candidate_dirs", "find_mnist", "download_mnist",
           "verify_mnist", "load_mnist", "parse_idx"]
