"""The files a data set names (``.data``, ``.names``, image lists, label files, images): regular files only, and
text read within a size budget.

A FIFO blocks a reader forever, ``/dev/zero`` never ends, a directory is not a file: each is refused at once with
the project's error naming the file and what it is (:func:`open_regular` opens with ``O_NONBLOCK`` and checks the
opened file itself, so nothing can be swapped in between a check and the read). Text is read only up to its
budget (:data:`DATA_FILE_BYTES`, :data:`NAMES_BYTES`, :data:`LABEL_BYTES`, :data:`LIST_BYTES`): a larger file is
refused before it is read. :func:`progress` is the bar of the loops over the images of a list (past
:data:`PROGRESS_FROM` images).
"""
from __future__ import annotations

import os
import stat
import sys
from typing import IO, Optional, Tuple, Union

from ..errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

#: A ``.data`` file: a few ``key = value`` lines.
DATA_FILE_BYTES = 1 * 2 ** 20
#: A ``.names`` file (ImageNet's 21,843 names take 0.5 MB).
NAMES_BYTES = 16 * 2 ** 20
#: A label file (16 MiB hold about 400,000 boxes).
LABEL_BYTES = 16 * 2 ** 20
#: An image list (1 GiB hold about 15 million lines of 70 characters).
LIST_BYTES = 2 ** 30
#: Loops over more images than this show a progress bar (on a terminal).
PROGRESS_FROM = 5000

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a directory", "a FIFO (named pipe)", ...)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def open_problem(path: PathLike, what: str) -> Tuple[Optional[IO[bytes]], Optional[str]]:
    """``(binary file, None)`` for a regular file, else ``(None, reason)``: ``no such <what>``, ``<what> is a
    directory, not a file``, ``cannot read <what> (<why>)``. Never blocks (a FIFO is opened non-blocking and
    refused)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, f"no such {what}"
    except IsADirectoryError:
        return None, f"{what} is a directory, not a file"
    except OSError as e:
        return None, f"cannot read {what} ({e.strerror or e})"
    except ValueError:                          # a NUL byte in the path
        return None, f"cannot read {what} (a NUL byte in its name)"
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        os.close(fd)
        return None, f"cannot read {what} ({e.strerror or e})"
    if not stat.S_ISREG(mode):
        os.close(fd)
        return None, f"{what} is {kind_of(mode)}, not a file"
    return os.fdopen(fd, "rb"), None


def file_error(path: PathLike, reason: str) -> DataError:
    """The DataError ``path: reason``, with ``path`` and ``reason`` kept as attributes (``data check`` prints
    each problem as ``file: reason``)."""
    e = DataError(f"{os.fspath(path)}: {reason}")
    e.path, e.reason = os.fspath(path), reason
    return e


def open_regular(path: PathLike, what: str) -> IO[bytes]:
    """``path`` opened for binary reading; a DataError ``path: reason`` when it is missing or not a regular
    file (:func:`open_problem`)."""
    f, reason = open_problem(path, what)
    if f is None:
        raise file_error(path, reason)
    return f


def text_problem(path: PathLike, what: str, limit: int) -> Tuple[Optional[str], Optional[str]]:
    """``(text, None)``: the UTF-8 text of a regular file of at most ``limit`` bytes (a byte-order mark
    dropped); else ``(None, reason)``."""
    f, reason = open_problem(path, what)
    if f is None:
        return None, reason
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                return None, f"{what} of {size:,} bytes, more than the {limit:,} allowed"
            data = f.read(size + 1)              # read(n) allocates n bytes: the size, not the budget
            while len(data) > size and len(data) <= limit:   # it grew while being read: on, up to the budget
                more = f.read(min(2 ** 20, limit + 1 - len(data)))
                if not more:
                    break
                data += more
        except OSError as e:
            return None, f"cannot read {what} ({e.strerror or e})"
    if len(data) > limit:
        return None, f"{what} of more than {limit:,} bytes"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        return None, f"cannot read {what} (not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start})"


def read_text(path: PathLike, what: str, limit: int) -> str:
    """The text of ``path`` (:func:`text_problem`); a DataError ``path: reason`` when it cannot be had."""
    text, reason = text_problem(path, what, limit)
    if text is None:
        raise file_error(path, reason)
    return text


def progress(total: int, desc: str, enabled: Optional[bool] = None, unit: str = "image"):
    """A tqdm bar on stderr for a loop over ``total`` items, or None: ``enabled`` None shows it when ``total``
    is above :data:`PROGRESS_FROM` and stderr is a terminal."""
    if enabled is None:
        enabled = total > PROGRESS_FROM and sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)


def shorten(text: str, limit: int = 40) -> str:
    """``text`` as a message shows it: ``repr``, cut to about ``limit`` characters with its length said
    (a 5000-digit class id is not echoed whole)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit - 8]!r}... ({len(text):,} characters)"


__all__ = ["file_error", "open_regular", "open_problem", "read_text", "text_problem", "progress", "kind_of", "shorten",
           "DATA_FILE_BYTES", "NAMES_BYTES", "LABEL_BYTES", "LIST_BYTES", "PROGRESS_FROM"]
