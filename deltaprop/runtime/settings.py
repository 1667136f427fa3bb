"""Every ``DELTAPROP_*`` environment variable deltaprop reads, in one table: its name, type, default, allowed values
and what it does (docs/runtime.md prints the same table; tests/test_settings.py holds the two and the source equal).

``get(name)`` reads a variable and validates it against its row: unset or empty gives the row's default, a bad value
a ``ConfigError`` naming the variable and what it takes (``DELTAPROP_BLAS='openblas': expected one of auto, mkl,
numpy``). A name that is not in the table is a programming error (``UnknownSetting``). Each variable is read where
its row says ("read"): once at import for the sizes that shape code paths, at first use or by ``deltaprop.tune()``
for the machine's choices, each time for paths; nothing else in the package reads ``os.environ`` for a
``DELTAPROP_*`` name.

``env_int``, ``env_flag``, ``env_choice`` and ``env_path`` are the older accessors, kept for their call sites: they
consult the same row, and a call whose default or values disagree with the table is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError

KINDS = ("int", "flag", "choice", "path")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
PREFIX = "DELTAPROP_"


class UnknownSetting(LookupError):
    """A ``DELTAPROP_*`` name that is not in ``TABLE``, or read as another type than its row's (a bug in deltaprop,
    not a user's mistake)."""


@dataclass(frozen=True)
class Setting:
    """One row of the table. ``default`` None: unset leaves the choice to the caller, as ``shown`` says."""
    name: str
    kind: str                      # one of KINDS
    default: Any
    does: str                      # what it does (one sentence of docs/runtime.md)
    read: str                      # when deltaprop reads it
    choices: Tuple[str, ...] = ()  # kind "choice": the allowed values, as returned
    minimum: int = 0               # kind "int": the smallest value allowed
    shown: str = ""                # the default as docs/runtime.md shows it, where ``default`` alone does not say
    test_only: bool = False        # read by the test suite only

    def takes(self) -> str:
        """What a value may be, as the error message and the doc table say it."""
        if self.kind == "int":
            return f"a whole number of at least {self.minimum}"
        if self.kind == "flag":
            return "1 or 0 (also true/false, yes/no, on/off)"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return "a path (~ expanded)"

    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if self.kind == "flag":
            return "1" if self.default else "0"
        return "unset" if self.default is None else str(self.default)

    def parse(self, raw: str) -> Any:
        """The value of ``raw`` (already stripped, not empty), or a ``ConfigError`` naming the variable."""
        if self.kind == "int":
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{self.name}={raw!r}: expected a whole number") from None
            if value < self.minimum:
                raise ConfigError(f"{self.name}={raw!r}: expected a whole number of at least {self.minimum}")
            return value
        if self.kind == "flag":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ConfigError(f"{self.name}={raw!r}: expected 1 or 0 (also true/false, yes/no, on/off)")
        if self.kind == "choice":
            for choice in self.choices:
                if raw.lower() == choice.lower():
                    return choice
            raise ConfigError(f"{self.name}={raw!r}: expected one of {', '.join(self.choices)}")
        return Path(raw).expanduser()


_FIRST_USE = "first product or parallel kernel, or deltaprop.tune()"

