"""``deltaprop convert --cfg C IN OUT``: Darknet ``.weights`` ↔ deltaprop ``.npz`` model file.

``.weights → .npz``: the network of C with the weights loaded, saved by ``deltaprop.io.save_model``
(parameters, running statistics, the cfg text, and the header's ``seen`` and version).
``.npz → .weights``: the model rebuilt from the file (or from C if given), written in Darknet's format
with the version and ``seen`` it came with (0.2.0 by default).
``.weights → .weights`` with ``--upto N``: Darknet's ``partial``, the first N layers into a new file.
The .npz written from a cfg network stores Darknet's preprocessing (pixels scaled to [0, 1]), so ``eval``,
``predict`` and ``explain`` feed it what Darknet fed it."""
from __future__ import annotations

import argparse
from typing import Optional

from ._options import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="convert Darknet .weights <-> deltaprop .npz",
        description="Convert between a Darknet .weights file and a deltaprop .npz model file, or cut the first "
                    "--upto N layers of a .weights file into a new one (Darknet's `partial`). The direction follows "
                    "the file extensions; the files' contents are checked. --cfg is required for .weights input.")
    p.add_argument("src", metavar="IN", help=".weights or .npz")
    p.add_argument("dst", metavar="OUT", help=".npz or .weights")
    p.add_argument("--cfg", help="Darknet .cfg of the network (or a shipped cfg name)")
    p.add_argument("--upto", type=positive_int, metavar="N",
                   help="only the first N layers (≥ 1): Darknet's `partial`, e.g. the backbone of a network "
                        "for transfer learning; .weights -> .weights needs --cfg")
    return p


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


def run(args) -> int:
    from .. import darknet
    from ..errors import ConfigError, WeightsError
    from ..io import load_checkpoint, save_model
    from ._classify import DARKNET_PREPROCESS
    from ._files import require_npz, require_weights
    src, dst = args.src.lower(), args.dst.lower()
    if not (src.endswith((".weights", ".npz")) and dst.endswith((".weights", ".npz"))) or \
            src.endswith(".npz") and dst.endswith(".npz"):
        raise ConfigError(f"IN OUT {args.src} {args.dst}: expected IN/OUT as .weights/.npz, .npz/.weights or "
                          f".weights/.weights (by their extensions)")
    if src.endswith(".weights"):
        require_weights(args.src, "IN")
        if not args.cfg:
            raise ConfigError(f"IN {args.src}: a .weights file needs --cfg (the network it belongs to)")
        if dst.endswith(".weights"):      # Darknet's `partial`: the first N layers into a new file
            net = _load(args.cfg, args.src, args.upto)
            n = _upto(net, args.upto)
            darknet.save_weights(net, args.dst, upto=n, version=net.weights_version)
            print(f"{args.src} -> {args.dst}: {_written(net, n)}, seen {net.seen}")
            return 0
        net = _load(args.cfg, args.src, args.upto)
        n = _upto(net, args.upto)
        save_model(args.dst, net, extra={"darknet": {"seen": int(net.seen), "version": list(net.weights_version)},
                                         "preprocess": dict(DARKNET_PREPROCESS)})
        rest = f" (layers {n} on keep their initial values)" if n < len(net.layers) else ""
        print(f"{args.src} -> {args.dst}: {_written(net, n)}{rest}, seen {net.seen}")
        return 0
    require_npz(args.src)
    if args.cfg:
        ck = load_checkpoint(args.src, model=darknet.load(args.cfg))
    else:
        ck = load_checkpoint(args.src)
    net = ck.model
    if not isinstance(net, darknet.DarknetNet):
        raise WeightsError(f"{args.src}: holds a {type(net).__name__}, not a Darknet cfg network")
    info = ck.extra.get("darknet", {})
    object.__setattr__(net, "seen", int(info.get("seen", net.seen)))
    version = info.get("version", [0, 2, 0])
    n = _upto(net, args.upto)
    darknet.save_weights(net, args.dst, upto=n, version=version)
    print(f"{args.src} -> {args.dst}: {_written(net, n)}, version {'.'.join(map(str, version))}")
    return 0
