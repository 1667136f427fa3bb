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
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

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

#: Per-section keys deltaprop implements, for the sections it builds (docs/darknet.md, "Every key of both forks").
SECTION_KEYS: Dict[str, set] = {
    "net": NET_KEYS,
    "convolutional": {"filters", "size", "stride", "pad", "padding", "groups", "activation",
                      "batch_normalize", "binary", "xnor", "flipped", "dot", "stream", "wait_stream"},
    "connected": {"output", "activation", "batch_normalize"},
    "maxpool": {"size", "stride", "padding", "maxpool_depth", "out_channels"},
    "avgpool": set(),
    "softmax": {"groups", "temperature", "tree", "spatial", "noloss"},
    "cost": {"type", "scale", "ratio", "noobject_scale", "noobj", "thresh"},
    "logistic": set(),
    "dropout": {"probability"},
    "route": {"layers", "groups", "group_id", "stream", "wait_stream"},
    "shortcut": {"from", "activation", "alpha", "beta"},
    "upsample": {"stride", "scale"},
    "yolo": {"mask", "anchors", "classes", "num", "jitter", "ignore_thresh", "truth_thresh", "random",
             "max", "map", "scale_x_y", "iou_loss", "iou_normalizer", "obj_normalizer", "cls_normalizer",
             "delta_normalizer", "max_delta", "iou_thresh", "iou_thresh_kind", "nms_kind", "beta_nms", "resize",
             "counters_per_class", "label_smooth_eps", "show_details"},
}
for _k, _v in SECTION_KEYS.items():
    if _k != "net":
        _v |= COMMON_LAYER_KEYS

#: Keys of Darknet's [region] (parse_region), so that yolov2 cfgs parse and then fail clearly at build.
REGION_KEYS = {"coords", "classes", "num", "log", "sqrt", "softmax", "background", "max", "jitter", "rescore",
               "thresh", "classfix", "absolute", "random", "coord_scale", "object_scale", "noobject_scale",
               "mask_scale", "class_scale", "bias_match", "tree", "map", "anchors", "focal_loss", "resize"} \
    | COMMON_LAYER_KEYS

#: Every key each fork's ``parser.c`` reads in the sections deltaprop builds (pjreddie f6afaabc, AlexeyAB
#: 59596d78; parse_network_cfg's per-layer keys included). A key of either fork that deltaprop does not implement
#: is refused by name (``unimplemented_key``), never ignored.
_PJ_LAYER = {"truth", "onlyforward", "stopbackward", "dontsave", "dontload", "numload", "dontloadscales",
             "learning_rate", "smooth"}
_AB_LAYER = {"stopbackward", "clip", "onlyforward", "dont_update", "burnin_update", "train_only_bn", "dontload",
             "dontloadscales", "learning_rate"}
