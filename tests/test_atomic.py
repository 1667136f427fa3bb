"""deltaprop.atomic: the file appears whole or not at all."""
import os

import pytest

from deltaprop.atomic import atomic_write_bytes, atomic_write_text, atomic_writer


def test_write_replaces_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert os.listdir(p.parent) == ["f.bin"]
    atomic_write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"


def test_error_inside_block_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(p, "w") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_writer(tmp_path / "x", "a"):
            pass
