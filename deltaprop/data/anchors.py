"""Anchors by k-means on IoU, as AlexeyAB/darknet's ``calc_anchors`` (``detector.c``, ``do_kmeans`` in
``matrix.c``): every label box becomes a point ``(w·W, h·H)`` in network pixels; the distance between a box
and a centre is ``1 − IoU`` of the two shapes placed on a common centre; centres start at k distinct random
boxes; assignment (nearest centre, the first on ties) and update (the mean of each cluster; an empty cluster
keeps its centre) alternate until no assignment changes (at most 1000 rounds); centres are sorted by area.

Differences from AlexeyAB: the random start is seeded (``srand(time(0))`` there), and the best of
``restarts`` starts (highest mean IoU) is kept — ``restarts=1`` is AlexeyAB's single run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ..errors import DataError

MAX_ROUNDS = 1000


def shape_iou(boxes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU (n, k) of (n, 2) box shapes with (k, 2) centre shapes, both centred at the origin."""
    inter = np.minimum(boxes[:, None, 0], centres[None, :, 0]) * np.minimum(boxes[:, None, 1], centres[None, :, 1])
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (centres[:, 0] * centres[:, 1])[None, :] - inter
    return inter / union


@dataclass
class AnchorResult:
    anchors: np.ndarray          # (k, 2) float, sorted by area, network pixels
    avg_iou: float               # mean over boxes of the IoU with their nearest anchor
    rounds: int                  # assignment rounds of the kept run
    boxes: int                   # how many boxes were clustered

    def values(self, width: int) -> str:
        """``10,14, 23,27, ...``: the anchors as AlexeyAB writes them into ``anchors.txt`` (rounded pixels; 4
        decimals for width <= 32), the value of the cfg line."""
        fmt = "{:.0f},{:.0f}" if width > 32 else "{:.4f},{:.4f}"
        return ", ".join(fmt.format(w, h) for w, h in self.anchors)

    def cfg_line(self, width: int) -> str:
        """``anchors = 10,14, 23,27, ...`` as AlexeyAB prints it."""
        return "anchors = " + self.values(width)

    def clusters(self, shapes: np.ndarray) -> np.ndarray:
        """The anchor (index into ``anchors``) each of the (n, 2) ``shapes`` is nearest to (highest IoU)."""
        return np.argmax(shape_iou(np.asarray(shapes, dtype=np.float64).reshape(-1, 2), self.anchors), axis=1)


def _kmeans_once(points: np.ndarray, k: int, rng: np.random.Generator):
    centres = points[rng.permutation(len(points))[:k]].copy()
    assign = np.full(len(points), -1)
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        new = np.argmax(shape_iou(points, centres), axis=1)     # argmin of 1 - IoU, first on ties
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = points[assign == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    best = shape_iou(points, centres).max(axis=1)
    return centres, float(best.mean()), rounds


def kmeans_anchors(shapes: np.ndarray, k: int, seed: int = 0, restarts: int = 10) -> AnchorResult:
    """Cluster (n, 2) box shapes (network pixels) into ``k`` anchors."""
    points = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    if k < 1:
        raise DataError(f"the number of anchors must be at least 1, got {k}")
    if restarts < 1:
        raise DataError(f"restarts must be at least 1, got {restarts}")
    if len(points) < k:
        raise DataError(f"{len(points)} boxes cannot make {k} anchors")
    if not np.all(points > 0):
        raise DataError("box shapes must be positive")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        centres, iou, rounds = _kmeans_once(points, k, rng)
        if best is None or iou > best[1]:
            best = (centres, iou, rounds)
    centres, iou, rounds = best
    order = np.argsort(centres[:, 0] * centres[:, 1], kind="stable")
    return AnchorResult(anchors=centres[order], avg_iou=iou, rounds=rounds, boxes=len(points))


def label_shapes(rows: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """The (n, 2) shapes ``(w·width, h·height)`` of every label row in ``rows`` (arrays of (k, 5))."""
    parts: List[np.ndarray] = [np.asarray(r, dtype=np.float64).reshape(-1, 5)[:, 3:5] for r in rows]
    shapes = np.concatenate(parts) if parts else np.zeros((0, 2))
    return shapes * np.array([width, height], dtype=np.float64)


def plot_anchors(result: AnchorResult, shapes: np.ndarray, path, title: str = "", dpi: int = 100):
    """A PNG of the clustering (AlexeyAB's ``-show`` window, as a file): each box's (width, height) in network
    pixels, coloured by the anchor it is nearest to, and the anchors as black-edged crosses in their cluster's
    colour, with the mean IoU. Matplotlib (the ``plot`` extra) is imported here only; written atomically."""
    from ..explain import _figure, _save_png
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    assign = result.clusters(shapes)
    fig = _figure(figsize=(5.6, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    k = len(result.anchors)
    from matplotlib import colormaps
    cmap = colormaps["tab10" if k <= 10 else "tab20"]     # distinct colours; beyond 20 anchors they repeat
    dot = float(np.clip(4000 / max(len(shapes), 1), 3, 30))  # few boxes: large dots; a big set: small ones
    for j in range(k):
        members = shapes[assign == j]
        colour = cmap(j % cmap.N)
        ax.scatter(members[:, 0], members[:, 1], s=dot, alpha=0.5, color=colour, linewidths=0)
        ax.scatter([result.anchors[j, 0]], [result.anchors[j, 1]], s=140, marker="X", color=colour,
                   edgecolors="black", linewidths=1.0, zorder=3,
                   label=f"{result.anchors[j, 0]:.0f}x{result.anchors[j, 1]:.0f} ({len(members)})")
    ax.set_xlabel("box width (network pixels)")
    ax.set_ylabel("box height (network pixels)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best", title="anchor (boxes)", title_fontsize=7)
    fig.suptitle(title or f"{k} anchors", fontsize=10)
    ax.set_title(f"{len(shapes)} boxes, avg IoU {100 * result.avg_iou:.2f} %", fontsize=9)
    return _save_png(fig, path, dpi)


__all__ = ["kmeans_anchors", "label_shapes", "shape_iou", "plot_anchors", "AnchorResult"]