PJREDDIE_KEYS: Dict[str, set] = {
    "net": {"batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "notruth", "random",
            "adam", "B1", "B2", "eps", "height", "width", "channels", "inputs", "max_crop", "min_crop",
            "max_ratio", "min_ratio", "center", "clip", "angle", "aspect", "saturation", "exposure", "hue",
            "policy", "burn_in", "power", "step", "scale", "steps", "scales", "gamma", "max_batches"},
    "convolutional": {"filters", "size", "stride", "pad", "padding", "groups", "activation", "batch_normalize",
                      "binary", "xnor", "flipped", "dot"} | _PJ_LAYER,
    "connected": {"output", "activation", "batch_normalize"} | _PJ_LAYER,
    "maxpool": {"stride", "size", "padding"} | _PJ_LAYER,
    "avgpool": set(_PJ_LAYER),
    "softmax": {"groups", "temperature", "tree", "spatial", "noloss"} | _PJ_LAYER,
    "cost": {"type", "scale", "ratio", "noobj", "thresh"} | _PJ_LAYER,
    "logistic": set(_PJ_LAYER),
    "dropout": {"probability"} | _PJ_LAYER,
    "route": {"layers"} | _PJ_LAYER,
    "shortcut": {"from", "activation", "alpha", "beta"} | _PJ_LAYER,
    "upsample": {"stride", "scale"} | _PJ_LAYER,
    "yolo": {"classes", "num", "mask", "max", "jitter", "ignore_thresh", "truth_thresh", "random", "map",
             "anchors"} | _PJ_LAYER,
}
ALEXEYAB_KEYS: Dict[str, set] = {
    "net": {"max_batches", "batch", "learning_rate", "learning_rate_min", "sgdr_cycle", "sgdr_mult", "momentum",
            "decay", "subdivisions", "time_steps", "track", "augment_speed", "sequential_subdivisions",
            "try_fix_nan", "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
            "num_sigmas_reject_badlabels", "ema_alpha", "use_cuda_graph", "loss_scale", "dynamic_minibatch",
            "optimized_memory", "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "height", "width",
            "channels", "inputs", "max_crop", "min_crop", "flip", "blur", "gaussian_noise", "mixup", "cutmix",
            "mosaic", "letter_box", "mosaic_bound", "contrastive", "contrastive_jit_flip", "contrastive_color",
            "unsupervised", "label_smooth_eps", "resize_step", "attention", "adversarial_lr", "max_chart_loss",
            "angle", "aspect", "saturation", "exposure", "hue", "power", "policy", "burn_in", "step", "scale",
            "steps", "scales", "seq_scales", "gamma", "show_receptive_field"},
    "convolutional": {"filters", "groups", "size", "stride", "stride_x", "stride_y", "dilation", "antialiasing",
                      "pad", "padding", "activation", "assisted_excitation", "share_index", "batch_normalize",
                      "cbn", "binary", "xnor", "bin_output", "sway", "rotate", "stretch", "stretch_sway",
                      "flipped", "dot", "angle", "grad_centr", "reverse", "coordconv", "stream",
                      "wait_stream"} | _AB_LAYER,
    "connected": {"output", "activation", "batch_normalize"} | _AB_LAYER,
    "maxpool": {"stride", "stride_x", "stride_y", "size", "padding", "maxpool_depth", "out_channels",
                "antialiasing", "maxpool_zero_nonmax"} | _AB_LAYER,
    "avgpool": set(_AB_LAYER),
    "softmax": {"groups", "temperature", "tree", "spatial", "noloss"} | _AB_LAYER,
    "cost": {"type", "scale", "ratio"} | _AB_LAYER,
    "dropout": {"probability", "dropblock", "dropblock_size_rel", "dropblock_size_abs"} | _AB_LAYER,
    "route": {"layers", "groups", "group_id", "stream", "wait_stream"} | _AB_LAYER,
    "shortcut": {"activation", "weights_type", "weights_normalization", "from"} | _AB_LAYER,
    "upsample": {"stride", "scale"} | _AB_LAYER,
    "yolo": {"classes", "num", "mask", "max", "show_details", "max_delta", "counters_per_class",
             "label_smooth_eps", "scale_x_y", "objectness_smooth", "new_coords", "iou_normalizer",
             "obj_normalizer", "cls_normalizer", "delta_normalizer", "iou_loss", "iou_thresh_kind", "beta_nms",
             "nms_kind", "jitter", "resize", "focal_loss", "ignore_thresh", "truth_thresh", "iou_thresh",
             "random", "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm",
             "embedding_layer", "map", "anchors"} | _AB_LAYER,
}
#: Keys deltaprop does not implement but accepts at the value that makes them do nothing (Darknet's default).
INERT_VALUES: Dict[Tuple[str, str], float] = {
    ("convolutional", "dilation"): 1, ("convolutional", "antialiasing"): 0, ("convolutional", "cbn"): 0,
    ("convolutional", "assisted_excitation"): 0, ("convolutional", "bin_output"): 0, ("convolutional", "sway"): 0,
    ("convolutional", "rotate"): 0, ("convolutional", "stretch"): 0, ("convolutional", "stretch_sway"): 0,
    ("convolutional", "grad_centr"): 0, ("convolutional", "coordconv"): 0, ("maxpool", "antialiasing"): 0,
    ("maxpool", "maxpool_zero_nonmax"): 0, ("dropout", "dropblock"): 0, ("yolo", "focal_loss"): 0,
    ("yolo", "objectness_smooth"): 0, ("yolo", "new_coords"): 0, ("net", "mosaic"): 0, ("net", "mixup"): 0,
    ("net", "cutmix"): 0, ("net", "blur"): 0, ("net", "gaussian_noise"): 0, ("net", "letter_box"): 0,
    ("net", "track"): 0, ("net", "contrastive"): 0, ("net", "unsupervised"): 0, ("net", "adversarial_lr"): 0,
    ("net", "label_smooth_eps"): 0, ("net", "ema_alpha"): 0, ("net", "equidistant_point"): 0,
    ("net", "badlabels_rejection_percentage"): 0, ("net", "num_sigmas_reject_badlabels"): 0,
    ("net", "show_receptive_field"): 0, ("net", "try_fix_nan"): 0, ("net", "use_cuda_graph"): 0,
    ("net", "dynamic_minibatch"): 0, ("net", "optimized_memory"): 0, ("net", "loss_scale"): 1,
    ("net", "attention"): 0, ("net", "weights_reject_freq"): 0, ("net", "sequential_subdivisions"): 0,
    ("net", "augment_speed"): 2, ("net", "max_chart_loss"): 20, ("net", "workspace_size_limit_MB"): 1024,
    ("net", "resize_step"): 32, ("net", "mosaic_bound"): 0, ("net", "contrastive_jit_flip"): 0,
    ("net", "contrastive_color"): 0, ("net", "sgdr_cycle"): 1000, ("net", "sgdr_mult"): 2,
    ("net", "learning_rate_min"): 0.00001, ("net", "seq_scales"): 1,
    ("shortcut", "weights_normalization"): 0, ("yolo", "embedding_layer"): 999999,
    **{(sec, k): 0 for sec in ALEXEYAB_KEYS if sec != "net" for k in ("clip", "dont_update", "burnin_update",
                                                                      "train_only_bn")},
}
#: String-valued keys accepted at their inert value.
INERT_STRINGS: Dict[Tuple[str, str], str] = {("shortcut", "weights_type"): "none",
                                             ("shortcut", "weights_normalization"): "none"}


