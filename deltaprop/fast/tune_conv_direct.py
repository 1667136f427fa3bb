"""How many taps the direct convolution loops (``fast/conv_direct.py``) serve on this machine: measured by
``deltaprop.tune()``, cached in ``direct_conv.json`` beside ``blas.json``, registered with the runtime as the
tunable ``direct_conv`` (``runtime.tunables``).

Whether the loops beat im2col and the product depends on the CPU and the BLAS library (docs/runtime.md, "The
direct convolution loops"), so ``measure_direct`` times a 3→16 and a 16→32 3×3 forward both ways with the
library in use, batch 1, and the largest tap count whose loops won by more than ``calibrate.MARGIN`` is kept,
per machine, library and version of the loops (``conv_direct.KERNELS``). ``choose`` puts the choice in use
through ``conv_direct.set_max_taps``:

- ``DELTAPROP_CONV_DIRECT=on``/``off``: ``conv_direct.MAX_TAPS``/0, nothing measured;
- ``DELTAPROP_CALIBRATE=0`` or numba off: 0 (the product path);
- the cached choice for this machine and library;
- else, under ``deltaprop.tune()``, the measurement (about 0.1 s once the loops are compiled), cached; at the
  first convolution of a process that did not tune, 0 (the product path, right on every machine), unmeasured.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ..functional import conv
from ..functional.im2col import conv_geometry
from ..runtime import blas, cache, calibrate, jit, settings
from . import conv_direct

FILE = "direct_conv.json"
# (C, F, side) of the convolutions timed, 3×3, padding 1, batch 1: yolov3-tiny's first two layers on a smaller map
GEOMETRIES: List[Tuple[int, int, int]] = [(3, 16, 128), (16, 32, 96)]


def cache_path() -> Path:
    """``direct_conv.json`` beside ``blas.json``."""
    return cache.path(FILE)


def _allowed() -> range:
    return range(conv_direct.MAX_TAPS + 1)


def _geometry_name(c: int, f: int, side: int) -> str:
    return f"{c}-{f}-{side}"


def _use(record: Dict[str, object]) -> Dict[str, object]:
    conv_direct.set_max_taps(int(record["max_taps"]))
    return record


def choose(measure: bool) -> Dict[str, object]:
    """Put this machine's largest direct-loop tap count in use (see the module's docstring) and return why:
    {"max_taps", "reason", "seconds" (when measured), "cached", "cache", "library"}."""
    setting = settings.get("DELTAPROP_CONV_DIRECT")
    if setting != "auto":
        taps = conv_direct.MAX_TAPS if setting == "on" else 0
        return _use({"max_taps": taps, "reason": f"DELTAPROP_CONV_DIRECT={setting}"})
    if not settings.get("DELTAPROP_CALIBRATE"):
        return _use({"max_taps": 0, "reason": "DELTAPROP_CALIBRATE=0: no measurement, the product path"})
    if not jit.enabled():
        return _use({"max_taps": 0, "reason": "numba is off: the loops need it"})
    library = blas.backend()
    key = dict(cache.machine_key(), library=library, kernels=conv_direct.KERNELS)
    hit = cache.lookup(cache_path(), key, "max_taps", _allowed())
    if hit is not None:
        return _use(hit)
    if not measure:
        return _use({"max_taps": 0, "uncalibrated": True, "library": library,
                     "reason": f"not measured with {library} on this machine yet: the product path until "
                               f"deltaprop.tune() measures"})
    t0 = time.perf_counter()
    seconds = measure_direct()
    taps = {_geometry_name(c, f, side): c * 3 * 3 for c, f, side in GEOMETRIES}
    wins = [taps[k] for k, v in seconds.items() if v["direct"] < v["product"] * (1 - calibrate.MARGIN)]
    top = max(taps.values())
    limit = 0 if not wins else conv_direct.MAX_TAPS if max(wins) == top else max(wins)
    detail = "; ".join(f"{k}: loops {v['direct'] * 1e3:.2f} ms, product {v['product'] * 1e3:.2f} ms"
                       for k, v in seconds.items())
    entry = {"max_taps": limit, "seconds": seconds, "library": library,
             "reason": f"measured with {library}: {detail} (loops for up to {limit} taps)"}
    return _use(cache.store(cache_path(), key, entry, "max_taps", _allowed(), t0))


def forget() -> bool:
    """Remove ``direct_conv.json`` and the choice in use (the next convolution or ``tune()`` chooses again)."""
    conv_direct.set_max_taps(None)
    return cache.remove(cache_path())


def measure_direct(geometries=GEOMETRIES, rounds: int = calibrate.ROUNDS) -> Dict[str, Dict[str, float]]:
    """Median seconds of one forward by the direct loops and by im2col and the product (the columns not kept,
    as a cfg network runs it), per geometry ("C-F-side"), alternating the two round by round. The loops are off
    for ``conv2d_forward`` while it measures; the choice is left unset (chosen again on next use)."""
    g = np.random.default_rng(0)
    out: Dict[str, Dict[str, float]] = {}
    conv_direct.set_max_taps(0)              # conv2d_forward takes the product path while this measures
    try:
        for c, f, side in geometries:
            out[_geometry_name(c, f, side)] = _time_direct(g, c, f, side, rounds)
    finally:
        conv_direct.set_max_taps(None)
    return out


def _time_direct(g: np.random.Generator, c: int, f: int, side: int, rounds: int) -> Dict[str, float]:
    """Median seconds of a C→F 3×3 forward on a side×side map, batch 1: {"direct": .., "product": ..}."""
    x = g.standard_normal((1, c, side, side)).astype(np.float32)
    w = g.standard_normal((f, c, 3, 3)).astype(np.float32)
    geo = conv_geometry(x.shape, w.shape, 1, 1)
    paths = {"direct": lambda: conv_direct.conv2d_direct(x, w, geo),
             "product": lambda: conv.conv2d_forward(x, w, None, 1, 1, keep_cols=False)}
    return calibrate.time_alternating(paths, rounds)


calibrate.register_tunable("direct_conv", choose, forget)
