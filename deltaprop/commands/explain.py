"""``deltaprop explain MODEL.npz``: sensitivity maps (δ of every layer) and gradient norms of a saved
classifier on MNIST digits, and its training curves, as text and PNGs (``deltaprop.explain``)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._options import int_range


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "explain", help="sensitivity maps, per-layer gradient norms and training curves of a saved model",
        description="Rebuild the model in MODEL.npz, run one forward and backward pass on MNIST digits (the "
                    "cross-entropy of their true labels, or the score of --class), print every layer's ‖δ‖ "
                    "(∂C/∂output) and ‖∂C/∂W‖ (vanishing/exploding gradients show here), and draw each digit's "
                    "sensitivity maps (input saliency and the δ of every layer) and the training curves of "
                    "history.jsonl as PNGs (needs matplotlib: pip install 'deltaprop[plot]').")
    p.add_argument("model", metavar="MODEL.npz", help="model or checkpoint file")
    p.add_argument("--data", metavar="DIR", help="directory with the MNIST files (default: the usual lookup)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which MNIST split (default test)")
    p.add_argument("--index", metavar="ROW", type=int_range(), nargs="+", default=[0],
                   help="digits to explain (default 0)")
    p.add_argument("--class", dest="cls", type=int_range(0), metavar="K",
                   help="explain the output score of class K instead of the loss of the true label")
    p.add_argument("--history", metavar="FILE", help="history.jsonl to draw (default: the one beside MODEL.npz)")
    p.add_argument("--out", metavar="DIR", help="where the PNGs go (default: MODEL's directory/explain)")
    p.add_argument("--no-plot", action="store_true", help="print the tables only (no matplotlib needed)")
    return p


def _require_matplotlib() -> None:
    """The PNGs need matplotlib (the ``plot`` extra): say so before any work is done."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from ..errors import ConfigError
        raise ConfigError("the pictures need matplotlib, which is not installed: pip install 'deltaprop[plot]' "
                          "(or pip install matplotlib), or pass --no-plot for the tables only") from None


def run(args) -> int:
    from .. import nn
    from ..backend import no_grad
    from ..data import load_mnist, preprocess
    from ..errors import DataError
    from ..explain import (format_norms, layer_gradient_norms, plot_history, plot_sensitivity, read_history,
                           sensitivity_maps)
    from ._classify import check_input, ends_in_softmax, load_classifier
    from ._files import check_folder
    if not args.no_plot:
        _require_matplotlib()
    ck, model, spec = load_classifier(args.model)
    model.train()
    check_folder(args.data, "--data")
    images, labels = load_mnist(args.data, args.split)
    for i in args.index:
        if not -len(images) <= i < len(images):
            raise DataError(f"--index {i} out of range (MNIST {args.split} has {len(images)} images)")
    X = preprocess(images[args.index], spec, dtype=model.dtype)
    check_input(model, X, args.model)
    y = labels[args.index].astype(np.int64)
    was = model.training
    model.eval()
    with no_grad():
        raw = model(X)                          # (N, C), or (N, C, 1, 1) for a Darknet classifier
    model.train(was)
    scores = raw.reshape(len(X), -1)
    if args.cls is not None:
        if not 0 <= args.cls < scores.shape[1]:
            raise DataError(f"--class {args.cls} out of range (the model has {scores.shape[1]} outputs)")
        dout = np.zeros(scores.shape, dtype=raw.dtype)
        dout[:, args.cls] = 1.0                 # C = Σ_n score_K(x_n)
        kw = {"dout": dout.reshape(raw.shape)}
        what = f"the score of class {args.cls}"
    else:
        loss = nn.ProbabilityCrossEntropyLoss() if ends_in_softmax(model) else nn.CrossEntropyLoss()
        kw = {"loss": loss, "target": y.reshape((len(y),) + raw.shape[2:])}
        what = f"the {type(loss).__name__} of the true labels"
    for k, i in enumerate(args.index):
        print(f"{args.split} digit {i}: label {int(y[k])}, predicted {int(scores[k].argmax())}")
    print(f"\nC = {what} over {len(X)} digit(s); per layer ‖δ‖ = ‖∂C/∂output‖ and ‖∂C/∂θ‖:")
    print(format_norms(layer_gradient_norms(model, X, **kw)))
    if args.no_plot:
        return 0
    out_dir = Path(args.out) if args.out else Path(args.model).resolve().parent / "explain"
    hist = Path(args.history) if args.history else Path(args.model).resolve().parent / "history.jsonl"
    if args.history and not hist.is_file():
        raise DataError(f"{hist}: no such history file")
    written = []
    if hist.is_file():      # first: a history that cannot be drawn stops the command before any PNG is written
        written.append(plot_history(read_history(hist), out_dir / "history.png",
                                    title=f"training curves: {hist.name}"))
    maps = sensitivity_maps(model, X, **kw)
    written += [plot_sensitivity(maps, out_dir / f"sensitivity_{args.split}_{i}.png", sample=k,
                                 title=f"{args.split} digit {i}, label {int(y[k])}: δ = ∂C/∂output, C = {what}")
                for k, i in enumerate(args.index)]
    for w in written:
        print(f"wrote {w}")
    return 0
