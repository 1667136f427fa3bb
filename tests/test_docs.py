"""The labels lead somewhere: every equation label cited in the package, the docs or the README is an anchor of
docs/equations.md; links between the docs resolve (file and anchor); nothing points outside the repository
(../shared holds only whole data sets, which the data loaders may look for)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EQUATIONS = ROOT / "docs" / "equations.md"
LABEL = re.compile(r"\b(FC-[1-5]|Conv-[1-5]|BN 2\.[1-6]|update-[1-4]|BP1|P[12])\b")
OUTSIDE = re.compile(r"EQUATIONS\.md|ARCHITECTURE\.md|DARKNET\.md|PERFORMANCE\.md|STYLE\.md|\.\./shared/(?!data\b)")


def _sources():
    files = list((ROOT / "deltaprop").rglob("*.py")) + list((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    files += list((ROOT / "examples").glob("*")) + list((ROOT / "bench").glob("*.py"))
    files += [p for p in (ROOT / "tests").rglob("*") if p.suffix in (".py", ".md")]
    return [p for p in files if p.is_file() and "__pycache__" not in p.parts]


def anchors(md: Path) -> set:
    """Explicit ``<a id>`` anchors and GitHub's heading anchors of a markdown file."""
    text = md.read_text()
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for h in re.findall(r"^#+ (.+)$", text, re.M):
        ids.add(re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-"))
    return ids


def label_anchor(label: str) -> str:
    return label.lower().replace(" ", "-").replace(".", "-")


def test_every_cited_label_is_an_anchor_of_equations_md():
    have = anchors(EQUATIONS)
    missing = {}
    for p in _sources():
        for label in set(LABEL.findall(p.read_text(errors="replace"))):
            if label_anchor(label) not in have:
                missing.setdefault(label, p.relative_to(ROOT).as_posix())
    assert not missing, f"labels with no anchor in docs/equations.md: {missing}"
    for a in ("fc-1", "conv-1", "bn-2-3", "update-4", "p2", "leaky", "yolo-box-delta", "darknet-bn"):
        assert a in have, a


def test_nothing_points_outside_the_repository():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in _sources()
           for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert not bad, f"references to files outside the repository: {bad}"


@pytest.mark.parametrize("md", sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"], ids=lambda p: p.name)
def test_markdown_links_resolve(md):
    for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        assert dest.exists(), f"{md.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{md.name}: link to {target}: no such anchor"
