"""What an export refuses, said before anything is written: the opset range, the input size, the kind of model,
and the one error type every refusal raises (``ExportError``, naming the layer and what ONNX lacks)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from ..errors import DeltapropError

#: The oldest opset written: BatchNormalization-9 (no ``spatial``), Gemm-9, Flatten-9, MaxPool-8 with asymmetric
#: pads. Layers that need more say so (``GraphBuilder.require``): Slice with inputs 10, Resize 11, Softmax over an
#: axis that is not the last 13.
MIN_OPSET = 9
DEFAULT_OPSET = 13
#: Above this a protobuf file cannot hold the initializers (ONNX's 2 GiB limit; external data is not written).
MAX_MODEL_BYTES = 2 ** 31 - 2 ** 24


class ExportError(DeltapropError, ValueError):
    """A model ONNX cannot express as asked: a layer with no ONNX operator, an opset too old for a layer, an input
    size the network cannot take. The message names the layer (cfg index and kind, or module path and class)."""


def require_onnx():
    """The ``onnx`` package, or an ImportError saying which extra installs it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package ({e}); pip install 'deltaprop[onnx]'",
                          name="onnx") from None
    return onnx


def latest_opset() -> int:
    """The newest default-domain opset the installed ``onnx`` package knows."""
    return int(require_onnx().defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    """``opset`` as an int within MIN_OPSET..latest_opset(); ExportError otherwise."""
    top = latest_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ExportError(f"opset {opset!r}: deltaprop writes opsets {MIN_OPSET} to {top} (the installed onnx "
                          f"package's newest)")
    return opset


def check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch {batch!r}: must be an integer ≥ 1")
    return batch


def check_size(size: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``size`` as (width, height) of positive ints, or None (the model's own size)."""
    if size is None:
        return None
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ExportError(f"size {size!r}: expected (width, height)") from None
    if w < 1 or h < 1 or (w, h) != tuple(size):
        raise ExportError(f"size {size!r}: width and height must be integers ≥ 1")
    return w, h


__all__ = ["ExportError", "MIN_OPSET", "DEFAULT_OPSET", "MAX_MODEL_BYTES", "require_onnx", "latest_opset",
           "check_opset", "check_batch", "check_size"]
