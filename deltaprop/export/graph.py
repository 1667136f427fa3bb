"""The ONNX graph under construction: unique tensor names, nodes in the order they are added, float32 and int64
initializers, the opset each operator form needs, and the finished ``ModelProto`` (built with the ``onnx``
package's helper API; the same calls give the same bytes)."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .checks import MAX_MODEL_BYTES, ExportError, require_onnx

Dim = Union[int, str]


def _producer_version() -> str:
    """deltaprop's installed version (the facade is above this package, so it is read from the metadata)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("deltaprop")
    except (ImportError, PackageNotFoundError):
        return ""


class GraphBuilder:
    """Nodes and initializers of one graph. ``batch``: the first dimension of the input and outputs, an int or
    the symbolic name ``"batch"`` (``dynamic_batch``). Every tensor name is unique; ``op`` names its node after
    its (first) output."""

    def __init__(self, opset: int, batch: int = 1, dynamic_batch: bool = False) -> None:
        self.onnx = require_onnx()
        self.opset = int(opset)
        self.batch: Dim = "batch" if dynamic_batch else int(batch)
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self.param_bytes = 0
        self._names: set = set()

    # --- names and constants ----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... when taken."""
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def require(self, opset: int, where: str, what: str) -> None:
        """ExportError naming ``where`` when ``what`` needs a newer opset than the one being written."""
        if self.opset < opset:
            raise ExportError(f"{where}: {what} needs opset ≥ {opset}, got opset {self.opset} (pass a newer "
                              f"--opset)")

    def const(self, base: str, array, dtype=np.float32) -> str:
        """An initializer holding ``array`` as ``dtype`` (float32 weights, int64 shapes and indices)."""
        arr = np.ascontiguousarray(np.asarray(array, dtype=dtype))
        self.param_bytes += arr.nbytes
        if self.param_bytes > MAX_MODEL_BYTES:
            raise ExportError(f"the initializers pass {MAX_MODEL_BYTES:,} bytes, beyond what one ONNX protobuf "
                              f"file holds (deltaprop does not write external data)")
        name = self.fresh(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def ints(self, base: str, values: Sequence[int]) -> str:
        """An int64 initializer (shapes, slice bounds, axes)."""
        return self.const(base, np.asarray(values, dtype=np.int64), np.int64)

    # --- nodes ---------------------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], out: str, **attrs: Any) -> str:
        """Append ``op_type`` reading ``inputs`` (``""`` for an omitted optional input); returns the name of
        its output, ``out`` made unique."""
        name = self.fresh(out)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def slice(self, x: str, axis: int, start: int, end: int, out: str) -> str:
        """``x[start:end]`` along ``axis``: Slice-10's inputs from opset 10, Slice-1's attributes before."""
        if self.opset < 10:
            return self.op("Slice", [x], out, axes=[axis], starts=[start], ends=[end])
        return self.op("Slice", [x, self.ints(f"{out}/starts", [start]), self.ints(f"{out}/ends", [end]),
                                 self.ints(f"{out}/axes", [axis])], out)

    def clip(self, x: str, lo: float, hi: float, out: str) -> str:
        """min(max(x, lo), hi): Clip-11's inputs from opset 11, Clip-6's attributes before."""
        if self.opset < 11:
            return self.op("Clip", [x], out, min=float(lo), max=float(hi))
        return self.op("Clip", [x, self.const(f"{out}/min", np.float32(lo)), self.const(f"{out}/max", np.float32(hi))],
                       out)

    def reshape(self, x: str, shape: Sequence[int], out: str) -> str:
        """Reshape to ``shape`` (a 0 keeps that input dimension: the batch, when it is dynamic)."""
        return self.op("Reshape", [x, self.ints(f"{out}/shape", shape)], out)

    def scale(self, x: str, factor: float, out: str) -> str:
        """x·factor (nothing added when the factor is 1)."""
        return x if factor == 1.0 else self.op("Mul", [x, self.const(f"{out}/factor", np.float32(factor))], out)

    # --- the model -----------------------------------------------------------------------------
    def value_info(self, name: str, shape: Sequence[int]):
        """A float32 tensor ``name`` of (batch, *shape)."""
        return self.onnx.helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT,
                                                       [self.batch] + [int(d) for d in shape])

    def model(self, graph_name: str, inputs: Sequence[Tuple[str, Sequence[int]]],
              outputs: Sequence[Tuple[str, Sequence[int]]], doc: str = "",
              metadata: Optional[Dict[str, Any]] = None):
        """The ``ModelProto``: ``inputs``/``outputs`` as (name, shape without the batch); ``metadata`` values
        other than strings are stored as JSON. The IR version is the oldest that carries the opset."""
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, [self.value_info(n, s) for n, s in inputs],
                                  [self.value_info(n, s) for n, s in outputs], initializer=self.initializers,
                                  doc_string=doc)
        model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                              producer_name="deltaprop", producer_version=_producer_version(),
                                              doc_string=doc)
        if metadata:
            helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                                           for k, v in metadata.items()})
        return model


__all__ = ["GraphBuilder"]
