"""``DELTAPROP_BLAS=auto``: which library runs the engine's products faster on this machine, measured once and
cached (issue 17: the CPU vendor alone chose wrong).

On a cache miss, the first use of the engine times both libraries on the products a training step makes (the
MLP's dense layers forward and backward, a LeNet and a conv-BN im2col product), each followed by the numba
kernels a step runs between them (the ReLU and the SGD update), in alternating rounds; the faster library by more
than ``MARGIN`` wins, else NumPy's own (nothing extra loaded). It takes 0.2–0.6 s here (`deltaprop info` prints
the numbers). The choice is written to ``$XDG_CACHE_HOME/deltaprop/blas.json`` (``~/.cache`` when unset;
``DELTAPROP_CACHE_DIR`` overrides the folder), under a key of the CPU model, the usable cores, NumPy's and MKL's
libraries and versions and numba's: another machine, core count or library set measures again. An unreadable or
corrupt cache file is ignored and rewritten. ``DELTAPROP_CALIBRATE=0`` skips the measurement and the cache
(``auto`` then means NumPy's BLAS: the test suite uses it so that no test depends on the machine's choice).

``direct_conv_taps`` makes the same kind of choice for ``functional/conv_direct.py`` (direct convolution loops
or im2col and a product for layers with few taps on large maps), per machine and BLAS library, in
``direct_conv.json`` beside ``blas.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .settings import env_flag, env_path, user_cache_dir
from ..atomic import atomic_writer

SCHEMA = 1
MARGIN = 0.05            # MKL must be this much faster to be chosen over NumPy's own BLAS
ROUNDS = 6               # alternating rounds per library
BUDGET_S = 0.6           # measuring stops after this many seconds (at least 2 rounds each)
# (m, k, n) of the products timed: MLP 784-256-128-10 at batch 64 forward and weight gradients, a LeNet
# conv2 im2col product (64·10·10 positions × 150) and a conv-BN conv2 one (16·32·32 × 144 → 32)
SHAPES: List[Tuple[int, int, int]] = [(64, 784, 256), (256, 64, 784), (64, 256, 128), (128, 64, 256),
                                      (6400, 150, 16), (16384, 144, 32)]


def cache_path() -> Path:
    """Where the choice is kept: ``$DELTAPROP_CACHE_DIR`` or ``$XDG_CACHE_HOME/deltaprop`` (``~/.cache/deltaprop``)."""
    return (env_path("DELTAPROP_CACHE_DIR") or user_cache_dir()) / "blas.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _numpy_blas() -> str:
    """NumPy's BLAS as its build records it (name and version), without loading anything."""
    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})
        b = deps.get("blas", {})
        return f"{b.get('name', '?')} {b.get('version', '?')}"
    except Exception:  # noqa: BLE001 - older NumPy: its version names its bundled BLAS
        return "numpy " + np.__version__


def _numba_version() -> str:
    if not env_flag("DELTAPROP_NUMBA", True):
        return "off"
    try:
        from importlib.metadata import version
        return version("numba")
    except Exception:  # noqa: BLE001 - not installed
        return "absent"


def machine_key() -> Dict[str, object]:
    """What the choice depends on: CPU model and usable cores, NumPy and its BLAS, the MKL library found
    (path, size, modification time) and numba."""
    from . import blas
    mkl = []
    for p in blas._candidates():
        try:
            st = os.stat(p)
            mkl.append(f"{os.path.realpath(p)}:{st.st_size}:{int(st.st_mtime)}")
        except OSError:
            continue
    return {"schema": SCHEMA, "cpu": cpu_model(), "cores": usable_cores(), "numpy": np.__version__,
            "numpy_blas": _numpy_blas(), "mkl": sorted(set(mkl)), "numba": _numba_version(),
            "omp_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")}}


