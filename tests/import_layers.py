"""The package's import graph, imports inside functions included, against the order of docs/architecture.md#layers.

Run as a program to list what breaks the order (``python3 tests/import_layers.py [PREFIX]``); the tests in
tests/test_import_layers.py hold the package to it.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1] / "deltaprop"

#: Lowest first. A module may import its own package (without a cycle) and any package of a lower rank; never one
#: of its own rank or above. ``deltaprop/__init__.py`` (the facade) and ``__main__`` are outside the order.
LAYERS: List[Tuple[str, ...]] = [
    ("errors",),
    ("atomic", "dispatch"),
    ("backend",),
    ("runtime", "geometry"),
    ("functional",),
    ("fast",),
    ("nn",),
    ("optim", "models", "gradcheck", "explain"),
    ("data", "checkpoint_schema", "safetensors_io"),
    ("io",),
    ("distributed",),
    ("training",),
    ("darknet",),
    ("detect",),
    ("train",),
    ("export",),
    ("commands", "cli"),
]
RANK: Dict[str, int] = {name: i for i, names in enumerate(LAYERS) for name in names}
OUTSIDE = {"deltaprop", "deltaprop.__main__"}


def modules() -> Dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = p
    return out


def _imports(name: str, path: Path, mods: Dict[str, Path]) -> Set[str]:
    """Modules of deltaprop that ``name`` imports anywhere in its file (at the top or inside functions)."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = base + ("." + node.module if node.module else "")
            else:
                mod = node.module or ""
            targets = [mod + "." + a.name if mod + "." + a.name in mods else mod for a in node.names]
        for t in targets:
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t.startswith("deltaprop") and t != name:
                found.add(t)
    return found


def graph() -> Dict[str, Set[str]]:
    mods = modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def package(name: str) -> str:
    """The top-level part of a module's name under deltaprop ("functional", "runtime", "train", ...)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def order_violations() -> List[str]:
    """Each import of a package of the same or a higher rank, or of a package with no rank."""
    out = []
    for name, targets in sorted(graph().items()):
        if name in OUTSIDE:
            continue
        mine = package(name)
        if mine not in RANK:
            out.append(f"{name}: package {mine!r} has no place in LAYERS")
            continue
        for t in sorted(targets):
            theirs = package(t)
            if t in OUTSIDE:
                out.append(f"{name} imports {t} (the facade)")
            elif theirs == mine:
                continue
            elif theirs not in RANK:
                out.append(f"{name} imports {t}: package {theirs!r} has no place in LAYERS")
            elif RANK[theirs] >= RANK[mine]:
                out.append(f"{name} (rank {RANK[mine]}) imports {t} (rank {RANK[theirs]})")
    return out


def cycles() -> List[List[str]]:
    """Strongly connected sets of more than one module (Tarjan), the facade left out."""
    g = {k: {t for t in v if t not in OUTSIDE} for k, v in graph().items() if k not in OUTSIDE}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


FORBIDDEN_IN_FUNCTIONAL = ("numba", "threadpoolctl", "deltaprop.runtime", "deltaprop.fast", "concurrent", "threading")


def functional_purity() -> List[str]:
    """Imports of ``functional`` modules that belong to speed (numba, threads, BLAS selection, batch splitting)."""
    out = []
    for p in sorted((ROOT / "functional").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level >= 2:
                names = ["deltaprop." + (node.module or "")]
            for n in names:
                if any(n == f or n.startswith(f + ".") for f in FORBIDDEN_IN_FUNCTIONAL):
                    out.append(f"{p.relative_to(ROOT.parent)}:{node.lineno} imports {n}")
    return out


if __name__ == "__main__":
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    problems = [v for v in order_violations() if v.startswith(prefix)]
    problems += [v for v in functional_purity() if prefix in v]
    problems += ["cycle: " + " <-> ".join(c) for c in cycles() if any(m.startswith(prefix) for m in c)]
    print("\n".join(problems) if problems else "no problems")
    sys.exit(1 if problems else 0)
