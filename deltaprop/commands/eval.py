"""``deltaprop eval MODEL.npz``: the accuracy of a saved model on the MNIST test set."""
from __future__ import annotations

import argparse

import numpy as np


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="test accuracy of a saved model (.npz from deltaprop train or save_model)",
        description="Rebuild the model stored in MODEL.npz (a checkpoint or a model file: the architecture is in "
                    "the file) and print its loss and accuracy on MNIST, with the normalisation it was trained with.")
    p.add_argument("model", metavar="MODEL.npz", help="model or checkpoint file")
    p.add_argument("--data", metavar="DIR", help="directory with the MNIST files (default: the usual lookup)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which MNIST split (default test)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default 1000)")
    return p


def run(args) -> int:
    from ..data import default_preprocess, load_mnist, preprocess
    from ..io import load_checkpoint
    from ..train import evaluate
    ck = load_checkpoint(args.model)
    images, labels = load_mnist(args.data, args.split)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    spec = ck.extra.get("preprocess", default_preprocess())
    X = preprocess(images, spec, dtype=ck.model.dtype)
    loss, acc = evaluate(ck.model, (X, labels.astype(np.int64)), batch_size=args.batch_size)
    print(f"{args.model}: {args.split} accuracy {100 * acc:.2f}% ({int(round(acc * len(labels)))}/{len(labels)}), "
          f"loss {loss:.4f}")
    return 0
