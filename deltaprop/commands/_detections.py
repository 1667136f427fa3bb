"""The pictures a command line names for ``detector test``: image files, folders, list files and standard input
(``-``, or no picture with standard input not a terminal: one path a line, as Darknet's ``detector test`` reads
them after ``Enter Image Path:``). The pictures then go through ``deltaprop.detect.predict``."""
from __future__ import annotations

import os
from typing import IO, List, Optional, Sequence

from ..errors import DataError

#: Files read as lists of pictures (one path a line) rather than as pictures.
LIST_SUFFIXES = (".txt", ".list")
#: What a list read from standard input may hold (as a list file: data.files.LIST_BYTES).
STDIN_BYTES = 2 ** 30


def read_path_lines(stream: IO[str], name: str = "standard input") -> List[str]:
    """The picture paths of ``stream``, one a line (blank and ``#`` lines skipped, spaces around a path dropped),
    as Darknet's ``detector test`` reads them after ``Enter Image Path:``."""
    try:
        text = stream.read(STDIN_BYTES + 1)
    except (OSError, ValueError) as e:
        raise DataError(f"{name}: cannot read the picture paths ({e})") from None
    if len(text) > STDIN_BYTES:
        raise DataError(f"{name}: more than {STDIN_BYTES:,} characters of picture paths")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]


def picture_paths(items: Sequence[str], stdin: Optional[IO[str]] = None) -> List[str]:
    """The pictures that ``items`` name, in order: an image file as it is; a folder: its pictures (sorted);
    a list file (``.txt``, ``.list``): its lines (relative paths beside the list, a path listed twice kept once:
    ``data.detection.read_image_list``); ``-``: the lines of ``stdin``. A folder or list without pictures is a
    DataError naming it."""
    from ..data.detection import read_image_list
    out: List[str] = []
    for item in items:
        if item == "-":
            if stdin is None:
                raise DataError("-: no standard input to read picture paths from")
            found = read_path_lines(stdin)
            if not found:
                raise DataError("standard input: no picture paths (one a line)")
            out += found
        elif os.path.isdir(item) or item.lower().endswith(LIST_SUFFIXES):
            found = read_image_list(item).paths
            if not found:
                raise DataError(f"{item}: no pictures in this {'folder' if os.path.isdir(item) else 'list'}")
            out += found
        else:
            out.append(item)
    return out


__all__ = ["picture_paths", "read_path_lines", "LIST_SUFFIXES"]