#: Every DELTAPROP_* variable: the engine's alphabetically, then the test suite's.
TABLE: Tuple[Setting, ...] = (
    Setting("DELTAPROP_BLAS", "choice", "auto", choices=("auto", "mkl", "numpy"), read=_FIRST_USE,
            does="the library of the matrix products: `auto` this machine's measured choice (NumPy's own BLAS "
                 "until `deltaprop.tune()` has measured), `mkl` Intel oneMKL (an error names the problem when it "
                 "does not load), `numpy` NumPy's own BLAS"),
    Setting("DELTAPROP_BLAS_THREADS", "int", None, read="when `deltaprop train` starts",
            shown="1 with `--cfg`, else the library's own count",
            does="threads of the matrix products during `deltaprop train` (`--threads` wins; 0: the library's "
                 "own count; needs threadpoolctl)"),
    Setting("DELTAPROP_CACHE_DIR", "path", None, read="each time a calibration cache is read or written",
            shown="`$XDG_CACHE_HOME/deltaprop` (`~/.cache/deltaprop`)",
            does="the folder of the calibration caches (`blas.json`, `direct_conv.json`)"),
    Setting("DELTAPROP_CALIBRATE", "flag", True, read=_FIRST_USE,
            does="`0`: nothing is measured or cached; `DELTAPROP_BLAS=auto` means NumPy's BLAS and "
                 "`DELTAPROP_CONV_DIRECT=auto` the product path (the test suite sets it)"),
    Setting("DELTAPROP_CONV_DIRECT", "choice", "auto", choices=("auto", "on", "off"),
            read="first convolution the direct loops could serve, or deltaprop.tune()",
            does="few-tap convolutions on large maps by the direct loops (numba): `auto` as measured on this "
                 "machine and library, `on` always, `off` never"),
    Setting("DELTAPROP_DARKNET_BUDGET", "int", 4 * 2 ** 30, minimum=1, shown="4294967296 (4 GiB)",
            read="at import of `deltaprop.darknet.network`",
            does="bytes a Darknet network may plan for (parameters, activations, workspace; docs/darknet.md)"),
    Setting("DELTAPROP_DATA", "path", None, read="each time a data set is looked for",
            does="where `deltaprop.data` looks for data sets, after an explicit path (docs/training.md)"),
    Setting("DELTAPROP_DIST_TIMEOUT", "int", 300, minimum=1, read="when a communicator is made",
            does="seconds a rank waits for the others in a collective before the job is ended "
                 "(docs/distributed.md)"),
    Setting("DELTAPROP_MALLOC", "flag", True, read=_FIRST_USE,
            does="`0` leaves glibc's malloc thresholds alone (by default freed memory is kept for reuse)"),
    Setting("DELTAPROP_MAX_IMAGE_PIXELS", "int", 100_000_000, minimum=1, shown="100000000 (10000×10000)",
            read="each time a picture is opened",
            does="pixels a picture may have; a larger one is refused, naming the file, before a pixel is decoded"),
    Setting("DELTAPROP_NUMBA", "flag", True, read="first time a kernel asks for numba",
            does="`0` runs the NumPy path even where numba is installed"),
    Setting("DELTAPROP_OPENBLAS_RELEASE", "flag", True, read="when the threads start, and before each split pass",
            does="`0` leaves NumPy's OpenBLAS's threads spinning after a product (by default they are stopped "
                 "before large parallel kernels and large split passes)"),
    Setting("DELTAPROP_PARALLEL_MIN", "int", 1 << 15, read="at import",
            does="elements below which a parallel numba kernel runs its serial build"),
    Setting("DELTAPROP_SPLIT", "flag", True, read="at import",
            does="`0` keeps the NumPy path's passes on one thread (no split over the batch)"),
    Setting("DELTAPROP_SPLIT_MIN", "int", 1 << 18, read="at import",
            does="elements from which the NumPy path splits a pass over the batch"),
    Setting("DELTAPROP_SYNC_BN", "flag", False, read="when a `DataParallel` model is made",
            does="`1` turns every batch norm of a `DataParallel` model into its synchronised twin "
                 "(docs/distributed.md)"),
    Setting("DELTAPROP_CLI_FUZZ", "int", 0, read="by tests/test_cli_fuzz.py", test_only=True,
            does="test suite only: N random command lines per subcommand instead of the fixed examples"),
    Setting("DELTAPROP_CLI_FUZZ_SHOW", "flag", False, read="by tests/test_cli_fuzz.py", test_only=True,
            does="test suite only: print each fuzzed command line"),
    Setting("DELTAPROP_REQUIRE_TORCH", "flag", False, read="by tests/conftest.py", test_only=True,
            does="test suite only: a missing torch or a skipped PyTorch parity test fails the run (.ci/run)"),
)
SETTINGS: Dict[str, Setting] = {s.name: s for s in TABLE}


