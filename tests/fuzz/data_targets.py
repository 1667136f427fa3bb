"""Fuzz targets of detection data (issue 30): label files, ``.data`` files with what they name, and image headers.

Each input is bytes generated from a ``random.Random`` alone, like the targets of ``targets.py`` (which lists
these in ``TARGETS``); ``run`` returns ``"ok"`` or lets the project's error escape, and checks a property of
what loads. Reading must never block: a run past ``WALL_SECONDS`` of wall time (a FIFO opened for reading, say)
raises ``Blocked``, a finding, since the campaign's cap counts CPU time only.
"""
from __future__ import annotations

import io as _io
import os
import random
import signal
import struct
import tempfile
import zlib
from contextlib import contextmanager
from typing import Iterator, List

import numpy as np

from .common import HOSTILE_TEXT, Scratch, _tmpdir, mutate_bytes

#: Wall-clock seconds one input may take before it counts as blocked.
WALL_SECONDS = 10.0
#: The pixel budget of the image target: 8 Mpx, so that pictures above ``images.REDUCE_ABOVE`` (4 Mpx) are
#: reduced as they are decoded (a 2800×2800 bomb), and those below it small (at most 1000×1000: an input stays
#: well under the campaign's 1 s).
IMAGE_BUDGET = 2 ** 23
CLASSES = 3


class Blocked(BaseException):
    """An input held the reader past ``WALL_SECONDS`` of wall time (a finding)."""


