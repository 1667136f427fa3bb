"""One table of settings: every ``DELTAPROP_*`` name written anywhere in the package, the tests, the benchmarks
and the docs is a row of ``runtime/settings.py``'s TABLE, and docs/runtime.md shows that table as it is."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from deltaprop.errors import ConfigError
from deltaprop.runtime import settings

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"DELTAPROP_[A-Z][A-Z_]*[A-Z]")


def _names_in(paths) -> dict:
    found: dict = {}
    for p in paths:
        for name in NAME.findall(p.read_text(errors="replace")):
            found.setdefault(name, p.relative_to(ROOT).as_posix())
    return found


@pytest.mark.parametrize("where,pattern", [("deltaprop", "*.py"), ("tests", "*.py"), ("bench", "*.py"),
                                           ("docs", "*.md"), (".", "README.md"), (".ci", "*")])
def test_every_name_written_is_in_the_table(where, pattern):
    paths = [p for p in sorted((ROOT / where).rglob(pattern)) if p.is_file()]
    assert paths, where
    unknown = {n: f for n, f in _names_in(paths).items() if n not in settings.SETTINGS}
    assert unknown == {}, "add these to deltaprop/runtime/settings.py TABLE (and docs/runtime.md)"


def test_the_package_reads_every_engine_setting():
    """No row for a variable nothing reads: each engine setting's name appears in the package outside the table,
    each test-only one in the tests."""
    package = _names_in(p for p in (ROOT / "deltaprop").rglob("*.py") if p.name != "settings.py")
    tests = _names_in((ROOT / "tests").rglob("*.py"))
    for s in settings.TABLE:
        assert s.name in (tests if s.test_only else package), s.name


def test_docs_show_the_table_as_it_is():
    doc = (ROOT / "docs" / "runtime.md").read_text()
    assert settings.markdown_table() in doc, "regenerate docs/runtime.md's table: settings.markdown_table()"


def test_rows_are_complete_and_defaults_valid():
    for s in settings.TABLE:
        assert s.kind in settings.KINDS and s.does and s.read, s.name
        assert (s.kind == "choice") == bool(s.choices), s.name
        if s.default is None:
            assert s.shown or s.kind == "path", f"{s.name}: an open default must say what unset means"
        elif s.kind == "choice":
            assert s.default in s.choices, s.name
        elif s.kind == "int":
            assert isinstance(s.default, int) and s.default >= s.minimum, s.name
        elif s.kind == "flag":
            assert isinstance(s.default, bool), s.name
    names = [s.name for s in settings.TABLE]
    assert len(names) == len(set(names))
    engine = [s.name for s in settings.TABLE if not s.test_only]
    assert engine == sorted(engine) and all(s.test_only for s in settings.TABLE[len(engine):])


@pytest.mark.parametrize("row", [s for s in settings.TABLE if s.kind != "path"], ids=lambda s: s.name)
def test_each_bad_value_names_the_variable_and_what_it_takes(row, monkeypatch):
    bad = {"int": "lots", "flag": "perhaps", "choice": "nothing-like-it"}[row.kind]
    monkeypatch.setenv(row.name, bad)
    with pytest.raises(ConfigError) as e:
        settings.get(row.name)
    assert str(e.value).startswith(f"{row.name}={bad!r}: expected ")
    if row.kind == "choice":
        assert str(e.value).endswith(", ".join(row.choices))
    monkeypatch.setenv(row.name, "")
    assert settings.get(row.name) == row.default
