"""``deltaprop export --cfg C --weights W OUT.onnx`` / ``deltaprop export MODEL.npz OUT.onnx``: a Darknet network
or a saved model as an ONNX file (``deltaprop.export.to_onnx``, docs/export.md), checked by ``onnx.checker`` with
full shape inference and written atomically; a layer ONNX cannot express, an opset too old for a layer or a
weights file that does not fit the cfg ends in one line naming it, before anything is written."""
from __future__ import annotations

import argparse

from ._options import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a Darknet cfg + weights or a .npz model to ONNX",
        description="Write a Darknet network (--cfg and --weights) or a deltaprop .npz model as an ONNX file for "
                    "ONNX Runtime, OpenCV's DNN module and the other runtimes. Batch norm is folded into the "
                    "convolutions (--no-fold keeps BatchNormalization nodes); [yolo] heads are exported as their "
                    "activated outputs, named after the layer (yolo_16...): decode boxes and NMS in Python "
                    "(docs/export.md).")
    p.add_argument("files", nargs="+", metavar="[MODEL.npz] OUT.onnx",
                   help="the .npz model to export (not with --cfg), then the .onnx file to write")
    p.add_argument("--cfg", help="Darknet .cfg (or a shipped cfg name, e.g. yolov3-tiny)")
    p.add_argument("--weights", help="Darknet .weights of the cfg")
    p.add_argument("--size", nargs=2, type=positive_int, metavar=("W", "H"),
                   help="input width and height (default: the cfg's, or the size the model was built for)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--batch", type=positive_int, default=1, metavar="N", help="images per run, fixed (1)")
    b.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension instead of --batch")
    p.add_argument("--opset", type=positive_int, default=13,
                   help="ONNX opset (13; 9 up to the installed onnx package's newest)")
    p.add_argument("--no-fold", action="store_true", help="keep batch norm as BatchNormalization nodes")
    p.add_argument("--numerics", choices=["darknet", "standard"], default="darknet",
                   help="batch-norm convention of a --cfg network (default darknet)")
    return p


def _model(args):
    """(model, source name, preprocessing) from the command line; one-line errors for the files."""
    from .. import darknet
    from ..errors import ConfigError
    from ._classify import DARKNET_PREPROCESS, load_classifier
    from ._files import require_weights
    if args.cfg:
        if len(args.files) != 1:
            raise ConfigError(f"with --cfg give only OUT.onnx, got {' '.join(args.files)} (the weights come with "
                              f"--weights)")
        if not args.weights:
            raise ConfigError("--cfg needs --weights W: the trained weights to export")
        require_weights(args.weights)
        net = darknet.load(args.cfg, args.weights, numerics=args.numerics)
        return net, args.weights, dict(DARKNET_PREPROCESS)
    if args.weights:
        raise ConfigError("--weights is used only with --cfg (a .npz model holds its weights)")
    if len(args.files) != 2:
        raise ConfigError(f"expected MODEL.npz OUT.onnx (or --cfg C --weights W OUT.onnx), got "
                          f"{' '.join(args.files)}")
    _, model, spec = load_classifier(args.files[0])
    return model, args.files[0], spec


def run(args) -> int:
    import json

    from ..errors import ConfigError
    from ..export import MIN_OPSET, latest_opset, to_onnx
    out = args.files[-1]
    if not out.lower().endswith(".onnx"):
        raise ConfigError(f"OUT {out}: the file to write must end in .onnx")
    top = latest_opset()
    if not MIN_OPSET <= args.opset <= top:
        raise ConfigError(f"--opset {args.opset}: deltaprop writes opsets {MIN_OPSET} to {top} (the installed onnx "
                          f"package's newest)")
    model, source, spec = _model(args)
    proto = to_onnx(model, out, size=args.size, batch=args.batch, dynamic_batch=args.dynamic_batch,
                    opset=args.opset, fold_bn=not args.no_fold,
                    metadata={"deltaprop.preprocess": json.dumps(spec, sort_keys=True)})

    def shape(v) -> str:
        return "x".join(str(d.dim_param or d.dim_value) for d in v.type.tensor_type.shape.dim)
    g = proto.graph
    print(f"{source} -> {out}: opset {args.opset}, input {g.input[0].name} {shape(g.input[0])}, "
          f"output{'s' if len(g.output) > 1 else ''} " + ", ".join(f"{o.name} {shape(o)}" for o in g.output)
          + f"; {len(g.node)} nodes, batch norm {'kept' if args.no_fold else 'folded'}")
    return 0
