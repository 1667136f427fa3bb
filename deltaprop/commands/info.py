"""``deltaprop info``: what this machine runs the engine with and why: the CPU, the BLAS library of the products
(and the calibration that chose it for ``DELTAPROP_BLAS=auto``), the registered tunables (the direct convolution
loops), numba and its threads, the OpenMP wait policy, the malloc tuning, every ``DELTAPROP_*`` setting in effect,
and each fast variant registered with ``deltaprop.dispatch`` with its on/off state (docs/runtime.md)."""
from __future__ import annotations

import argparse
import json
from typing import Dict, List, Tuple


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "info", help="the BLAS library, threads, calibration, settings and variants this machine uses, and why",
        description="Print the CPU, the library running the matrix products and how it was chosen (the per-machine "
                    "calibration of DELTAPROP_BLAS=auto, with its numbers), the direct convolution loops' "
                    "calibration, numba's threading layer and thread count, the OpenMP wait policy, the malloc "
                    "tuning, every DELTAPROP_* setting in effect and the registered fast variants.")
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


def _variants() -> List[Dict[str, object]]:
    from .. import dispatch
    return [{"key": v.key, "on": dispatch.enabled(v.key), "priority": v.priority,
             "exact": v.exact} for v in dispatch.variants()]


def gather(recalibrate: bool = False) -> Dict[str, object]:
    """Everything ``deltaprop info`` prints, as one dict: what this process's ``tune()`` chose (the command line
    runs it before every command; run here when it has not, or again with ``recalibrate``, which measures anew)."""
    from ..runtime import calibrate
    from ..runtime import jit
    info = (None if recalibrate else calibrate.last()) or calibrate.tune(recalibrate=recalibrate)
    choice = info.get("choice", {})
    direct = info.get("tunables", {}).get("direct_conv", {})
    return dict(calibrate.describe_machine(), **{
        "blas": info["backend"], "blas_setting": info["setting"],
        "why": choice.get("reason"), "calibration_seconds": choice.get("seconds"),
        "calibration_cached": choice.get("cached"), "cache": choice.get("cache") or str(calibrate.cache_path()),
        "mkl_threading": info.get("mkl_threading"), "mkl_error": info.get("mkl_error"),
        "numba": jit.numba_module().__version__ if jit.enabled() else "off",
        "threads": info.get("threads", {}), "malloc_tuned": info.get("malloc_tuned"),
        "loaded_libraries": _libraries(),
        "direct_conv_max_taps": direct.get("max_taps"), "direct_conv_why": direct.get("reason"),
        "tunables": info.get("tunables", {}), "settings": info.get("settings", []),
        "unknown_settings": info.get("unknown_settings", []), "variants": _variants(),
        "recalibrated": info.get("recalibrated") or None})


def _rows(out: Dict[str, object]) -> List[Tuple[str, str]]:
    t = out["threads"]
    secs = out["calibration_seconds"]
    direct = out["tunables"].get("direct_conv", {})
    rows = [("CPU", f"{out['cpu']} ({out['cores']} usable cores)"),
            ("NumPy", f"{out['numpy']}, {out['numpy_blas']}"),
            ("products", f"{'Intel oneMKL' if out['blas'] == 'mkl' else 'NumPy (its own BLAS)'} "
                         f"(DELTAPROP_BLAS={out['blas_setting']})"),
            ("why", out["why"] or "-"),
            ("calibration", ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in secs.items()) + (
                " (cached)" if out["calibration_cached"] else " (measured now)") if secs else "-"),
            ("cache", out["cache"])]
    if direct:
        rows += [("direct conv", f"loops for layers of up to {direct['max_taps']} taps on large maps"
                                 + (" (cached)" if direct.get("cached") else "")),
                 ("why", direct.get("reason") or "-")]
    for name, record in out["tunables"].items():
        if name != "direct_conv":
            rows.append((name, str(record.get("reason", record))))
    rows += [("MKL threading", out["mkl_threading"] or "-"),
             ("numba", out["numba"]),
             ("threads", f"design {t.get('design')}, numba layer {t.get('numba_layer', '-')}, "
                         f"{t.get('numba_threads', '-')} threads"),
             ("wait policy", t.get("wait_policy", "-")),
             ("BLAS release", t.get("openblas_release", "- (not the OpenBLAS + numba design)")),
             ("malloc tuned", "yes" if out["malloc_tuned"] else "no (DELTAPROP_MALLOC=0, or not glibc)")]
    rows += [("library", lib) for lib in out["loaded_libraries"]]
    rows += [("setting", f"{s['name']}={_shown(s['value'])}" + ("" if s["set"] else " (default)"))
             for s in out["settings"]]
    rows += [("unknown", f"{name} is set but is not a deltaprop setting (docs/runtime.md lists them)")
             for name in out["unknown_settings"]]
    rows += [("variant", f"{v['key']}: {'on' if v['on'] else 'off'}") for v in out["variants"]]
    return rows


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def run(args) -> int:
    out = gather(recalibrate=args.recalibrate)
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    for k, v in _rows(out):
        print(f"{k:>14}: {v}")
    return 0
