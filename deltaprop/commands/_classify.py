"""A saved classifier as ``eval``, ``predict`` and ``explain`` use it, whatever built it: a registry model
(logits out) or a Darknet cfg classifier (a ``[softmax]`` layer, probabilities out, shape (N, C, 1, 1)), with
the input preprocessing stored in its file."""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from ..errors import DataError

# Darknet feeds images scaled to [0, 1], nothing subtracted (load_image_color / ``scale01``).
DARKNET_PREPROCESS: Dict[str, float] = {"scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0}


def is_darknet(model) -> bool:
    arch = model.__dict__.get("_architecture") or {}
    return arch.get("kind") == "darknet_cfg" or type(model).__name__ == "DarknetNet"


def preprocess_of(ck) -> Dict[str, Any]:
    """The preprocessing stored in the checkpoint ``ck``; without one, Darknet's [0, 1] scaling for a cfg
    network and MNIST's standardisation for the others (what ``deltaprop train`` stores)."""
    from ..data import default_preprocess
    spec = ck.extra.get("preprocess")
    if spec:
        return dict(spec)
    arch = ck.architecture or {}
    return dict(DARKNET_PREPROCESS) if arch.get("kind") == "darknet_cfg" else default_preprocess()


def ends_in_softmax(model) -> bool:
    """True when the model's output is already a probability distribution (a final Softmax / [softmax])."""
    from ..explain import model_layers
    layers = [m for _, m in model_layers(model) if getattr(m, "kind", None) != "cost"]  # [cost] is not an output
    last = layers[-1] if layers else model
    return type(last).__name__ == "Softmax" or getattr(last, "kind", None) == "softmax"


def load_classifier(path: str) -> Tuple[Any, Any, Dict[str, Any]]:
    """(checkpoint, model in eval mode, preprocessing) of the .npz at ``path``; a file of another kind (e.g.
    Darknet .weights) is named as such."""
    from ..io import load_checkpoint
    from ._files import require_npz
    require_npz(path)
    ck = load_checkpoint(path)
    return ck, ck.model.eval(), preprocess_of(ck)


def check_input(model, X: np.ndarray, path: str) -> None:
    """DataError when a cfg network's input shape is not the data's."""
    want = getattr(model, "input_shape", None)
    if want is not None and tuple(want) != tuple(X.shape[1:]):
        c, h, w = want
        raise DataError(f"{path}: the network takes {w}×{h}×{c} inputs, the data is "
                        f"{X.shape[3]}×{X.shape[2]}×{X.shape[1]} (width×height×channels)")


def class_probabilities(model, X: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class probabilities (N, C) in float64: the softmax of the logits, or the output itself when the model
    ends in a softmax (applying it twice would flatten them)."""
    from ..backend import no_grad
    softmaxed = ends_in_softmax(model)
    parts = []
    with no_grad():
        for s in range(0, len(X), batch_size):
            out = np.asarray(model(X[s:s + batch_size]), dtype=np.float64).reshape(min(batch_size, len(X) - s), -1)
            if not softmaxed:
                z = out - out.max(axis=1, keepdims=True)
                out = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            parts.append(out)
    return np.concatenate(parts) if parts else np.zeros((0, 0))


__all__ = ["DARKNET_PREPROCESS", "is_darknet", "preprocess_of", "ends_in_softmax", "load_classifier",
           "check_input", "class_probabilities"]
