"""The package is a stack (docs/architecture.md#layers): no module imports a package beside or above its own, at
the top of a file or inside a function; no import cycle between modules; ``functional/`` (the textbook) imports
nothing about speed. ``tests/import_layers.py`` reads the source (imports inside functions included)."""
from __future__ import annotations

import import_layers as L


def test_no_module_imports_a_package_beside_or_above_its_own():
    assert L.order_violations() == []


def test_no_import_cycle():
    assert L.cycles() == []


def test_functional_imports_nothing_about_speed():
    assert L.functional_purity() == []


def test_every_package_has_its_place_in_the_docs():
    """The table of docs/architecture.md names every package of LAYERS at its rank."""
    text = (L.ROOT.parent / "docs" / "architecture.md").read_text()
    for rank, names in enumerate(L.LAYERS):
        row = next((line for line in text.splitlines() if line.startswith(f"| {rank} |")), None)
        assert row is not None, f"docs/architecture.md has no row for rank {rank}"
        for name in names:
            assert f"`{name}" in row, f"rank {rank}: {name} is not in the docs' row {row!r}"


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    """The check can fail: a function-level import of a higher package, and a cycle, in a copy of two modules."""
    pkg = tmp_path / "deltaprop"
    (pkg / "functional").mkdir(parents=True)
    (pkg / "detect").mkdir()
    for d in (pkg, pkg / "functional", pkg / "detect"):
        (d / "__init__.py").write_text("")
    (pkg / "functional" / "boxes.py").write_text("def f():\n    from ..detect import draw\n    import numba\n")
    (pkg / "detect" / "draw.py").write_text("from ..functional import boxes\n")
    monkeypatch.setattr(L, "ROOT", pkg)
    assert any("deltaprop.functional.boxes (rank 4) imports deltaprop.detect.draw" in v for v in L.order_violations())
    assert ["deltaprop.detect.draw", "deltaprop.functional.boxes"] in L.cycles()
    assert any("imports numba" in v for v in L.functional_purity())
