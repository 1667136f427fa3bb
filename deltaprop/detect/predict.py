"""One picture through Darknet's ``test_detector`` path — letterbox, network, [yolo] boxes, NMS — timed as
Darknet's ``Predicted in``, and the lines that print boxes (deltaprop's corners, or AlexeyAB's ``-ext_output``
listing). ``detect``, ``detector test`` and ``detector demo`` all go through here.

A photo far larger than the network input is reduced as it is decoded (``data.images.reduction``): the boxes are
found and drawn on the reduced picture and printed in the pixels of the original (:func:`in_picture`)."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ..errors import ValueRangeError


def in_picture(box, width: int, height: int, header):
    """``box`` (pixels of a ``width × height`` reduced picture) in the pixels of the original ``header``."""
    sx, sy = header.width / width, header.height / height
    return dataclasses.replace(box, left=min(int(box.left * sx), header.width - 1),
                               top=min(int(box.top * sy), header.height - 1),
                               right=min(int(box.right * sx), header.width - 1),
                               bottom=min(int(box.bottom * sy), header.height - 1))


@dataclass
class Prediction:
    """One picture's boxes: ``image`` as decoded ((C, h, w) in [0, 1], reduced when the original is far larger
    than the network), ``boxes`` in its pixels (what is drawn), ``header`` the original's size, ``seconds`` the
    time from the decoded picture to the boxes (letterbox, network, decoding, NMS: Darknet's ``Predicted in``)."""
    path: str
    image: np.ndarray
    boxes: list
    header: object
    seconds: float

    @property
    def reduced(self) -> bool:
        return (self.image.shape[2], self.image.shape[1]) != (self.header.width, self.header.height)

    def original_boxes(self) -> list:
        """The boxes in the pixels of the original picture."""
        if not self.reduced:
            return list(self.boxes)
        return [in_picture(b, self.image.shape[2], self.image.shape[1], self.header) for b in self.boxes]

    def headline(self) -> str:
        """``FILE: Predicted in N ms, K box(es)`` (and where a reduced picture's boxes were found)."""
        line = f"{self.path}: Predicted in {self.seconds * 1000:.1f} ms, {len(self.boxes)} box(es)"
        if self.reduced:
            line += (f" (found on the picture reduced to {self.image.shape[2]}x{self.image.shape[1]}; pixels of the "
                     f"{self.header.width}x{self.header.height} original)")
        return line


def detect_boxes(net, image: np.ndarray, thresh: float, nms: float, names, where: str,
                 overflow_hint: str = "are the weights those of the cfg?") -> list:
    """``detect.detect_image`` (letterbox, forward, decode, NMS) with the one-line error of a network whose box
    sizes overflow (``where``: the picture or frame named in it)."""
    from .detector import detect_image
    try:
        return detect_image(net, image, thresh, nms, names)
    except OverflowError:   # a box of infinite size cannot become pixel corners
        raise ValueRangeError(f"{where}: the network's box sizes overflow to infinity: {overflow_hint}") from None


def predict_picture(net, path: str, thresh: float, nms: float, names=None,
                    overflow_hint: str = "are the weights those of the cfg?") -> Prediction:
    """``path`` decoded for ``net``'s input (``data.images.load_image`` with ``fit``) and its boxes."""
    from ..data.images import image_header, load_image
    c, net_h, net_w = net.input_shape
    header = image_header(path)
    image = load_image(path, channels=c, fit=(net_w, net_h))
    start = time.perf_counter()
    boxes = detect_boxes(net, image, thresh, nms, names, path, overflow_hint)
    return Prediction(path, image, boxes, header, time.perf_counter() - start)


def ext_output_line(box) -> str:
    """A box as AlexeyAB's ``-ext_output`` prints it: ``dog: 98%\\t(left_x:  123   top_y:  456   width:  100
    height:  200)``, from the box's pixel corners (clamped to the picture, as they are drawn)."""
    return (f"{box.name}: {box.prob * 100:.0f}%\t(left_x: {box.left:4d}   top_y: {box.top:4d}   width: "
            f"{box.right - box.left:4d}   height: {box.bottom - box.top:4d})")


def box_lines(boxes: Sequence, ext_output: bool = False) -> List[str]:
    """The lines that list ``boxes``: ``  NAME: P%  left L top T right R bottom B``, or with ``ext_output``
    AlexeyAB's listing (:func:`ext_output_line`)."""
    return [ext_output_line(b) if ext_output else f"  {b}" for b in boxes]


__all__ = ["in_picture", "Prediction", "predict_picture", "detect_boxes", "ext_output_line", "box_lines"]
