"""One call from an image to reported boxes: letterbox, forward, decode, NMS (Darknet's ``test_detector``)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, ShapeError
from .boxes import Box, network_detections, network_nms, report
from ..geometry.letterbox import letterbox_image, resize_image


def detect_image(net, image: np.ndarray, thresh: float = 0.5, nms: float = 0.45,
                 names: Optional[Sequence[str]] = None, letterbox: bool = True) -> List[Box]:
    """Boxes for one image (float (C, H, W) in [0, 1]) with a cfg network that ends in [yolo] layers."""
    c, net_h, net_w = net.input_shape
    if image.ndim != 3 or image.shape[0] != c:
        raise ShapeError(f"detect: expected an image ({c}, H, W), got shape {image.shape}")
    _, ih, iw = image.shape
    x = letterbox_image(image, net_w, net_h) if letterbox else resize_image(image, net_w, net_h)
    outs = net.predict(x[None].astype(net.dtype, copy=False))
    outs = outs if isinstance(outs, list) else [outs]
    dets = network_detections(net, outs, iw, ih, thresh, letterbox)
    if nms > 0:
        dets = network_nms(net, dets, nms)
    return report(dets, iw, ih, thresh, names)


def yolo_layers(net, classes: Optional[int] = None, data: object = None) -> list:
    """The [yolo] layers of ``net`` (its ``detection_heads``); a ConfigError when there is none, or when their
    ``classes`` differs from ``classes`` (the ``.data`` file ``data`` says so)."""
    yolos = net.detection_heads
    if not yolos:
        raise ConfigError(f"{net.source}: no [yolo] layer: not a detector")
    if classes is not None and yolos[0].classes != classes:
        raise ConfigError(f"{net.source}: the [yolo] layers have classes={yolos[0].classes} but "
                          f"{data} says classes = {classes}")
    return yolos
