"""One home per equation (issue 18): docs/architecture.md names, for each equation of docs/equations.md, the one
function that computes it. Each name exists, each link is an anchor of equations.md, and each home's docstring
cites its label (or its section of equations.md), so a grep for the label finds the kernel."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
LINK = re.compile(r"\[(?P<text>[^\]]+)\]\(equations\.md#(?P<anchor>[a-z0-9-]+)\)")
NAME = re.compile(r"`((?:functional|optim|darknet|gradcheck)[A-Za-z0-9_.]*)`")


def _rows():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split('<a id="homes"></a>', 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and LINK.search(cells[0]):
            rows.append((LINK.findall(cells[0]), NAME.findall(cells[1]), NAME.findall(cells[2])))
    return rows


def _sections() -> dict:
    """anchor -> its section number in equations.md (the "§N" a docstring may cite)."""
    out, number = {}, None
    for line in (DOCS / "equations.md").read_text(encoding="utf-8").splitlines():
        head = re.match(r"^## (\d+)\.", line)
        if head:
            number = head.group(1)
        for anchor in re.findall(r'<a id="([a-z0-9-]+)"></a>', line):
            out[anchor] = number
    return out


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("deltaprop." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


ROWS = _rows()


def test_the_table_is_there_and_covers_the_labelled_equations():
    anchors = {a for links, _, _ in ROWS for _, a in links}
    assert len(ROWS) >= 30
    for label in ("fc-1", "conv-1", "p2", "bn-2-1", "bn-2-5", "update-1", "update-4", "softmax-ce", "darknet-bn"):
        assert label in anchors, f"docs/architecture.md#homes has no row for {label}"


@pytest.mark.parametrize("links,homes,mirrors", ROWS, ids=[r[0][0][1] for r in ROWS])
def test_each_home_exists_and_cites_its_equation(links, homes, mirrors):
    sections = _sections()
    assert homes, f"no home named for {links}"
    for text, anchor in links:
        assert anchor in sections, f"equations.md has no anchor {anchor!r}"
    for dotted in homes + mirrors:
        _resolve(dotted)
    cites = {t.strip() for text, _ in links for t in text.split(",")} | {f"§{sections[a]}" for _, a in links}
    for dotted in homes:
        obj = _resolve(dotted)
        if isinstance(obj, dict):           # a table (Darknet's activations): its module's docstring cites it
            doc = importlib.import_module("deltaprop." + dotted.rsplit(".", 1)[0]).__doc__ or ""
        else:
            doc = obj.__doc__ or ""
        assert any(c in doc for c in cites) or "equations.md" in doc, \
            f"{dotted}'s docstring cites none of {sorted(cites)}"


# The README's list of the kernels with a naive loop twin, and the twins (forward or the whole loss, and backward).
TWINS = {
    "dense": ("dense.linear_forward_naive", "dense.linear_backward_naive"),
    "conv": ("conv.conv2d_forward_naive", "conv.conv2d_backward_naive"),
    "max/avg/Lp/adaptive pooling": ("pool_naive.max_pool2d_forward_naive", "pool_naive.avg_pool2d_forward_naive",
                                    "pool_naive.lp_pool2d_forward_naive",
                                    "pool_naive.adaptive_avg_pool2d_forward_naive"),
    "batch norm standard and Darknet": ("norm.batch_norm_backward_naive",
                                        "norm_darknet.batchnorm_darknet_backward_naive"),
    "softmax": ("activation.softmax_backward_naive",),
    "cross-entropy": ("loss.cross_entropy_naive", "loss.prob_cross_entropy_naive"),
    "BCE": ("loss_binary.bce_naive",),
    "hinge": ("loss_margin.multi_margin_naive",),
    "upsample": ("shape.upsample_nearest_forward_naive", "shape.upsample_nearest_backward_naive"),
}


def test_the_readme_lists_the_kernels_that_have_a_loop_twin():
    readme = " ".join((DOCS.parent / "README.md").read_text(encoding="utf-8").split())
    listed = re.search(r"fast form reorganises the arithmetic \(([^)]*)\) have a naive loop twin", readme)
    assert listed, "README: the sentence naming the kernels with a loop twin is gone"
    assert [k.strip() for k in listed.group(1).split(", ")] == list(TWINS)
    for names in TWINS.values():
        for name in names:
            assert callable(_resolve("functional." + name)), name
