"""Models out of deltaprop: ONNX export of Darknet cfg networks and ``nn.Sequential`` models (docs/export.md).

>>> net = deltaprop.darknet.load("yolov3-tiny.cfg", "yolov3-tiny.weights")     # doctest: +SKIP
>>> deltaprop.export.to_onnx(net, "yolov3-tiny.onnx")                            # doctest: +SKIP

One module per concern: ``checks`` (what is refused, ``ExportError``), ``graph`` (the ONNX graph under
construction), ``ops`` (the pieces both kinds of model share), ``darknet_layers`` (one converter per cfg section),
``nn_modules`` (one converter per module class), ``writer`` (``to_onnx``: build, check, write). The ``onnx``
package (``pip install 'deltaprop[onnx]'``) is imported when a model is exported, not before.
"""
from .checks import DEFAULT_OPSET, MIN_OPSET, ExportError, latest_opset
from .writer import to_onnx

__all__ = ["to_onnx", "ExportError", "DEFAULT_OPSET", "MIN_OPSET", "latest_opset"]
