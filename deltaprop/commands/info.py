"""``deltaprop info``: what this machine runs the engine with and why: the CPU, the BLAS library of the products
(and the calibration that chose it for ``DELTAPROP_BLAS=auto``), whether few-tap convolutions on large maps run
the direct loops (calibrated too), numba and its threading layer, the OpenMP wait policy, and the malloc tuning
(docs/core.md, "One pool of threads")."""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info", help="the BLAS library, threads and calibration this machine uses, and why",
        description="Print the CPU, the library running the matrix products and how it was chosen (the per-machine "
                    "calibration of DELTAPROP_BLAS=auto, with its numbers), numba's threading layer and thread "
                    "count, the OpenMP wait policy and the malloc tuning.")
    p.add_argument("--recalibrate", action="store_true",
                   help="forget the cached choices (BLAS library, direct convolution loops) and measure again")
    p.add_argument("--json", action="store_true", help="print everything as one JSON object")
    return p


def _libraries() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [f"{d.get('internal_api')} {d.get('version')} ({d.get('user_api')}, {d.get('num_threads')} threads"
            + (f", {d['threading_layer']}" if d.get("threading_layer") else "") + ")" for d in threadpool_info()]


def run(args) -> int:
    import numpy as np
    from .. import tune
    from ..runtime import calibrate
    from ..runtime import jit as _numba
    forgot = calibrate.forget() if args.recalibrate else False
    info = tune()
    choice = info.get("choice", {})
    direct = calibrate.direct_conv_taps()
    t = info.get("threads", {})
    out = {"cpu": calibrate.cpu_model(), "cores": calibrate.usable_cores(), "numpy": np.__version__,
           "numpy_blas": calibrate._numpy_blas(), "blas": info["backend"], "blas_setting": info["setting"],
           "why": choice.get("reason"), "calibration_seconds": choice.get("seconds"),
           "calibration_cached": choice.get("cached"), "cache": choice.get("cache") or str(calibrate.cache_path()),
           "mkl_threading": info.get("mkl_threading"), "mkl_error": info.get("mkl_error"),
           "numba": _numba.numba_module().__version__ if _numba.enabled() else "off",
           "threads": t, "malloc_tuned": info.get("malloc_tuned"), "loaded_libraries": _libraries(),
           "direct_conv_max_taps": direct["max_taps"], "direct_conv_why": direct["reason"],
           "recalibrated": forgot or None}
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    secs = out["calibration_seconds"]
    rows = [("CPU", f"{out['cpu']} ({out['cores']} usable cores)"),
            ("NumPy", f"{out['numpy']}, {out['numpy_blas']}"),
            ("products", f"{'Intel oneMKL' if out['blas'] == 'mkl' else 'NumPy (its own BLAS)'} "
                         f"(DELTAPROP_BLAS={out['blas_setting']})"),
            ("why", out["why"] or "-"),
            ("calibration", ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in secs.items()) + (
                " (cached)" if out["calibration_cached"] else " (measured now)") if secs else "-"),
            ("cache", out["cache"]),
            ("direct conv", f"loops for layers of up to {direct['max_taps']} taps on large maps"
                            + (" (cached)" if direct.get("cached") else "")),
            ("why", direct["reason"]),
            ("MKL threading", out["mkl_threading"] or "-"),
            ("numba", out["numba"]),
            ("threads", f"design {t.get('design')}, numba layer {t.get('numba_layer', '-')}, "
                        f"{t.get('numba_threads', '-')} threads"),
            ("wait policy", t.get("wait_policy", "-")),
            ("BLAS release", t.get("openblas_release", "- (not the OpenBLAS + numba design)")),
            ("malloc tuned", "yes" if out["malloc_tuned"] else "no (DELTAPROP_MALLOC=0, or not glibc)")]
    rows += [("library", lib) for lib in out["loaded_libraries"]]
    for k, v in rows:
        print(f"{k:>14}: {v}")
    return 0
