"""``to_onnx``: a Darknet cfg network or an ``nn.Sequential`` as an ONNX model, checked by ``onnx.checker`` with full
shape inference before one byte is written, then written atomically (the same model gives the same bytes)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from ..atomic import atomic_write_bytes
from ..darknet import DarknetNet
from .checks import DEFAULT_OPSET, ExportError, check_batch, check_opset, check_size
from .darknet_layers import build_darknet
from .graph import GraphBuilder
from .nn_modules import build_sequential

PathLike = Union[str, "os.PathLike[str]"]


def check_output(path: PathLike) -> Path:
    """ExportError when ``path`` cannot take a file: it is a directory, or a file stands where a folder of its
    path should be (checked before the export's work, so nothing is half-done)."""
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{path}: is a directory, not an .onnx file to write")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"{path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ExportError(f"{path}: the folder {parent} is not writable")
            break
    return p


def to_onnx(model, path: Optional[PathLike] = None, size: Optional[Sequence[int]] = None, batch: int = 1,
            dynamic_batch: bool = False, opset: int = DEFAULT_OPSET, fold_bn: bool = True,
            metadata: Optional[Dict[str, Any]] = None):
    """Export ``model`` (a ``DarknetNet`` from ``darknet.load``, or an ``nn.Sequential`` such as ``io.load_model``
    returns) as an ONNX ``ModelProto``, written to ``path`` when given (atomically; a directory is created).

    ``size``: the input (width, height), default the cfg's (a cfg network is planned again at another size) or the
    size an image model was built for (28×28 for MNIST's). ``batch``: the first input dimension, or symbolic with
    ``dynamic_batch``. ``opset``: the ONNX opset (9 up to the installed onnx's newest; layers that need more say
    so). ``fold_bn``: batch norm folded into the weights before it, else kept as ``BatchNormalization``.
    ``metadata``: extra string properties (e.g. the input preprocessing). Weights are written as float32.

    The model's input is ``input`` (N, C, H, W); a cfg network's outputs are named after their layers
    (``yolo_16``: the [yolo] head's activated tensor, docs/export.md), an ``nn`` model's is ``output``.
    Refusals raise ExportError naming the layer."""
    opset, batch, size = check_opset(opset), check_batch(batch), check_size(size)
    if path is not None:
        check_output(path)
    b = GraphBuilder(opset, batch, dynamic_batch)
    if isinstance(model, DarknetNet):
        shape, outputs, meta = build_darknet(b, model, size, fold_bn)
        name = Path(str(model.source)).stem or "darknet"
    else:
        shape, outputs, meta = build_sequential(b, model, size, fold_bn)
        name = "sequential"
    meta = dict(meta, **{"deltaprop.batchnorm": "folded" if fold_bn else "kept"}, **(metadata or {}))
    proto = b.model(name, [("input", shape)], outputs, doc=f"{name}, exported by deltaprop", metadata=meta)
    onnx = b.onnx
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the ONNX checker refused the exported graph (a bug in deltaprop's export): "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if path is not None:
        try:
            atomic_write_bytes(path, proto.SerializeToString())
        except OSError as e:
            raise ExportError(f"{path}: cannot write the model ({e.strerror or e})") from None
    return proto


__all__ = ["to_onnx", "check_output"]