def _key_id(key: Dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read_cache(path: Path, field: str = "choice", allowed=("mkl", "numpy")) -> Dict[str, dict]:
    """The cached entries (those whose ``field`` is one of ``allowed``), or {} when the file is missing,
    unreadable or not what this module writes."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(v, dict) and v.get(field) in allowed}


def _write_cache(path: Path, entries: Dict[str, dict]) -> Optional[str]:
    """Write atomically; None, or why it could not (a read-only home only costs a calibration per process)."""
    try:
        with atomic_writer(path, "w") as f:
            json.dump({"schema": SCHEMA, "entries": entries}, f, indent=1, sort_keys=True)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def _step_work(shapes, seed: int = 0):
    """The operands of the timed products and the buffers of the kernels in between."""
    g = np.random.default_rng(seed)
    prods = []
    for m, k, n in shapes:
        a = g.standard_normal((m, k)).astype(np.float32)
        b = g.standard_normal((n, k)).astype(np.float32).T      # a transposed view, as a layer's weight
        prods.append((a, b))
    w = g.standard_normal(784 * 256).astype(np.float32) * np.float32(0.01)
    return prods, (w, np.zeros_like(w), np.zeros_like(w))


def _run_step(prods, sgd) -> None:
    """Each product, then the ReLU of its result; one SGD-momentum pass over a 784×256 weight at the end."""
    from . import blas
    from ..fast import elementwise_numba as ew
    from ..fast.sgd_numba import sgd_momentum_update
    for a, b in prods:
        c = blas.matmul(a, b)
        if ew.relu_forward(c) is None:
            np.maximum(c, 0, out=c)
    w, grad, buf = sgd
    if not sgd_momentum_update(w, grad, buf, 0.0, 0.9, 0.0, 0.0, False, False):
        buf *= np.float32(0.9)
        buf += grad


def measure(libraries=("numpy", "mkl"), rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> Dict[str, float]:
    """Median seconds of one pass over the step's products and kernels per library, alternating libraries round
    by round. Leaves ``blas`` on the last library timed; the caller puts the chosen one in use."""
    from . import blas
    prods, sgd = _step_work(SHAPES)
    times: Dict[str, list] = {lib: [] for lib in libraries}
    for lib in libraries:                    # warm up: MKL's wrappers compile, numba's kernels load
        blas.use(lib)
        _run_step(prods, sgd)
        _run_step(prods, sgd)
    t_start = time.perf_counter()
    for r in range(rounds):
        for lib in (libraries if r % 2 == 0 else libraries[::-1]):
            blas.use(lib)
            t0 = time.perf_counter()
            for _ in range(3):
                _run_step(prods, sgd)
            times[lib].append((time.perf_counter() - t0) / 3)
        if r >= 1 and time.perf_counter() - t_start > budget_s:
            break
    return {lib: float(np.median(v)) for lib, v in times.items()}


def choose() -> Dict[str, object]:
    """The library for ``auto`` and why: {"choice", "reason", "seconds" (per library, when measured),
    "cached", "cache", "key"}. Measures on a cache miss (see the module's docstring)."""
    from . import blas
    from . import threads
    from . import jit as _numba
    if not env_flag("DELTAPROP_CALIBRATE", True):
        return {"choice": "numpy", "reason": "DELTAPROP_CALIBRATE=0: no measurement, NumPy's own BLAS"}
    if not blas._candidates():
        return {"choice": "numpy", "reason": "MKL is not installed (pip install mkl, or the fast extra)"}
    key = machine_key()
    kid = _key_id(key)
    path = cache_path()
    entries = _read_cache(path)
    hit = entries.get(kid)
    if hit is not None:
        return dict(hit, cached=True, cache=str(path))
    # the pools must exist before MKL loads: numba's threads sleep between kernels (safe with either library)
    if threads.started() is None:
        threads.start("passive" if _numba.numba_module() is not None else "shared")
    t0 = time.perf_counter()
    try:
        seconds = measure()
    except blas.BlasError as exc:
        entry = {"choice": "numpy", "reason": f"MKL unusable: {exc}"}
    else:
        fast = seconds["mkl"] < seconds["numpy"] * (1 - MARGIN)
        entry = {"choice": "mkl" if fast else "numpy", "seconds": seconds,
                 "reason": (f"measured: MKL {seconds['mkl'] * 1e3:.2f} ms vs NumPy's BLAS "
                            f"{seconds['numpy'] * 1e3:.2f} ms per pass of the step's products and kernels"
                            f" ({'MKL' if fast else 'NumPy'} chosen; MKL needs to be {MARGIN:.0%} faster)")}
    return _store(path, entries, kid, dict(entry, key=key), t0)


def _store(path: Path, entries: Dict[str, dict], kid: str, entry: dict, t0: float) -> Dict[str, object]:
    """Add a fresh measurement (stamped with its duration since ``t0`` and the date) to the cache file's
    entries under ``kid``, write the file atomically, and return the entry as the caller reports it."""
    entry = dict(entry, calibration_s=round(time.perf_counter() - t0, 3), date=time.strftime("%Y-%m-%dT%H:%M:%S"))
    entries[kid] = entry
    err = _write_cache(path, entries)
    out = dict(entry, cached=False, cache=str(path))
    if err:
        out["cache_error"] = err
    return out


def forget() -> bool:
    """Remove the cache files (the BLAS choice and the direct-loops choice: the next process, or this one's next
    convolution, measures again); True when there was one."""
    from ..fast import conv_direct
    conv_direct.set_max_taps(None)
    found = False
    for path in (cache_path(), direct_conv_path()):
        try:
            path.unlink()
            found = True
        except FileNotFoundError:
            pass
    return found


# --- direct convolution loops or the product (functional/conv_direct.py) -----------------------------------

# (C, F, side) of the convolutions timed, 3×3, padding 1, batch 1: yolov3-tiny's first two layers on a smaller map
DIRECT_GEOMETRIES: List[Tuple[int, int, int]] = [(3, 16, 128), (16, 32, 96)]


def direct_conv_path() -> Path:
    """Where ``direct_conv_taps`` keeps its choice: beside ``blas.json``."""
    return cache_path().with_name("direct_conv.json")


def measure_direct(geometries=DIRECT_GEOMETRIES, rounds: int = ROUNDS) -> Dict[str, Dict[str, float]]:
    """Median seconds of one forward by the direct loops and by im2col and the product (the columns not kept,
    as a cfg network runs it), per geometry ("C-F-side"), alternating the two round by round."""
    from ..fast import conv_direct
    g = np.random.default_rng(0)
    out: Dict[str, Dict[str, float]] = {}
    before = conv_direct._max_taps
    conv_direct.set_max_taps(0)              # conv2d_forward takes the product path while this measures
    try:
        for c, f, side in geometries:
            out[_geometry_name(c, f, side)] = _time_direct(g, c, f, side, rounds)
    finally:
        conv_direct.set_max_taps(before)
    return out


def _geometry_name(c: int, f: int, side: int) -> str:
    return f"{c}-{f}-{side}"


def _time_direct(g: np.random.Generator, c: int, f: int, side: int, rounds: int) -> Dict[str, float]:
    """Median seconds of a C→F 3×3 forward on a side×side map, batch 1: {"direct": .., "product": ..}."""
    from ..functional import conv
    from ..fast import conv_direct
    x = g.standard_normal((1, c, side, side)).astype(np.float32)
    w = g.standard_normal((f, c, 3, 3)).astype(np.float32)
    geo = conv.conv_geometry(x.shape, w.shape, 1, 1)
    paths = {"direct": lambda: conv_direct.conv2d_direct(x, w, geo),
             "product": lambda: conv.conv2d_forward(x, w, None, 1, 1, keep_cols=False)}
    times: Dict[str, list] = {k: [] for k in paths}
    for run in paths.values():          # warm up: the kernel loads, the product's plan is made
        run()
        run()
    for r in range(rounds):
        for k in (tuple(paths) if r % 2 == 0 else tuple(paths)[::-1]):
            t0 = time.perf_counter()
            for _ in range(3):
                paths[k]()
            times[k].append((time.perf_counter() - t0) / 3)
    return {k: float(np.median(v)) for k, v in times.items()}


def direct_conv_taps() -> Dict[str, object]:
    """The largest tap count (C·kh·kw) the direct loops serve with the BLAS library in use, and why:
    {"max_taps", "reason", "seconds" (when measured), "cached", "cache"}. On a cache miss, times
    ``DIRECT_GEOMETRIES`` both ways (``measure_direct``, about 0.1 s): the largest geometry whose loops beat the
    product by more than ``MARGIN`` sets it (``conv_direct.MAX_TAPS`` when it is the largest), 0 when none does."""
    from . import blas
    from . import jit as _numba
    from ..fast import conv_direct
    if not env_flag("DELTAPROP_CALIBRATE", True):
        return {"max_taps": 0, "reason": "DELTAPROP_CALIBRATE=0: no measurement, the product path"}
    if not _numba.enabled():
        return {"max_taps": 0, "reason": "numba is off: the loops need it"}
    library = blas.ensure()
    key = dict(machine_key(), library=library, kernels=conv_direct.KERNELS)
    kid = _key_id(key)
    path = direct_conv_path()
    entries = _read_cache(path, "max_taps", range(conv_direct.MAX_TAPS + 1))
    hit = entries.get(kid)
    if hit is not None:
        return dict(hit, cached=True, cache=str(path))
    t0 = time.perf_counter()
    seconds = measure_direct()
    taps = {_geometry_name(c, f, side): c * 3 * 3 for c, f, side in DIRECT_GEOMETRIES}
    wins = [taps[k] for k, v in seconds.items() if v["direct"] < v["product"] * (1 - MARGIN)]
    top = max(taps.values())
    limit = 0 if not wins else conv_direct.MAX_TAPS if max(wins) == top else max(wins)
    detail = "; ".join(f"{k}: loops {v['direct'] * 1e3:.2f} ms, product {v['product'] * 1e3:.2f} ms"
                       for k, v in seconds.items())
    entry = {"max_taps": limit, "seconds": seconds, "library": library,
             "reason": f"measured with {library}: {detail} (loops for up to {limit} taps)", "key": key}
    return _store(path, entries, kid, entry, t0)
