"""``deltaprop.tune()``: make the process-wide choices the engine runs fastest with, measuring what this machine
has not measured yet. The ``deltaprop`` command runs it before every subcommand and ``deltaprop info`` prints what
it chose; nothing else measures (the first product of a process that did not tune takes the cached choices, else
the defaults: ``blas.auto_choice``, and each tunable's own).

``tune`` does, in order:

1. every ``DELTAPROP_*`` setting is validated (a bad value stops here, naming the variable);
2. glibc keeps freed memory for reuse (``malloc``);
3. the library of the products: ``DELTAPROP_BLAS=auto`` takes the cached choice, or on a miss times both
   libraries (``measure``: the products a training step makes, each followed by the numba kernels a step runs
   between them, in alternating rounds; the faster by more than ``MARGIN`` wins, else NumPy's own) and caches it
   in ``blas.json`` (``runtime.cache``). It takes 0.2–0.6 s (``deltaprop info`` prints the numbers). The work
   timed is registered by ``deltaprop/fast/tune_blas.py`` (``register_blas_workload``), so that the runtime
   imports no kernel;
4. the threads for that library (``runtime.threads``);
5. every registered tunable (``register_tunable``: the direct convolution loops' ``direct_conv.json``, by
   ``deltaprop/fast/tune_conv_direct.py``), cached the same way.

``DELTAPROP_CALIBRATE=0`` measures and caches nothing (``auto`` then means NumPy's BLAS; the test suite uses it so
that no test depends on the machine's choice). ``forget`` removes every cache (``deltaprop info --recalibrate``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from . import blas, cache, machine, malloc, settings, threads, tunables
from .tunables import register_tunable  # noqa: F401  the registry's entry point, beside tune()

MARGIN = 0.05            # MKL must be this much faster to be chosen over NumPy's own BLAS (and loops over products)
ROUNDS = 6               # alternating rounds per library
BUDGET_S = 0.6           # measuring stops after this many seconds (at least 2 rounds each)

#: ``make()`` returns ``step()``, one pass of the work timed per library (``register_blas_workload``)
_workload: Optional[Callable[[], Callable[[], None]]] = None
_last: Optional[Dict[str, object]] = None    # what the last ``tune()`` chose


def register_blas_workload(make: Callable[[], Callable[[], None]]) -> None:
    """Register the work ``measure`` times: ``make()`` builds its operands and returns ``step()``, which runs one
    pass of it through ``blas.matmul`` and the kernels in between."""
    global _workload
    _workload = make


def cache_path() -> Path:
    """Where the BLAS choice is kept: ``blas.json`` in ``$DELTAPROP_CACHE_DIR`` or ``$XDG_CACHE_HOME/deltaprop``."""
    return blas.cache_path()


def time_alternating(paths: Dict[str, Callable[[], None]], rounds: int = ROUNDS, budget_s: Optional[float] = None,
                     prepare: Callable[[str], None] = lambda name: None) -> Dict[str, float]:
    """Median seconds of one call of each of ``paths`` ({name: call}), after two warm-up calls each, timed three
    calls at a time in alternating rounds (the order reversed every other round, so that neither path always runs
    on a machine warmed by the other); ``prepare(name)`` runs, untimed, before each of the path's turns. Stops
    after ``budget_s`` seconds once two rounds are done."""
    names = tuple(paths)
    times: Dict[str, list] = {name: [] for name in names}
    for name in names:                       # warm up: wrappers and kernels compile, plans are made
        prepare(name)
        paths[name]()
        paths[name]()
    t_start = time.perf_counter()
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            prepare(name)
            t0 = time.perf_counter()
            for _ in range(3):
                paths[name]()
            times[name].append((time.perf_counter() - t0) / 3)
        if budget_s is not None and r >= 1 and time.perf_counter() - t_start > budget_s:
            break
    return {name: float(np.median(v)) for name, v in times.items()}


def measure(libraries=("numpy", "mkl"), rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> Dict[str, float]:
    """Median seconds of one pass of the registered workload per library (``time_alternating``). Leaves ``blas``
    on the last library timed; the caller puts the chosen one in use."""
    if _workload is None:
        raise RuntimeError("no calibration workload is registered (import deltaprop, which registers "
                           "deltaprop.fast.tune_blas)")
    step = _workload()
    return time_alternating({lib: step for lib in libraries}, rounds, budget_s, prepare=blas.use)


def choose_blas(measure_now: bool = True) -> Dict[str, object]:
    """The library for ``auto`` and why: {"choice", "reason", "seconds" (per library, when measured),
    "cached", "cache", "key"}. ``blas.auto_choice()``; on a cache miss, with ``measure_now``, the measurement
    (cached)."""
    record = blas.auto_choice()
    if not (measure_now and record.get("uncalibrated")) or _workload is None:
        return record
    threads.start_for(None)                  # the pools exist before MKL loads, safe beside either library
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
    return cache.store(cache_path(), cache.machine_key(), entry, "choice", blas.LIBRARIES, t0)


def tune(recalibrate: bool = False) -> Dict[str, object]:
    """Make every process-wide choice now (see the module's docstring); with ``recalibrate``, forget the caches
    first and measure again. Returns what was chosen: ``blas.info()`` with ``malloc_tuned``, ``tunables`` (each
    tunable's record), ``settings`` (every setting in effect), ``unknown_settings`` (``DELTAPROP_*`` variables
    set that deltaprop does not read) and ``recalibrated`` (a cache was removed)."""
    global _last
    in_effect = settings.in_effect()
    forgot = forget() if recalibrate else False
    malloc.tune()
    if blas.setting() == "auto" and (recalibrate or not blas.ready() or blas.choice().get("uncalibrated")):
        blas.choose(choose_blas(measure_now=True))
    else:
        blas.ensure()                        # a library chosen in this process (measured, cached or set) stays
    chosen = tunables.choose_all(measure=True)
    _last = dict(blas.info(), malloc_tuned=malloc.applied, tunables=chosen, settings=in_effect,
                 unknown_settings=settings.unknown_in_environment(), recalibrated=forgot)
    return dict(_last)


def last() -> Optional[Dict[str, object]]:
    """What the last ``tune()`` of this process chose (None before the first): ``deltaprop info`` prints the
    choices the command line's own ``tune()`` made, measurements included."""
    return None if _last is None else dict(_last)


def forget() -> bool:
    """Remove every calibration cache (the BLAS choice and each tunable's) and the tunables' in-process choices:
    the next ``tune()`` measures again. True when there was a cache file."""
    found = cache.remove(cache_path())
    return tunables.forget_all() or found


def describe_machine() -> Dict[str, object]:
    """The CPU, its usable cores and NumPy's BLAS as built (``deltaprop info``'s first lines)."""
    return {"cpu": machine.cpu_model(), "cores": machine.usable_cores(), "numpy": np.__version__,
            "numpy_blas": machine.numpy_blas()}
