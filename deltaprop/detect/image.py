"""Images for detection: ``load_image`` (``data.images``) and Darknet's ``resize_image``/``letterbox_image``
(``geometry.letterbox``), gathered for the detector's users."""
from __future__ import annotations

from ..data.images import _pil, load_image
from ..geometry.letterbox import letterbox_image, resize_image

__all__ = ["_pil", "load_image", "letterbox_image", "resize_image"]
