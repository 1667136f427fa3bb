"""One module per cfg section kind (Darknet's file-per-layer map): each has ``plan(section, ctx)``, the
shape inference that allocates nothing, and a ``DarknetLayer`` subclass built from that plan (a ``LossLayer``
for the sections that train against a truth)."""
from __future__ import annotations

from . import (avgpool, connected, convolutional, cost, dropout, logistic, maxpool, route, shortcut, softmax,
               upsample, yolo)
from .avgpool import AvgpoolLayer
from .base import NUMERICS, DarknetLayer, LayerSpec, LossLayer, LossResult, PlanContext
from .batchnorm import DarknetBatchNorm
from .connected import ConnectedLayer
from .convolutional import ConvolutionalLayer
from .cost import CostLayer
from .dropout import DropoutLayer
from .logistic import LogisticLayer
from .maxpool import MaxpoolLayer
from .route import RouteLayer
from .shortcut import ShortcutLayer
from .softmax import SoftmaxLayer
from .upsample import UpsampleLayer
from .yolo import YoloLayer, YoloLossResult

#: section type -> (planner, module class)
LAYER_KINDS = {
    "convolutional": (convolutional.plan, ConvolutionalLayer),
    "connected": (connected.plan, ConnectedLayer),
    "maxpool": (maxpool.plan, MaxpoolLayer),
    "avgpool": (avgpool.plan, AvgpoolLayer),
    "softmax": (softmax.plan, SoftmaxLayer),
    "cost": (cost.plan, CostLayer),
    "logistic": (logistic.plan, LogisticLayer),
    "dropout": (dropout.plan, DropoutLayer),
    "route": (route.plan, RouteLayer),
    "shortcut": (shortcut.plan, ShortcutLayer),
    "upsample": (upsample.plan, UpsampleLayer),
    "yolo": (yolo.plan, YoloLayer),
}

__all__ = ["LAYER_KINDS", "NUMERICS", "DarknetLayer", "LayerSpec", "LossLayer", "LossResult", "PlanContext",
           "YoloLossResult", "DarknetBatchNorm",
           "AvgpoolLayer", "ConnectedLayer", "ConvolutionalLayer", "CostLayer", "DropoutLayer", "LogisticLayer",
           "MaxpoolLayer", "RouteLayer", "ShortcutLayer", "SoftmaxLayer", "UpsampleLayer", "YoloLayer"]
