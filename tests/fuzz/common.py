"""What every fuzz target uses (``targets.py``, ``data_targets.py``): hostile text values, the scratch file
rewritten for each input, byte-level mutations."""
from __future__ import annotations

import os
import random
import tempfile

HOSTILE_TEXT = ["0", "1", "-1", "2", "3", "255", "100000", "2147483647", "2147483648", "-2147483648",
                "99999999999", "50000000", "0.5", ".1", "1e3", "1e309", "nan", "inf", "-inf", "", "=", "[x]",
                "1,2,", ",", "-1,-3", "0,1,2", "1,1,1,1,1,1", "leaky", "linear", "logistic", "a,b", "0x10",
                "\u00e9", "1" * 40]


def _tmpdir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class Scratch:
    """One scratch file per process (in tmpfs when there is one), rewritten for every input."""

    def __init__(self, suffix: str) -> None:
        self.path = os.path.join(_tmpdir(), f"deltaprop-fuzz-{os.getpid()}{suffix}")
        self.pid = os.getpid()

    def write(self, data: bytes) -> str:
        if self.pid != os.getpid():  # a forked worker gets its own file
            self.__init__(os.path.splitext(self.path)[1])
        with open(self.path, "wb") as f:
            f.write(data)
        return self.path


def mutate_bytes(rnd: random.Random, data: bytes, rounds: int = 1) -> bytes:
    """A few byte-level edits: flip, overwrite, insert, delete, truncate, duplicate a slice."""
    b = bytearray(data)
    for _ in range(rounds):
        op = rnd.randrange(6)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            b[i % len(b)] = rnd.choice([0, 0xFF, 0x7F, 0x80, rnd.randrange(256)])
        elif op == 2:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
        elif op == 3:
            del b[i:i + rnd.randrange(1, 17)]
        elif op == 4:
            del b[i:]
        else:
            j = rnd.randrange(len(b) + 1)
            b[i:i] = b[min(i, j):max(i, j)][:256]
    return bytes(b)