def darknet_forks_of(section: str, key: str) -> List[str]:
    """Which forks' parsers read ``key`` in ``[section]``: a sublist of ["pjreddie", "AlexeyAB"]."""
    return [name for name, table in (("pjreddie", PJREDDIE_KEYS), ("AlexeyAB", ALEXEYAB_KEYS))
            if key in table.get(section, ())]


def is_inert(section: str, key: str, value: str) -> bool:
    """Whether ``key=value`` is a Darknet option at the value that makes it do nothing (``INERT_VALUES``)."""
    if (section, key) in INERT_STRINGS:
        return value == INERT_STRINGS[(section, key)]
    if (section, key) not in INERT_VALUES:
        return False
    v = _to_float(value)
    return v is not None and v == INERT_VALUES[(section, key)]


def alexeyab_only(section: str, key: str) -> bool:
    """A key only AlexeyAB's parser reads (its cfgs are that fork's: ``cfg_fork``)."""
    return darknet_forks_of(section, key) == ["AlexeyAB"]


def cfg_fork(sections: Sequence["Section"]) -> str:
    """The fork a cfg is written for: "alexeyab" when a layer sets a key only AlexeyAB's Darknet reads (``[route]
    groups``, ``[yolo] scale_x_y``, ``iou_loss``, ...) or an activation only it has, else "pjreddie". The [net]
    section does not decide: its AlexeyAB-only keys (``flip``, ``mosaic``, ...) set training and augmentation
    options, and a cfg of pjreddie's layers keeps pjreddie's numerics (its batch norm) whatever they say."""
    for sec in sections:
        if sec.type == "net":
            continue
        for key, opt in sec.options.items():
            if alexeyab_only(sec.type, key):
                return "alexeyab"
            if key == "activation" and opt.value in ALEXEYAB_ACTIVATIONS:
                return "alexeyab"
    return "pjreddie"


#: Activations only AlexeyAB's Darknet has (get_activation in its activations.c).
ALEXEYAB_ACTIVATIONS = {"swish", "mish", "hard_mish", "relu6", "gelu", "revleaky", "normalize_channels",
                        "normalize_channels_softmax", "normalize_channels_softmax_maxval"}

#: Sections Darknet (or its AlexeyAB fork) knows but deltaprop does not build.
UNSUPPORTED_SECTIONS = {"region", "detection", "local", "deconvolutional", "deconv", "crnn", "rnn", "gru",
                        "lstm", "crop", "batchnorm", "normalization", "lrn", "reorg", "l2norm", "activation",
                        "iseg", "xnor", "conv_lstm", "sam", "scale_channels", "gaussian_yolo", "contrastive",
                        "implicit_add", "implicit_mul", "empty", "silence", "reorg3d", "local_avgpool", "history",
                        "implicit", "local_avg"}
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
        if known is not None and key not in known and not is_inert(sec.type, key, value):
            raise unimplemented_key(filename, lineno, sec.type, key, value, known)
        if key in sec.options:
            raise ConfigError(f"{filename}:{lineno}: [{sec.type}] key '{key}' repeated (first on line "
                              f"{sec.options[key].line})")
        if value == "":
            raise ConfigError(f"{filename}:{lineno}: [{sec.type}] key '{key}' has no value")
        sec.options[key] = Option(key, value, lineno)
    if not sections:
        raise ConfigError(f"{filename}: no sections (a cfg starts with [net])")
    return sections


def unimplemented_key(filename: str, lineno: int, section: str, key: str, value: str, known: set) -> ConfigError:
    """The error for a key deltaprop does not implement: a Darknet option named with its fork(s) (and the value
    at which it would be accepted, when there is one), or an unknown key with the keys implemented here."""
    where = f"{filename}:{lineno}: [{section}]"
    forks = darknet_forks_of(section, key)
    if forks:
        inert = (INERT_STRINGS.get((section, key)) if (section, key) in INERT_STRINGS
                 else INERT_VALUES.get((section, key)))
        hint = f"; remove the line (or set {key}={inert:g})" if isinstance(inert, (int, float)) else (
            f"; remove the line (or set {key}={inert})" if inert is not None else "; remove the line")
        return ConfigError(f"{where} key '{key}={value}' is a {' and '.join(forks)} Darknet option that deltaprop "
                           f"does not implement{hint} (docs/darknet.md lists every key)")
    allowed = ", ".join(sorted(known)) or "none"
    return ConfigError(f"{where} unknown key '{key}' (Darknet's keys here: {allowed})")


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

