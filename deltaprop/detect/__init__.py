"""Detection: decode [yolo] outputs to boxes, IoU, per-class NMS (Darknet's), images and drawing."""
from .boxes import (Box, Detections, box_iou, correct_boxes, letterbox_size, network_detections, network_nms, nms_sort, report,
                    to_pixels, yolo_decode)
from .image import letterbox_image, load_image, resize_image
from .detector import detect_image

__all__ = ["Box", "Detections", "box_iou", "correct_boxes", "letterbox_size", "network_detections", "network_nms", "nms_sort",
           "report", "to_pixels", "yolo_decode", "letterbox_image", "load_image", "resize_image", "detect_image"]
