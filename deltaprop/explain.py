"""Sensitivity maps (the δ of every layer) and training curves as pictures.

``sensitivity_maps(model, x, loss, target)`` runs one forward and one backward pass and records, for every
layer, the gradient its ``backward`` receives: ``∂C/∂a^l``, the sensitivity of the cost to that layer's
output (docs/equations.md notation: for a layer whose output is a weighted input, this is ``δ^l = ∂C/∂z^l``;
after an activation layer it is ``∂C/∂a^l``, whose product with σ' gives the δ below it, FC-1/Conv-1).
``"input"`` holds ``∂C/∂x``, the input-gradient saliency map. The maps are collected by wrapping each
layer's ``backward`` for the duration of the call; the model is left as it was (weights, gradients,
modes, running statistics, ``needs_input_grad`` flags, the global RNG).

``layer_gradient_norms`` summarises them per layer (‖δ‖ and ‖∂C/∂W‖) to spot vanishing or exploding
gradients. ``plot_sensitivity`` and ``plot_history`` draw PNGs with matplotlib (the ``plot`` extra, imported
only when called; the Agg canvas is used directly, so no display and no pyplot state are involved).
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import backend
from .atomic import atomic_writer
from .errors import DataError, ShapeError
from .nn.container import Sequential
from .nn.graph import Graph
from .nn.module import Module

INPUT_KEY = "input"
PathLike = Union[str, "os.PathLike[str]"]


class SensitivityMaps(OrderedDict):
    """``name -> δ`` (∂C/∂output of that layer, the batch's shape), ``"input"`` first, then the layers in
    forward order. Layers the backward pass never reached (behind a ``stop_backward`` node, or feeding an
    output without gradient) are absent. Attributes: ``loss`` (the cost, None when ``dout`` was given),
    ``types`` (name -> layer class name), ``x`` (the input)."""

    loss: Optional[float]
    types: Dict[str, str]
    x: Optional[np.ndarray]


def model_layers(model: Module) -> List[Tuple[str, Module]]:
    """The layers whose δ is reported: the children of ``Sequential``/``Graph`` containers in order, nested
    containers opened (dotted names); for another module with children, its children; else the module itself."""
    if not isinstance(model, (Sequential, Graph)):
        kids = [(k, m) for k, m in model.named_children() if m is not None]
        return kids if kids else [(type(model).__name__, model)]
    out: List[Tuple[str, Module]] = []
    stack = [("", iter(list(model.named_children())))]
    while stack:  # depth first with an explicit stack: children in order, containers opened
        prefix, it = stack[-1]
        item = next(it, None)
        if item is None:
            stack.pop()
            continue
        k, m = item
        if m is None:
            continue
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(m, (Sequential, Graph)):
            stack.append((name, iter(list(m.named_children()))))
        else:
            out.append((name, m))
    return out


def _copy(g):
    if isinstance(g, np.ndarray):
        return np.array(g, copy=True)
    if isinstance(g, (list, tuple)):
        return [None if a is None else np.array(a, copy=True) for a in g]
    return g


def _sq_norm(a: Optional[np.ndarray]) -> float:
    if a is None:
        return 0.0
    a = np.asarray(a)
    return float(np.sum(np.square(a, dtype=np.float64)))


def _run(model: Module, x: np.ndarray, loss, target, dout, train_mode: bool
         ) -> Tuple[SensitivityMaps, Dict[str, Dict[str, Tuple[float, Optional[float]]]]]:
    """One forward/backward with every layer's backward wrapped; returns the maps and, per layer,
    ``{param name: (‖θ‖², ‖∂C/∂θ‖² or None)}``. Restores everything it touches."""
    if dout is None and loss is None:
        raise ValueError("sensitivity_maps: give a loss (and its target), or dout = ∂C/∂output")
    layers = model_layers(model)
    names = [n for n, _ in layers]
    if INPUT_KEY in names:
        raise ValueError(f"sensitivity_maps: a layer is named {INPUT_KEY!r}, the key of ∂C/∂input")
    captured: Dict[str, Any] = {}
    modules = list(model.modules())
    saved_flags = [(m, m.training, m.needs_input_grad) for m in modules]
    params = list(model.parameters())
    saved_grads = [(p, p.grad) for p in params]
    rng_state = backend.get_rng_state()
    saved_buffers = [(m, b, np.array(m.__dict__[b], copy=True)) for m in modules for b in m._buffers
                     if isinstance(m.__dict__.get(b), np.ndarray)] if train_mode else []
    patched: List[Tuple[Module, Any]] = []
    for name, mod in layers:
        had = mod.__dict__.get("backward")  # someone's wrapper already there: keep it under ours

        def wrapped(d, *a, _b=mod.backward, _n=name, **k):
            captured[_n] = _copy(d)
            return _b(d, *a, **k)
        object.__setattr__(mod, "backward", wrapped)
        patched.append((mod, had))
    maps = SensitivityMaps()
    try:
        for m in modules:
            object.__setattr__(m, "training", bool(train_mode))
            object.__setattr__(m, "needs_input_grad", True)
            object.__setattr__(m, "_cache", None)
        for p in params:
            p.grad = None
        with backend.enable_grad():
            out = model(x)
            value = None
            if dout is None:
                value = loss(out, target)
                if not np.isscalar(value) and np.ndim(value) != 0:
                    raise ShapeError("sensitivity_maps: the loss must reduce to a scalar (reduction 'mean' or "
                                     f"'sum'), got an array of shape {np.shape(value)}")
                value = float(value)
                dout = loss.backward()
            elif isinstance(out, np.ndarray) and isinstance(dout, np.ndarray) and dout.shape != out.shape:
                raise ShapeError(f"sensitivity_maps: dout has shape {dout.shape} but the output has {out.shape}")
            dx = model.backward(dout)
        maps[INPUT_KEY] = None if dx is None else np.array(dx, copy=True)
        for n in names:
            if n in captured:
                maps[n] = captured[n]
        maps.loss = value
        maps.types = {INPUT_KEY: "input", **{n: type(m).__name__ for n, m in layers}}
        maps.x = x
        pinfo = {n: {pn: (_sq_norm(p.data), None if p.grad is None else _sq_norm(p.grad))
                     for pn, p in m.named_parameters() if p.requires_grad} for n, m in layers}
    finally:
        for mod, had in patched:
            if had is None:
                mod.__dict__.pop("backward", None)
            else:
                object.__setattr__(mod, "backward", had)
        for m, training, need in saved_flags:
            object.__setattr__(m, "training", training)
            object.__setattr__(m, "needs_input_grad", need)
            object.__setattr__(m, "_cache", None)
        for p, g in saved_grads:
            p.grad = g
        for m, b, arr in saved_buffers:
            object.__setattr__(m, b, arr)
        backend.set_rng_state(rng_state)
    return maps, pinfo


def sensitivity_maps(model: Module, x: np.ndarray, loss=None, target=None, *, dout=None,
                     train_mode: bool = False) -> SensitivityMaps:
    """∂C/∂output of every layer of ``model`` (a ``Sequential``, a ``Graph`` such as a Darknet network, or
    any module) for the input batch ``x``, plus ``"input"``: ∂C/∂x.

    ``C = loss(model(x), target)`` (a loss module reducing to a scalar), or give ``dout`` = ∂C/∂output
    directly (e.g. a one-hot row to explain one class score; a list for a multi-output graph).
    ``train_mode=False`` (default) runs the layers in eval mode (running statistics, no dropout) while
    keeping their caches; ``True`` uses training behaviour. Nothing about the model is changed.
    """
    return _run(model, x, loss, target, dout, train_mode)[0]


def layer_gradient_norms(model: Module, x: np.ndarray, loss=None, target=None, *, dout=None,
                         train_mode: bool = False) -> List[Dict[str, Any]]:
    """Per layer, in forward order (``"input"`` first): ``layer``, ``type``, ``shape`` (of δ), ``delta_norm``
    ‖δ‖₂, ``delta_rms`` ‖δ‖/√size, ``param_norm`` ‖θ‖ and ``grad_norm`` ‖∂C/∂θ‖ over the layer's trainable
    parameters (None without any), ``ratio`` = grad_norm/param_norm, ``grads`` {parameter: ‖∂C/∂θ‖}.

    δ rms shrinking layer after layer towards the input means vanishing gradients, growing means exploding
    ones; ``ratio`` × learning rate is the relative size of the next SGD step of that layer (update-1).
    """
    maps, pinfo = _run(model, x, loss, target, dout, train_mode)
    rows: List[Dict[str, Any]] = []
    for name, d in maps.items():
        arrs = [a for a in (d if isinstance(d, list) else [d]) if a is not None]
        sq = sum(_sq_norm(a) for a in arrs)
        size = sum(a.size for a in arrs)
        info = pinfo.get(name, {})
        have = {pn: g for pn, (_, g) in info.items() if g is not None}
        pnorm = math.sqrt(sum(w for w, _ in info.values())) if info else None
        gnorm = math.sqrt(sum(have.values())) if have else (0.0 if info else None)
        rows.append({
            "layer": name, "type": maps.types.get(name, ""),
            "shape": tuple(arrs[0].shape) if len(arrs) == 1 else [tuple(a.shape) for a in arrs],
            "delta_norm": math.sqrt(sq), "delta_rms": math.sqrt(sq / size) if size else 0.0,
            "param_norm": pnorm, "grad_norm": gnorm,
            "ratio": (gnorm / pnorm) if (gnorm is not None and pnorm) else None,
            "grads": {pn: math.sqrt(g) for pn, g in have.items()},
        })
    return rows


def format_norms(rows: Sequence[Dict[str, Any]]) -> str:
    """``layer_gradient_norms`` rows as a text table."""
    def f(v) -> str:
        return "-" if v is None else f"{v:.3e}"
    w = max([len(f"{r['layer']} ({r['type']})") for r in rows] + [12])
    lines = [f"{'layer':<{w}} {'δ shape':<20} {'‖δ‖':>10} {'rms δ':>10} {'‖∂C/∂θ‖':>10} {'‖θ‖':>10} "
             f"{'ratio':>10}", "-" * (w + 76)]
    for r in rows:
        shape = str(r["shape"]) if not isinstance(r["shape"], list) else f"{len(r['shape'])} arrays"
        lines.append(f"{r['layer'] + ' (' + r['type'] + ')':<{w}} {shape:<20} {f(r['delta_norm']):>10} "
                     f"{f(r['delta_rms']):>10} {f(r['grad_norm']):>10} {f(r['param_norm']):>10} {f(r['ratio']):>10}")
    return "\n".join(lines)


# --- pictures ------------------------------------------------------------------------------------

def _figure(**kw):
    """A matplotlib Figure on the Agg canvas (no pyplot); a clear ImportError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("deltaprop.explain's pictures need matplotlib: pip install 'deltaprop[plot]' "
                          "(or pip install matplotlib)") from e
    fig = Figure(layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def _cmap(name: str):
    """A copy of a colour map that paints NaN (the gaps between channel tiles) grey."""
    import matplotlib
    return matplotlib.colormaps[name].with_extremes(bad="0.8")


def _save_png(fig, path: PathLike, dpi: int) -> Path:
    """Write the figure atomically: a temporary file in the same directory, fsync, rename."""
    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi)
    return Path(path)


def _image_of(a: np.ndarray) -> Optional[np.ndarray]:
    """One sample's array as a 2-D picture: (C, H, W) -> per-pixel max |.| over channels is done by the
    caller; (H, W) as is; a vector whose length is a square -> square. None if not image-like."""
    if a.ndim == 3:
        return a
    if a.ndim == 2:
        return a[None]
    if a.ndim == 1:
        s = int(round(math.sqrt(a.size)))
        if s * s == a.size:
            return a.reshape(1, s, s)
    return None


def _absmax(a: np.ndarray) -> float:
    """max |a| over the finite entries (0 if none): colour limits that survive inf/NaN gradients."""
    fin = np.abs(a[np.isfinite(a)])
    return float(fin.max()) if fin.size else 0.0


def _mosaic(d: np.ndarray, max_channels: int) -> np.ndarray:
    """Channels (C, H, W) side by side, NaN gaps between them: one image per layer."""
    c = min(d.shape[0], max_channels)
    h, w = d.shape[1:]
    gap = max(1, w // 8)
    out = np.full((h, c * w + (c - 1) * gap), np.nan)
    for i in range(c):
        out[:, i * (w + gap):i * (w + gap) + w] = d[i]
    return out


def plot_sensitivity(maps: SensitivityMaps, path: PathLike, *, sample: int = 0, max_channels: int = 8,
                     max_layers: int = 12, title: Optional[str] = None, dpi: int = 80) -> Path:
    """Draw ``maps`` (from ``sensitivity_maps``) for one ``sample`` of the batch into a PNG at ``path``.

    Top row: the input, |∂C/∂x| (max over channels: the saliency map) and ∂C/∂x (signed, summed over
    channels). Then one row per layer: the first ``max_channels`` channel maps of δ for conv-like layers
    (N, C, H, W), the δ vector as a strip for dense layers; blue negative, red positive, one colour scale
    per layer. At most ``max_layers`` layers, evenly spaced. Written atomically; returns the path."""
    if INPUT_KEY not in maps:
        raise ValueError("plot_sensitivity: maps holds no 'input' entry (pass the result of sensitivity_maps)")
    layers = [n for n, d in maps.items() if n != INPUT_KEY and isinstance(d, np.ndarray) and d.ndim in (2, 4)]
    if len(layers) > max_layers:
        keep = np.unique(np.linspace(0, len(layers) - 1, max_layers).round().astype(int))
        layers = [layers[i] for i in keep]
    types = getattr(maps, "types", {}) or {}
    fig = _figure(figsize=(9.0, 2.4 + 1.3 * len(layers)))
    gs = fig.add_gridspec(1 + len(layers), 3, height_ratios=[2.2] + [1.0] * len(layers))
    dx = maps[INPUT_KEY]
    x = getattr(maps, "x", None)
    if dx is not None:
        g = _image_of(np.asarray(dx[sample], dtype=np.float64))
        xi = None if x is None else _image_of(np.asarray(x[sample], dtype=np.float64))
        panels = [("input x", None if xi is None else (xi.transpose(1, 2, 0) if xi.shape[0] == 3
                                                      else xi.mean(axis=0)), "gray", None)]
        if g is not None:
            sal = np.abs(g).max(axis=0)
            signed = g.sum(axis=0)
            m = _absmax(signed) or 1.0
            panels += [("|∂C/∂x| (saliency)", sal, "hot", None), ("∂C/∂x", signed, "RdBu_r", m)]
        for k, (ttl, img, cmap, m) in enumerate(panels):
            ax = fig.add_subplot(gs[0, k])
            ax.set_axis_off()
            if img is None:
                continue
            if img.ndim == 3:  # colour input: show it as it is, clipped to [0, 1]
                ax.imshow(np.clip(img, 0, 1))
            elif m is None:
                ax.imshow(img, cmap=cmap)
            else:
                ax.imshow(img, cmap=cmap, vmin=-m, vmax=m)
            ax.set_title(ttl, fontsize=9)
    for r, name in enumerate(layers, start=1):
        d = np.asarray(maps[name][sample], dtype=np.float64)
        img = _mosaic(d, max_channels) if d.ndim == 3 else d[None, :]
        m = _absmax(img)
        ax = fig.add_subplot(gs[r, :])
        ax.imshow(img, cmap=_cmap("RdBu_r"), vmin=-(m or 1.0), vmax=m or 1.0, aspect="equal" if d.ndim == 3 else "auto",
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        shown = f", channels 0..{min(d.shape[0], max_channels) - 1} of {d.shape[0]}" if d.ndim == 3 else ""
        ax.set_title(f"δ of {name} ({types.get(name, '')}) {tuple(maps[name].shape[1:])}{shown}; "
                     f"max |δ| {m:.2e}", fontsize=8, loc="left")
    loss = getattr(maps, "loss", None)
    fig.suptitle(title or ("sensitivity maps ∂C/∂output" + (f", C = {loss:.4g}" if loss is not None else "")),
                 fontsize=10)
    return _save_png(fig, path, dpi)


def read_history(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a ``history.jsonl`` (one JSON object a line; blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such history file")
    try:
        with open(p, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a history.jsonl (not UTF-8 text: {e.reason} at byte {e.start})") from None
    out: List[Dict[str, Any]] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{i}: not a JSON line ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{p}:{i}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


_X_KEYS = ("epoch", "batch", "iteration", "step")


def _series(history: Sequence[Dict[str, Any]], xkey: str, wanted) -> Dict[str, Tuple[list, list]]:
    """{key: (xs, ys)} for every key accepted by ``wanted(key)``, finite numbers only."""
    keys: List[str] = []
    for rec in history:
        for k in rec:
            if wanted(k) and k not in keys:
                keys.append(k)
    out = {}
    for k in keys:
        xs, ys = [], []
        for i, rec in enumerate(history):
            v = rec.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                xs.append(rec.get(xkey, i + 1))
                ys.append(float(v))
        if xs:
            out[k] = (xs, ys)
    return out


def plot_history(history: Union[PathLike, Iterable[Dict[str, Any]]], path: PathLike, *,
                 title: Optional[str] = None, dpi: int = 100) -> Path:
    """Training curves from a ``history.jsonl`` (``deltaprop.train.fit``'s, or the Darknet trainer's) or
    from the list ``fit`` returns: every ``*loss`` series in one panel, every ``*acc`` series in another
    (when there are any), the learning rate in a third when it changes; x is ``epoch`` (else ``batch``,
    ``iteration``, ``step``, or the record number). Written atomically as a PNG; returns the path."""
    src = None
    if isinstance(history, (str, os.PathLike)):
        src = Path(history)
        history = read_history(src)
    history = list(history)
    if not history:
        raise DataError(f"{src or 'history'}: no records to plot")
    xkey = next((k for k in _X_KEYS if any(k in r for r in history)), "record")
    losses = _series(history, xkey, lambda k: k == "loss" or k.endswith("_loss"))
    accs = _series(history, xkey, lambda k: k in ("acc", "accuracy") or k.endswith(("_acc", "_accuracy")))
    lr = _series(history, xkey, lambda k: k == "lr").get("lr")
    show_lr = lr is not None and len(set(lr[1])) > 1
    if not losses and not accs:
        raise DataError(f"{src or 'history'}: no loss or accuracy values (keys ending in 'loss' or 'acc')")
    panels = [p for p in (("loss", losses), ("accuracy", accs)) if p[1]] + ([("learning rate", {"lr": lr})]
                                                                           if show_lr else [])
    fig = _figure(figsize=(4.2 * len(panels), 3.4))
    from matplotlib.ticker import MaxNLocator
    for k, (label, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for name, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=name,
                    linestyle="--" if name.startswith(("val", "eval")) else "-")
        ax.set_xlabel(xkey)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if label == "loss" and all(min(ys) > 0 for _, ys in series.values()) and \
                max(max(ys) for _, ys in series.values()) > 20 * min(min(ys) for _, ys in series.values()):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or (f"training curves: {src.name}" if src else "training curves"), fontsize=10)
    return _save_png(fig, path, dpi)


__all__ = ["SensitivityMaps", "sensitivity_maps", "layer_gradient_norms", "format_norms", "model_layers",
           "plot_sensitivity", "plot_history", "read_history", "INPUT_KEY"]