def setting(name: str) -> Setting:
    """The row of ``name``; ``UnknownSetting`` for a name the table lacks."""
    try:
        return SETTINGS[name]
    except KeyError:
        raise UnknownSetting(f"{name} is not a deltaprop setting (add its row to "
                             f"deltaprop/runtime/settings.py TABLE and docs/runtime.md)") from None


def raw(name: str) -> Optional[str]:
    """The variable's text as set (stripped), or None when unset or empty."""
    setting(name)
    text = os.environ.get(name, "").strip()
    return text or None


def get(name: str) -> Any:
    """The value of ``name`` from the environment, validated by its row; the row's default when unset or empty."""
    row = setting(name)
    text = os.environ.get(name, "").strip()
    return row.parse(text) if text else row.default


def in_effect() -> List[Dict[str, Any]]:
    """Every setting of the engine (not the test-only ones) with its value and whether it was set: for ``deltaprop
    info``. A bad value raises the ``ConfigError`` naming it."""
    return [{"name": s.name, "value": get(s.name), "set": raw(s.name) is not None, "default": s.default_text()}
            for s in TABLE if not s.test_only]


def unknown_in_environment() -> List[str]:
    """``DELTAPROP_*`` variables set in the environment that are not settings (a misspelt name does nothing)."""
    return sorted(k for k in os.environ if k.startswith(PREFIX) and k not in SETTINGS)


def markdown_table() -> str:
    """The table as docs/runtime.md shows it."""
    lines = ["| variable | takes | default | read | what it does |", "|---|---|---|---|---|"]
    for s in TABLE:
        lines.append(f"| `{s.name}` | {s.takes()} | {s.default_text()} | {s.read} | {s.does} |")
    return "\n".join(lines)


# --- the older accessors: the same rows, refused when the call disagrees with the table -----------------------

def _row(name: str, kind: str) -> Setting:
    row = setting(name)
    if row.kind != kind:
        raise UnknownSetting(f"{name} is a {row.kind} setting, read here as {kind}")
    return row


def _caller_default(row: Setting, default: Any) -> Any:
    """The default of a call: the table's (the call must agree), or the caller's where the table leaves it open."""
    if row.default is None:
        return default
    if default != row.default:
        raise UnknownSetting(f"{row.name}: this call's default {default!r} differs from the table's {row.default!r}")
    return row.default


def env_int(name: str, default: Optional[int], minimum: int = 0) -> Optional[int]:
    """``get(name)`` for a whole-number setting; ``minimum`` may be stricter than the table's for this call."""
    row = _row(name, "int")
    text = raw(name)
    if text is None:
        return _caller_default(row, default)
    value = row.parse(text)
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: expected a whole number of at least {minimum}")
    return value


def env_flag(name: str, default: bool) -> bool:
    """``get(name)`` for an on/off switch."""
    row = _row(name, "flag")
    text = raw(name)
    return row.parse(text) if text is not None else _caller_default(row, default)


def env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """``get(name)`` for a setting with named values (``choices`` must be the table's)."""
    row = _row(name, "choice")
    if tuple(choices) != row.choices:
        raise UnknownSetting(f"{name}: this call's values {tuple(choices)} differ from the table's {row.choices}")
    text = raw(name)
    return row.parse(text) if text is not None else _caller_default(row, default)


def env_path(name: str) -> Optional[Path]:
    """``get(name)`` for a folder or file: the path (``~`` expanded), or None when unset or empty."""
    _row(name, "path")
    return get(name)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deltaprop``, or ``~/.cache/deltaprop`` when XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deltaprop"


def cache_dir() -> Path:
    """Where the calibration caches live: ``$DELTAPROP_CACHE_DIR``, else ``user_cache_dir()``."""
    return get("DELTAPROP_CACHE_DIR") or user_cache_dir()
