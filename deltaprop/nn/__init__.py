"""Layers, losses and containers: PyTorch's names over deltaprop's explicit backward passes."""
from . import init
from .activation import Identity, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .container import Sequential
from .linear import Linear
from .module import Module
from .parameter import Parameter
from .conv import Conv1d, Conv2d
from .shape import Dropout, Flatten, Upsample
from .graph import Graph
from . import utils
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HalfSquaredError, L2Penalty, MSELoss,
                   MulticlassHingeLoss, MultiMarginLoss, NLLLoss, ProbabilityCrossEntropyLoss)
from .pooling import AdaptiveAvgPool2d, AvgPool2d, LPPool2d, MaxPool2d
from .normalization import BatchNorm1d, BatchNorm2d, BatchNormAct2d