@contextmanager
def wall_clock(seconds: float = WALL_SECONDS) -> Iterator[None]:
    """Raise :class:`Blocked` in the main thread after ``seconds`` of wall time (nothing elsewhere)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def blocked(signum, frame):
        raise Blocked(f"blocked for {seconds} s of wall time")
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- label files ------------------------------------------------------------------------------------

LABEL_VALUES = ["0", "1", "2", "3", "-1", "+1", "1_0", "0.5", "1.0", "0", "1", "1e-50", "0.001", "0.0009",
                "1e308", "1e309", "nan", "inf", "-0", "0x1", "", "\u0661", "9" * 5000, "1" * 400, "\x00", "١"]


def generate_labels(rnd: random.Random) -> bytes:
    """A label file: mostly good lines; hostile fields, wrong field counts, long lines, odd line ends."""
    lines: List[str] = []
    for _ in range(rnd.choice([0, 1, 2, 3, 5, 20])):
        row = [str(rnd.randrange(CLASSES))] + [f"{rnd.uniform(0, 1):.4f}" for _ in range(2)] + \
              [f"{rnd.uniform(0.002, 1):.4f}" for _ in range(2)]
        for _ in range(rnd.choice([0, 0, 0, 1, 2])):
            row[rnd.randrange(5)] = rnd.choice(LABEL_VALUES + HOSTILE_TEXT)
        if rnd.random() < 0.05:
            row = row[:rnd.randrange(5)] if rnd.random() < 0.5 else row + ["0.5"] * rnd.randint(1, 3)
        lines.append(rnd.choice([" ", "  ", "\t"]).join(row))
    if rnd.random() < 0.1:
        lines.insert(rnd.randrange(len(lines) + 1), rnd.choice(["", "   ", "#", "0 0.5 0.5 0.2 0.2 # c"]))
    data = (rnd.choice(["\n", "\r\n", "\r"]).join(lines) + rnd.choice(["\n", ""])).encode("utf-8")
    if rnd.random() < 0.05:
        data = b"\xef\xbb\xbf" + data
    if rnd.random() < 0.1:
        data = mutate_bytes(rnd, data, rnd.randint(1, 3))
    return data


class LabelsTarget:
    """``check_label_file`` and ``read_labels`` on a label file: the rows kept are valid boxes (finite, class in
    range, centre in [0, 1], size in [0.001, 1]); rows and problems together account for every non-blank line;
    ``read_labels`` raises exactly when there is a problem."""
    name = "labels"

    def __init__(self) -> None:
        self.scratch = Scratch(".txt")

    def generate(self, rnd: random.Random) -> bytes:
        return generate_labels(rnd)

    def run(self, data: bytes) -> str:
        from deltaprop.data.labels import MIN_SIZE, check_label_file, read_labels
        path = self.scratch.write(data)
        with wall_clock():
            rows, problems = check_label_file(path, CLASSES)
        assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == 5
        assert np.isfinite(rows).all()
        if len(rows):
            assert ((rows[:, 0] >= 0) & (rows[:, 0] < CLASSES) & (rows[:, 0] == np.round(rows[:, 0]))).all()
            assert ((rows[:, 1:3] >= 0) & (rows[:, 1:3] <= 1)).all()
            assert ((rows[:, 3:5] >= np.float32(MIN_SIZE) * (1 - 1e-6)) & (rows[:, 3:5] <= 1)).all()
        assert all(str(p).startswith(path) and len(str(p)) < len(path) + 300 for p in problems), problems[:1]
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            assert len(problems) == 1 and problems[0].line == 0 and not len(rows)
        else:
            if not problems or problems[0].line:
                assert len(rows) + len(problems) == sum(1 for line in text.splitlines() if line.split())
        if problems:
            try:
                read_labels(path, CLASSES)
            except Exception as e:  # noqa: BLE001 - must be LabelError, checked below
                assert type(e).__name__ == "LabelError", type(e)
                raise
            raise AssertionError("read_labels accepted a file with problems")
        assert np.array_equal(read_labels(path, CLASSES), rows)
        return "ok"


# --- .data files and what they name ------------------------------------------------------------------

DATA_VALUES = ["list.txt", "./list.txt", "sub/../list.txt", "missing.txt", "fifo", "dir", "dir/", "/dev/zero",
               "/dev/null", "empty.txt", "names.names", "big.txt", "~", "", "backup", "backup/", "../outside",
               "/tmp", "list.txt\x00x", "a" * 300]


class DataFileTarget:
    """``read_data_file`` on a ``.data`` file in a folder holding a list, a names file, a FIFO, a directory and
    an empty file; then the lists it names are read (``read_image_list``) and its names (``read_names``).
    Never blocks (the FIFO is refused at once); a relative ``backup`` lies in the ``.data`` file's folder."""
    name = "datafile"

    def __init__(self) -> None:
        self.pid = None

    def _folder(self) -> str:
        if self.pid != os.getpid():             # a forked worker makes its own folder
            self.pid = os.getpid()
            self.root = tempfile.mkdtemp(prefix="deltaprop-fuzz-data-", dir=_tmpdir())
            os.mkdir(os.path.join(self.root, "dir"))
            os.mkdir(os.path.join(self.root, "sub"))
            os.mkfifo(os.path.join(self.root, "fifo"))
            with open(os.path.join(self.root, "list.txt"), "w") as f:
                f.write("images/a.jpg\n\n# c\nimages/a.jpg\n./images/b.png\n/abs/c.jpg\n")
            with open(os.path.join(self.root, "names.names"), "w") as f:
                f.write("a\nb\nc\n")
            open(os.path.join(self.root, "empty.txt"), "w").close()
            with open(os.path.join(self.root, "big.txt"), "wb") as f:
                f.truncate(2 ** 30 + 1)              # sparse: bigger than any list may be, costs no disk
        return self.root

    def generate(self, rnd: random.Random) -> bytes:
        lines = []
        for key in ("classes", "train", "valid", "names", "backup", "eval"):
            if rnd.random() < 0.8:
                value = (str(rnd.choice([1, 3, 80])) if key == "classes" else
                         "coco" if key == "eval" else rnd.choice(DATA_VALUES))
                if rnd.random() < 0.1:
                    value = rnd.choice(HOSTILE_TEXT + DATA_VALUES + ["9" * 5000, "-3", "0"])
                lines.append(f"{key}{rnd.choice(['=', ' = ', '  =', '= '])}{value}")
        for _ in range(rnd.choice([0, 0, 1, 2])):
            lines.insert(rnd.randrange(len(lines) + 1),
                         rnd.choice(["# comment", "; c", "", "novalue", "=x", "x=", "classes=2", "train=fifo"]))
        data = "\n".join(lines).encode("utf-8")
        if rnd.random() < 0.05:
            data = mutate_bytes(rnd, data, rnd.randint(1, 3))
        return data

    def run(self, data: bytes) -> str:
        from deltaprop.data.detection import read_data_file, read_image_list, read_names
        root = self._folder()
        path = os.path.join(root, "set.data")
        with open(path, "wb") as f:
            f.write(data)
        with wall_clock():
            cfg = read_data_file(path)
            assert isinstance(cfg.classes, int) and cfg.classes >= 1
            if cfg.backup is not None:
                value = cfg.options["backup"]
                if not os.path.isabs(os.path.expanduser(value)):
                    assert str(cfg.backup).startswith(os.path.realpath(root) + os.sep), (value, cfg.backup)
            for source in (cfg.train, cfg.valid):
                if source is not None:
                    listing = read_image_list(source)
                    assert listing.lines == len(listing) + listing.duplicates
                    assert len(set(map(os.path.normpath, listing.paths))) == len(listing)
            if cfg.names is not None:
                names = read_names(cfg.names)
                assert all(n.strip() == n and n for n in names)
        return "ok"


