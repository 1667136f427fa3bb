"""Layers, losses and containers: PyTorch's names over deltaprop's explicit backward passes."""
from . import init, utils
from .activation import Identity, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .container import Sequential
from .conv import Conv1d, Conv2d
from .graph import Graph
from .linear import Linear
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HalfSquaredError, L2Penalty, MSELoss,
                   MulticlassHingeLoss, MultiMarginLoss, NLLLoss, ProbabilityCrossEntropyLoss)
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d, BatchNormAct2d, BatchNormActPool2d
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, LPPool2d, MaxPool2d
from .shape import Dropout, Flatten, Upsample
