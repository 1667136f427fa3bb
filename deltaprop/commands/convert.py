"""``deltaprop convert [--cfg C] IN OUT``: a model between Darknet ``.weights``, deltaprop ``.npz`` and
``.safetensors`` (its ``state_dict``, PyTorch's key names), the direction following the extensions.

- ``.weights → .npz|.safetensors``: the network of C with the weights loaded; the ``.npz`` is ``deltaprop.io``'s
  model file (parameters, running statistics, the cfg text, the header's ``seen`` and version), the
  ``.safetensors`` holds the same arrays with the architecture, ``seen`` and version as metadata.
- ``.npz|.safetensors → .weights``: the model rebuilt from the file (or from C if given), written in Darknet's
  format with the version and ``seen`` it came with (0.2.0 by default).
- ``.npz ↔ .safetensors``: any model ``deltaprop.io`` saves (a cfg network or an ``nn.Sequential``); the
  ``.safetensors`` side stores its architecture so that it converts back alone (one written by another program
  needs C, or loads into a model with ``deltaprop.io.load_safetensors``).
- ``.weights → .weights`` with ``--upto N``: Darknet's ``partial``, the first N layers into a new file.

A model from a cfg network keeps Darknet's preprocessing (pixels scaled to [0, 1]), so ``eval``, ``predict`` and
``explain`` feed it what Darknet fed it."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Optional, Tuple

from ._options import positive_int

KINDS = (".weights", ".npz", ".safetensors")
#: metadata keys of a .safetensors file written here (JSON values)
ARCH_KEY, DARKNET_KEY, PREPROCESS_KEY = "deltaprop.architecture", "deltaprop.darknet", "deltaprop.preprocess"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="convert between Darknet .weights, deltaprop .npz and .safetensors",
        description="Convert a model between a Darknet .weights file, a deltaprop .npz model file and a "
                    ".safetensors file (the state_dict with PyTorch's key names), or cut the first --upto N layers "
                    "of a .weights file into a new one (Darknet's `partial`). The direction follows the file "
                    "extensions; the files' contents are checked. --cfg is required for .weights input.")
    p.add_argument("src", metavar="IN", help=".weights, .npz or .safetensors")
    p.add_argument("dst", metavar="OUT", help=".weights, .npz or .safetensors")
    p.add_argument("--cfg", help="Darknet .cfg of the network (or a shipped cfg name)")
    p.add_argument("--upto", type=positive_int, metavar="N",
                   help="only the first N layers (≥ 1): Darknet's `partial`, e.g. the backbone of a network "
                        "for transfer learning; .weights -> .weights needs --cfg")
    return p


def _kind(path: str) -> str:
    """The kind of a file by its extension ("" for another name)."""
    return next((k for k in KINDS if path.lower().endswith(k)), "")


def _in_kind(path: str) -> str:
    """IN's kind: by its extension, else by its content (Darknet's partial files are named like
    ``yolov3-tiny.conv.15``)."""
    kind = _kind(path)
    if kind:
        return kind
    from ..safetensors_io import is_safetensors
    from ._files import file_kind
    content = file_kind(path)
    if content in ("weights", "npz"):
        return "." + content
    return ".safetensors" if content == "unknown" and is_safetensors(path) else ""


def _out_kind(path: str, src: str, upto: Optional[int]) -> str:
    """OUT's kind: by its extension; a Darknet-style name with none or a number for one (``x.conv.15``) is a
    ``.weights`` file when IN is one or ``--upto`` cuts it (Darknet's ``partial``). Another extension: refused."""
    kind = _kind(path)
    suffix = os.path.splitext(path)[1]
    darknet_name = suffix == "" or suffix[1:].isdigit()
    return kind or (".weights" if darknet_name and (src == ".weights" or upto is not None) else "")


def _upto(net, upto: Optional[int]) -> int:
    from ..errors import ConfigError
    if upto is not None and upto > len(net.layers):
        raise ConfigError(f"--upto {upto}: the network has only {len(net.layers)} layers")
    return len(net.layers) if upto is None else upto


def _load(cfg: str, weights: str, upto: Optional[int] = None):
    """The network of ``cfg`` with ``weights``; a partial file's hint names this command's ``--upto``."""
    from .. import darknet
    from ..errors import WeightsError
    try:
        return darknet.load(cfg, weights, upto=upto)
    except WeightsError as e:
        raise WeightsError(str(e).replace("load it with upto=", "convert it with --upto ")) from None


def _written(net, n: int) -> str:
    from ._darknet import count_line, parameter_counts
    part = f"the first {n} of {len(net.layers)} layers" if n < len(net.layers) else f"{n} layers"
    return f"{part}, {count_line(*parameter_counts(net.plan, n))}"


def _json_meta(meta: Dict[str, str], key: str, where: str) -> Any:
    from ..errors import CheckpointError
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except ValueError as e:
        raise CheckpointError(f"{where}: metadata {key!r} is not JSON ({e})") from None


def _read_safetensors(args) -> Tuple[Any, Dict[str, Any]]:
    """(model, extra) of a .safetensors IN: the model of --cfg, else the architecture its metadata stores."""
    from .. import darknet
    from ..errors import CheckpointError, StateDictError
    from ..io import build_from_architecture
    from ..safetensors_io import is_safetensors, read_safetensors
    from ._files import file_kind
    kind = file_kind(args.src)
    if not is_safetensors(args.src) and kind in ("npz", "weights"):
        raise CheckpointError(f"IN {args.src}: this is a {'deltaprop .npz' if kind == 'npz' else 'Darknet .weights'} "
                              f"file, not safetensors")
    state, meta = read_safetensors(args.src)
    arch = _json_meta(meta, ARCH_KEY, args.src)
    if args.cfg:
        model = darknet.load(args.cfg)
    elif arch is not None:
        budget = 2 * sum(int(a.nbytes) for a in state.values()) + 2 ** 20
        model = build_from_architecture(arch, budget=budget, where=f"{args.src}: metadata {ARCH_KEY}")
    else:
        raise CheckpointError(f"IN {args.src}: the file stores no architecture ({ARCH_KEY}); give the network with "
                              f"--cfg")
    try:
        model.load_state_dict(state)
    except StateDictError as e:
        raise CheckpointError(f"{args.src}: does not fit the model ({type(model).__name__}): {e}") from None
    extra = {k: v for k, v in (("darknet", _json_meta(meta, DARKNET_KEY, args.src)),
                               ("preprocess", _json_meta(meta, PREPROCESS_KEY, args.src))) if v is not None}
    return model, extra


def _read(args) -> Tuple[Any, Dict[str, Any], int]:
    """(model, extra, layers loaded) of IN; ``extra`` as a .npz stores it (darknet seen/version, preprocessing)."""
    from .. import darknet
    from ..errors import ConfigError
    from ..io import load_checkpoint
    from ._classify import DARKNET_PREPROCESS
    from ._files import require_npz, require_weights
    kind = _in_kind(args.src)
    if kind == ".weights":
        require_weights(args.src, "IN")
        if not args.cfg:
            raise ConfigError(f"IN {args.src}: a .weights file needs --cfg (the network it belongs to)")
        net = _load(args.cfg, args.src, args.upto)
        report = getattr(net, "weights_report", None)
        if report is not None and report.message:
            print(report.message)
        extra = {"darknet": {"seen": int(net.seen), "version": list(net.weights_version)},
                 "preprocess": dict(DARKNET_PREPROCESS)}
        return net, extra, _upto(net, args.upto)
    if kind == ".npz":
        require_npz(args.src)
        ck = load_checkpoint(args.src, model=darknet.load(args.cfg) if args.cfg else None)
        model, extra = ck.model, dict(ck.extra)
    else:
        model, extra = _read_safetensors(args)
    if isinstance(model, darknet.DarknetNet):
        object.__setattr__(model, "seen", int(extra.get("darknet", {}).get("seen", model.seen)))
        return model, extra, _upto(model, args.upto)
    if args.upto is not None:
        raise ConfigError(f"--upto {args.upto}: {args.src} holds a {type(model).__name__}; --upto cuts Darknet "
                          f"cfg networks")
    return model, extra, 0


def run(args) -> int:
    from .. import darknet
    from ..errors import ConfigError, WeightsError
    from ..io import architecture_of, save_model
    from ..safetensors_io import save_safetensors
    src = _in_kind(args.src)
    dst = _out_kind(args.dst, src, args.upto)
    if not src or not dst or src == dst != ".weights":
        raise ConfigError(f"IN OUT {args.src} {args.dst}: expected IN/OUT as two of .weights, .npz and "
                          f".safetensors, or .weights/.weights (by their extensions; IN also by its content, and "
                          f"an OUT named like x.conv.15 is a .weights file)")
    model, extra, n = _read(args)
    is_net = isinstance(model, darknet.DarknetNet)
    if dst == ".weights":
        if not is_net:
            raise WeightsError(f"{args.src}: holds a {type(model).__name__}, not a Darknet cfg network")
        version = extra.get("darknet", {}).get("version", [0, 2, 0]) if src != ".weights" \
            else list(model.weights_version)
        darknet.save_weights(model, args.dst, upto=n, version=version)
        tail = f"seen {model.seen}" if src == ".weights" else f"version {'.'.join(map(str, version))}"
        print(f"{args.src} -> {args.dst}: {_written(model, n)}, {tail}")
        return 0
    if is_net:
        extra = dict(extra, darknet={"seen": int(model.seen), "version": list(extra.get("darknet", {}).get(
            "version", model.weights_version))})
    keep = {k: extra[k] for k in ("darknet", "preprocess") if k in extra}
    if dst == ".npz":
        save_model(args.dst, model, extra=keep)
    else:
        arch = architecture_of(model)
        meta = {ARCH_KEY: arch, DARKNET_KEY: keep.get("darknet"), PREPROCESS_KEY: keep.get("preprocess")}
        save_safetensors(model, args.dst, {k: json.dumps(v, sort_keys=True) for k, v in meta.items() if v is not None})
    if is_net:
        rest = f" (layers {n} on keep their initial values)" if src == ".weights" and n < len(model.layers) else ""
        print(f"{args.src} -> {args.dst}: {_written(model, n if src == '.weights' else len(model.layers))}{rest}, "
              f"seen {model.seen}")
    else:
        print(f"{args.src} -> {args.dst}: {type(model).__name__}, {model.num_parameters():,} parameters")
    return 0
