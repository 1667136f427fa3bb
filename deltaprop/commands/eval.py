"""``deltaprop eval MODEL.npz``: the accuracy of a saved model on the MNIST test set."""
from __future__ import annotations

import argparse

import numpy as np

from ._options import positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="test accuracy of a saved model (.npz from deltaprop train or save_model)",
        description="Rebuild the model stored in MODEL.npz (a checkpoint or a model file: the architecture is in "
                    "the file; a Darknet cfg classifier converted with `deltaprop convert` too) and print its "
                    "loss and accuracy on MNIST, with the preprocessing stored in the file.")
    p.add_argument("model", metavar="MODEL.npz", help="model or checkpoint file")
    p.add_argument("--data", metavar="DIR", help="directory with the MNIST files (default: the usual lookup)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which MNIST split (default test)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N (≥ 1) samples")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="evaluation batch size, ≥ 1 (default 1000)")
    return p


def run(args) -> int:
    from ..data import load_mnist, preprocess
    from ._classify import check_input, class_probabilities, load_classifier
    from ._files import check_folder
    ck, model, spec = load_classifier(args.model)
    check_folder(args.data, "--data")
    images, labels = load_mnist(args.data, args.split)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    X = preprocess(images, spec, dtype=model.dtype)
    check_input(model, X, args.model)
    prob = class_probabilities(model, X, args.batch_size)
    y = labels.astype(np.int64)
    if prob.shape[1] <= int(y.max(initial=0)):
        from ..errors import DataError
        raise DataError(f"{args.model}: the model has {prob.shape[1]} outputs, MNIST has 10 classes")
    correct = int(np.count_nonzero(prob.argmax(axis=1) == y))
    loss = float(-np.mean(np.log(np.maximum(prob[np.arange(len(y)), y], 1e-300))))   # cross-entropy, nats
    print(f"{args.model}: {args.split} accuracy {100 * correct / len(y):.2f}% ({correct}/{len(y)}), "
          f"loss {loss:.4f}")
    return 0
