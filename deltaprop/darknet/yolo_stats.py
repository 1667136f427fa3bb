"""The [yolo] heads' statistics of a training update (``net.yolo_stats``: per head avg_iou, class, obj, no_obj,
recall50, recall75, count, predictions) combined over the subdivisions of a batch and over the heads, and
Darknet's "Region" line of a head."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence


def merge_yolo_stats(parts: Sequence[Sequence[Dict[str, float]]]) -> List[Dict[str, float]]:
    """Per head, the statistics of several forward passes (the subdivisions of a batch) as one: averages
    weighted by each pass's ``count`` (no_obj by its number of predictions)."""
    if not parts:
        return []
    out = []
    for heads in zip(*parts):
        cnt = sum(h["count"] for h in heads)
        preds = sum(h["predictions"] for h in heads)
        m: Dict[str, float] = {"layer": heads[0]["layer"], "count": cnt, "predictions": preds}
        for k in ("avg_iou", "class", "obj", "recall50", "recall75"):
            m[k] = sum(h[k] * h["count"] for h in heads if h["count"]) / cnt if cnt else float("nan")
        m["no_obj"] = sum(h["no_obj"] * h["predictions"] for h in heads) / max(preds, 1)
        out.append(m)
    return out


def region_line(st: Dict[str, float]) -> str:
    """Darknet's per-head line (``forward_yolo_layer``'s printf)."""
    return (f"Region {st['layer']} Avg IOU: {st['avg_iou']:f}, Class: {st['class']:f}, Obj: {st['obj']:f}, "
            f"No Obj: {st['no_obj']:f}, .5R: {st['recall50']:f}, .75R: {st['recall75']:f},  count: {st['count']}")


def combined_stats(stats: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The [yolo] heads' statistics of one update as one, weighted by their object counts (Darknet prints them
    per head): avg_iou, recall50, recall75, class, obj; no_obj averaged over the heads."""
    out: Dict[str, float] = {}
    count = sum(int(s.get("count", 0) or 0) for s in stats)
    for key in ("avg_iou", "recall50", "recall75", "class", "obj"):
        if count:
            out[key] = sum(float(s[key]) * int(s["count"]) for s in stats
                           if int(s.get("count", 0) or 0) and math.isfinite(float(s.get(key, math.nan))))
            out[key] /= count
        else:
            out[key] = math.nan
    noobj = [float(s["no_obj"]) for s in stats if "no_obj" in s]
    out["no_obj"] = sum(noobj) / len(noobj) if noobj else math.nan
    out["count"] = count
    return out


__all__ = ["merge_yolo_stats", "region_line", "combined_stats"]
