"""``deltaprop convert --cfg C IN OUT``: Darknet ``.weights`` ↔ deltaprop ``.npz`` model file.

``.weights → .npz``: the network of C with the weights loaded, saved by ``deltaprop.io.save_model``
(parameters, running statistics, the cfg text, and the header's ``seen`` and version).
``.npz → .weights``: the model rebuilt from the file (or from C if given), written in Darknet's format
with the version and ``seen`` it came with (0.2.0 by default)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert", help="convert Darknet .weights <-> deltaprop .npz",
        description="Convert between a Darknet .weights file and a deltaprop .npz model file. The direction "
                    "follows the file extensions. --cfg is required for .weights input.")
    p.add_argument("src", metavar="IN", help=".weights or .npz")
    p.add_argument("dst", metavar="OUT", help=".npz or .weights")
    p.add_argument("--cfg", help="Darknet .cfg of the network (or a shipped cfg name)")
    p.add_argument("--upto", type=int, help="only the first N layers (a partial file, Darknet's `partial`)")
    return p


def run(args) -> int:
    from .. import darknet
    from ..errors import ConfigError, WeightsError
    from ..io import load_checkpoint, save_model
    src, dst = args.src.lower(), args.dst.lower()
    if src.endswith(".weights") and dst.endswith(".npz"):
        if not args.cfg:
            raise ConfigError("convert: a .weights file needs --cfg (the network it belongs to)")
        net = darknet.load(args.cfg, args.src, upto=args.upto)
        save_model(args.dst, net, extra={"darknet": {"seen": int(net.seen), "version": list(net.weights_version)}})
        print(f"{args.src} -> {args.dst}: {len(net.layers)} layers, {net.num_parameters():,} parameters, "
              f"seen {net.seen}")
        return 0
    if src.endswith(".npz") and dst.endswith(".weights"):
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
        darknet.save_weights(net, args.dst, upto=args.upto, version=version)
        print(f"{args.src} -> {args.dst}: {len(net.layers)} layers, version {'.'.join(map(str, version))}")
        return 0
    raise ConfigError(f"convert: expected IN/OUT as .weights/.npz or .npz/.weights, got {args.src} {args.dst}")