# --- image headers --------------------------------------------------------------------------------

def _png(arr: np.ndarray, bitdepth: int, colortype: int, width: int = None, height: int = None,
         idat: bytes = None) -> bytes:
    """A PNG written by hand (16-bit colour, sizes that disagree with the data, any IDAT)."""
    h, w = arr.shape[:2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    if idat is None:
        raw = b"".join(b"\0" + arr[y].astype(">u2" if bitdepth == 16 else "u1").tobytes() for y in range(h))
        idat = zlib.compress(raw)
    header = struct.pack(">IIBBBBB", w if width is None else width, h if height is None else height, bitdepth,
                         colortype, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bomb(width: int, height: int, channels: int = 1) -> bytes:
    """A PNG declaring ``width × height`` whose IDAT is zeros: a few KB stand for 50000×50000 (the data stops
    after 12 MiB of rows: a reader that decodes past its budget meets a truncated file, one that does not never
    notices)."""
    raw = min((width * channels + 1) * height, 12 * 2 ** 20)
    idat = _zeros_deflated(raw)
    return _png(np.zeros((1, 1), np.uint8), 8, {1: 0, 3: 2}[channels], width, height, idat)


def png_blank(width: int, height: int, channels: int = 1, value: int = 0) -> bytes:
    """A whole 8-bit PNG of one grey (or RGB) value, compressed row by row (a 9000×9000 one is about 80 KB and
    never 81 MB in memory here)."""
    c = zlib.compressobj(9)
    row = b"\0" + bytes([value]) * (width * channels)
    body = [c.compress(row) for _ in range(height)]
    body.append(c.flush())
    return _png(np.zeros((1, 1), np.uint8), 8, {1: 0, 3: 2}[channels], width, height, b"".join(body))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF) declares ``width × height``."""
    from PIL import Image
    data = bytearray(_pil_bytes(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG"))
    i = _sof_offset(bytes(data))
    data[i:i + 4] = struct.pack(">HH", height, width)
    return bytes(data)


_ZEROS = {}


def _zeros_deflated(n: int) -> bytes:
    """zlib data of ``n`` zero bytes (cached by size: generating an input must stay cheap)."""
    if n not in _ZEROS:
        if len(_ZEROS) > 64:
            _ZEROS.clear()
        _ZEROS[n] = zlib.compress(bytes(n), 9)
    return _ZEROS[n]


def _pil_bytes(im, fmt: str, **kw) -> bytes:
    buf = _io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _sof_offset(data: bytes) -> int:
    """The offset of a JPEG's SOF0/SOF2 height field (-1 when none)."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = data.find(marker)
        if i >= 0:
            return i + 5
    return -1


class ImageTarget:
    """``load_image`` (3 channels, fitted to a 32×32 input, pixel budget 8 Mpx) on a picture: small valid PNGs
    (8- and 16-bit grey, RGB, RGBA, palette, 16-bit RGB written by hand), JPEG (grey, RGB, CMYK), BMP and GIF,
    then hostile sizes in their headers (0, huge, beyond 2³¹), truncation, damage and PNG bombs. What loads is
    float32 (3, H, W) in [0, 1], and ``check_image`` (``data check``) accepts exactly what loads."""
    name = "image"

    def __init__(self) -> None:
        self.scratch = Scratch(".img")

    def _valid(self, rnd: random.Random) -> bytes:
        from PIL import Image
        w, h = rnd.randint(1, 40), rnd.randint(1, 40)
        g = np.random.default_rng(rnd.randrange(2 ** 32))
        kind = rnd.randrange(11)
        if kind == 0:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w), np.uint8)), "PNG")
        if kind == 1:
            return _png(g.integers(0, 65536, (h, w)).astype(np.uint16), 16, 0)
        if kind == 2:
            return _png(g.integers(0, 65536, (h, w, 3)).astype(np.uint16), 16, 2)
        if kind == 3:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w, 4), np.uint8), "RGBA"), "PNG")
        if kind == 4:
            im = Image.fromarray(g.integers(0, 256, (h, w, 3), np.uint8)).convert("P")
            return _pil_bytes(im, "PNG", transparency=rnd.randrange(4))
        if kind == 5:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w, 3), np.uint8)), "JPEG", quality=80)
        if kind == 6:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w), np.uint8)), "JPEG")
        if kind == 7:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w, 4), np.uint8), "CMYK"), "JPEG")
        if kind == 8:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w, 3), np.uint8)), "BMP")
        if kind == 9:
            return _pil_bytes(Image.fromarray(g.integers(0, 256, (h, w, 3), np.uint8)).convert("P"), "GIF")
        return _pil_bytes(Image.fromarray(g.integers(0, 2, (h, w), np.uint8) * 255).convert("1"), "PNG")

    def generate(self, rnd: random.Random) -> bytes:
        op = rnd.randrange(10)
        if op == 0:                             # a bomb: small file, large declared size
            side = rnd.choice([0, 1, 1000, 2049, 2800, 2900, 9000, 50000, 2 ** 31 - 1])
            return png_bomb(side, rnd.choice([1, side, 2 ** 31 - 1]) or 1, rnd.choice([1, 3]))
        data = bytearray(self._valid(rnd))
        if op == 1 and data[:4] == b"\x89PNG":  # hostile IHDR sizes, CRC fixed so only the size is wrong
            data[16:24] = struct.pack(">II", *(rnd.choice([0, 1, 7, 65535, 50000, 2 ** 31 - 1, 2 ** 32 - 1])
                                              for _ in range(2)))
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
        elif op == 2 and data[:2] == b"\xff\xd8":
            i = _sof_offset(bytes(data))
            if i > 0:
                data[i:i + 4] = struct.pack(">HH", *(rnd.choice([0, 1, 9000, 50000, 65535]) for _ in range(2)))
        elif op == 3 and data[:2] == b"BM":
            data[18:26] = struct.pack("<ii", rnd.choice([0, -1, 50000, 2 ** 31 - 1]),
                                      rnd.choice([0, -50000, 50000, -2 ** 31]))
        elif op == 4:
            del data[rnd.randrange(len(data)):]
        elif op in (5, 6):
            data = bytearray(mutate_bytes(rnd, bytes(data), rnd.randint(1, 4)))
        return bytes(data)

    def run(self, data: bytes) -> str:
        from deltaprop.data.images import check_image, load_image
        path = self.scratch.write(data)
        with wall_clock():
            try:
                x = load_image(path, 3, fit=(32, 32), max_pixels=IMAGE_BUDGET)
            except Exception as e:  # noqa: BLE001 - the project's error; check_image must refuse it too
                try:
                    check_image(path, max_pixels=IMAGE_BUDGET)
                except Exception as e2:  # noqa: BLE001
                    assert type(e2) is type(e), (e, e2)
                    raise
                raise AssertionError(f"check_image accepts what load_image refuses: {e}")
            check_image(path, max_pixels=IMAGE_BUDGET)
        assert x.dtype == np.float32 and x.ndim == 3 and x.shape[0] == 3 and min(x.shape[1:]) >= 1
        assert x.shape[1] * x.shape[2] <= IMAGE_BUDGET
        assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
        return "ok"


DATA_TARGETS = {"labels": LabelsTarget, "datafile": DataFileTarget, "image": ImageTarget}
