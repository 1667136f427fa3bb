"""Darknet ``.cfg`` files: parse into sections, check every key against Darknet's own, write them back.

The syntax is Darknet's (``parser.c``/``option_list.c``): whitespace anywhere on a line is dropped,
lines starting with ``#`` or ``;`` are comments, ``[name]`` opens a section and ``key=value`` adds an
option. Unlike Darknet, nothing is silently ignored: a malformed line, an option before any section, a
duplicate or unknown key and a value of the wrong kind are ``ConfigError`` naming the file, the line and
the key. Sections Darknet knows but deltaprop does not build (``[region]``, ...) parse; building them is
a ``ConfigError`` naming the section, file and line.
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ..errors import ConfigError

#: Keys every layer section accepts (parse_network_cfg reads them for all layers).
COMMON_LAYER_KEYS = {"truth", "onlyforward", "stopbackward", "dontsave", "dontload", "numload",
                     "dontloadscales", "learning_rate", "smooth"}

#: [net] keys of pjreddie's parse_net_options (plus ``jitter``, and AlexeyAB's ``flip``: 0 turns off the
#: detector's horizontal-flip augmentation, deltaprop.data.augment.Augment.from_cfg).
NET_KEYS = {"batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "notruth", "random",
            "adam", "B1", "B2", "eps", "height", "width", "channels", "inputs", "max_crop", "min_crop",
            "max_ratio", "min_ratio", "center", "clip", "angle", "aspect", "saturation", "exposure", "hue",
            "policy", "burn_in", "power", "step", "scale", "gamma", "steps", "scales", "max_batches", "jitter",
            "flip"}

#: Per-section keys of Darknet's parsers, for the sections deltaprop builds.
SECTION_KEYS: Dict[str, set] = {
    "net": NET_KEYS,
    "convolutional": {"filters", "size", "stride", "pad", "padding", "groups", "activation",
                      "batch_normalize", "binary", "xnor", "flipped", "dot"},
    "connected": {"output", "activation", "batch_normalize"},
    "maxpool": {"size", "stride", "padding"},
    "avgpool": set(),
    "softmax": {"groups", "temperature", "tree", "spatial", "noloss"},
    "cost": {"type", "scale", "ratio", "noobject_scale", "thresh"},
    "logistic": set(),
    "dropout": {"probability"},
    "route": {"layers"},
    "shortcut": {"from", "activation", "alpha", "beta"},
    "upsample": {"stride", "scale"},
    "yolo": {"mask", "anchors", "classes", "num", "jitter", "ignore_thresh", "truth_thresh", "random",
             "max", "map"},
}
for _k, _v in SECTION_KEYS.items():
    if _k != "net":
        _v |= COMMON_LAYER_KEYS

#: Keys of Darknet's [region] (parse_region), so that yolov2 cfgs parse and then fail clearly at build.
REGION_KEYS = {"coords", "classes", "num", "log", "sqrt", "softmax", "background", "max", "jitter", "rescore",
               "thresh", "classfix", "absolute", "random", "coord_scale", "object_scale", "noobject_scale",
               "mask_scale", "class_scale", "bias_match", "tree", "map", "anchors"} | COMMON_LAYER_KEYS

#: Sections Darknet (or its AlexeyAB fork) knows but deltaprop does not build.
UNSUPPORTED_SECTIONS = {"region", "detection", "local", "deconvolutional", "deconv", "crnn", "rnn", "gru",
                        "lstm", "crop", "batchnorm", "normalization", "lrn", "reorg", "l2norm", "activation",
                        "iseg", "xnor", "conv_lstm", "sam", "scale_channels", "gaussian_yolo", "contrastive",
                        "implicit_add", "implicit_mul", "empty", "silence", "reorg3d", "local_avgpool"}
#: Darknet's other names for supported sections (string_to_layer_type).
SECTION_ALIASES = {"network": "net", "conv": "convolutional", "conn": "connected", "avg": "avgpool",
                   "max": "maxpool", "soft": "softmax"}

_INT_LIMIT = 2 ** 31  # Darknet stores these in C ints


@dataclass
class Option:
    """One ``key=value`` line: the value with its whitespace removed, and its 1-based line number."""
    key: str
    value: str
    line: int


@dataclass
class Section:
    """A ``[type]`` block: its options in file order, where it starts, and the file it came from."""
    type: str
    line: int
    file: str = "<text>"
    options: "OrderedDict[str, Option]" = field(default_factory=OrderedDict)

    # --- typed access: every error names file, line and key ---------------------------------
    def where(self, key: Optional[str] = None) -> str:
        """"file:line" of ``key`` in this section (of the section header when the key is absent or None)."""
        line = self.options[key].line if key in self.options else self.line
        return f"{self.file}:{line}"

    def error(self, key: Optional[str], msg: str) -> ConfigError:
        """A ConfigError that names the file, line, section and key: raise it."""
        k = f" key '{key}'" if key else ""
        return ConfigError(f"{self.where(key)}: [{self.type}]{k}: {msg}")

    def has(self, key: str) -> bool:
        """Whether the section sets ``key``."""
        return key in self.options

    def raw(self, key: str) -> Optional[str]:
        """The text of ``key`` as written, or None."""
        return self.options[key].value if key in self.options else None

    def get_int(self, key: str, default: Optional[int] = None, lo: Optional[int] = None,
                hi: Optional[int] = None) -> int:
        """``key`` as an integer in [lo, hi], ``default`` when absent; a ConfigError naming the key when it is
        missing without a default, not an integer or out of range."""
        v = self.raw(key)
        if v is None:
            if default is None:
                raise self.error(key, "required key is missing")
            return default
        out = _to_int(v)
        if out is None:
            raise self.error(key, f"expected an integer, got {v!r}")
        _check_range(self, key, out, lo, hi)
        return out

    def get_float(self, key: str, default: Optional[float] = None, lo: Optional[float] = None,
                  hi: Optional[float] = None) -> float:
        """``key`` as a finite number in [lo, hi], ``default`` when absent; a ConfigError as ``get_int``'s."""
        v = self.raw(key)
        if v is None:
            if default is None:
                raise self.error(key, "required key is missing")
            return float(default)
        out = _to_float(v)
        if out is None:
            raise self.error(key, f"expected a finite number, got {v!r}")
        _check_range(self, key, out, lo, hi)
        return out

    def get_str(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """``key``'s text, ``default`` when absent."""
        v = self.raw(key)
        return default if v is None else v

    def get_int_list(self, key: str, default: Optional[List[int]] = None) -> Optional[List[int]]:
        """``key`` as a comma-separated list of integers, ``default`` when absent."""
        return self._list(key, default, _to_int, "integers")

    def get_float_list(self, key: str, default: Optional[List[float]] = None) -> Optional[List[float]]:
        """``key`` as a comma-separated list of numbers, ``default`` when absent."""
        return self._list(key, default, _to_float, "numbers")

    def _list(self, key: str, default: Optional[list], parse: Callable[[str], Any], what: str) -> Optional[list]:
        """``key``'s comma-separated value, each item read by ``parse`` (None when it is not one of ``what``)."""
        v = self.raw(key)
        if v is None:
            return default
        out = [parse(t) for t in v.split(",")]
        if not v or any(t is None for t in out):
            raise self.error(key, f"expected a comma-separated list of {what}, got {v!r}")
        return out

    def values(self) -> "OrderedDict[str, str]":
        """The options as ``key -> value`` strings, in file order."""
        return OrderedDict((k, o.value) for k, o in self.options.items())


def supported_list() -> str:
    """The supported section types as "[net], [convolutional], ..." for error messages."""
    return ", ".join("[" + s + "]" for s in SECTION_KEYS)


def unsupported_error(sec: "Section") -> ConfigError:
    """The error for a Darknet section deltaprop does not build (e.g. yolov2's [region])."""
    return ConfigError(f"{sec.file}:{sec.line}: section [{sec.type}] is not supported by deltaprop "
                       f"(it builds {supported_list()})")


def _to_int(v: str) -> Optional[int]:
    try:
        out = int(v, 10)
    except ValueError:
        return None
    return out if -_INT_LIMIT < out < _INT_LIMIT else None


def _to_float(v: str) -> Optional[float]:
    try:
        out = float(v)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def _check_range(sec: Section, key: str, val, lo, hi) -> None:
    if lo is not None and val < lo:
        raise sec.error(key, f"must be ≥ {lo}, got {val}")
    if hi is not None and val > hi:
        raise sec.error(key, f"must be ≤ {hi}, got {val}")


# --- parsing --------------------------------------------------------------------------------

def parse_cfg_text(text: str, filename: str = "<text>") -> List[Section]:
    """Parse cfg text into sections; the first must be ``[net]`` (or ``[network]``)."""
    if not isinstance(text, str):
        raise ConfigError(f"{filename}: cfg text must be a str, got {type(text).__name__}")
    sections: List[Section] = []
    for lineno, raw_line in enumerate(text.splitlines(), start=1):
        line = "".join(raw_line.split())  # Darknet's strip(): every whitespace character goes
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if line[-1] != "]" or len(line) < 3:
                raise ConfigError(f"{filename}:{lineno}: malformed section header {raw_line.strip()!r} "
                                  f"(expected [name])")
            name = line[1:-1].lower()
            if not name.replace("_", "").isalnum():
                raise ConfigError(f"{filename}:{lineno}: malformed section header {raw_line.strip()!r}")
            name = SECTION_ALIASES.get(name, name)
            if name not in SECTION_KEYS and name not in UNSUPPORTED_SECTIONS:
                raise ConfigError(f"{filename}:{lineno}: section [{name}] is not a Darknet section (deltaprop "
                                  f"builds {supported_list()})")
            if name == "net" and sections:
                raise ConfigError(f"{filename}:{lineno}: [net] must be the first section and appear once")
            if name != "net" and not sections:
                raise ConfigError(f"{filename}:{lineno}: the first section must be [net] or [network], "
                                  f"got [{name}]")
            sections.append(Section(name, lineno, filename))
            continue
        if "=" not in line:
            raise ConfigError(f"{filename}:{lineno}: malformed line {raw_line.strip()!r} (expected key=value)")
        key, value = line.split("=", 1)
        if not key:
            raise ConfigError(f"{filename}:{lineno}: malformed line {raw_line.strip()!r} (empty key)")
        if not sections:
            raise ConfigError(f"{filename}:{lineno}: key '{key}' appears before any section")
        sec = sections[-1]
        known = SECTION_KEYS.get(sec.type, REGION_KEYS if sec.type == "region" else None)
        if known is not None and key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{filename}:{lineno}: [{sec.type}] unknown key '{key}' (Darknet's keys here: {allowed})")
        if key in sec.options:
            raise ConfigError(f"{filename}:{lineno}: [{sec.type}] key '{key}' repeated (first on line "
                              f"{sec.options[key].line})")
        if value == "":
            raise ConfigError(f"{filename}:{lineno}: [{sec.type}] key '{key}' has no value")
        sec.options[key] = Option(key, value, lineno)
    if not sections:
        raise ConfigError(f"{filename}: no sections (a cfg starts with [net])")
    return sections


def parse_cfg(path: "os.PathLike[str] | str") -> List[Section]:
    """Parse a ``.cfg`` file (see ``parse_cfg_text``)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read cfg file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    return parse_cfg_text(text, path)


# --- writing --------------------------------------------------------------------------------

def format_value(v) -> str:
    """One option value as cfg text: ints as is, floats in their shortest exact form, lists comma-joined."""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(x) for x in v)
    return ", ".join(str(v).split(","))


def format_sections(blocks: Iterable[tuple], header: Sequence[str] = ()) -> str:
    """cfg text from ``(section_type, [(key, value), ...])`` pairs; ``header`` lines become comments."""
    out: List[str] = [f"# {h}" for h in header]
    for kind, items in blocks:
        if out:
            out.append("")
        out.append(f"[{kind}]")
        for k, v in items:
            out.append(f"{k}={format_value(v)}")
    return "\n".join(out) + "\n"

