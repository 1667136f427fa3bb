"""Optimizers and learning-rate schedules with PyTorch's names, formulas and state-dict format (docs/equations.md §7)."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .darknet import DarknetSGD
from .darknet_policy import DarknetLR
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
__all__ += ["DarknetSGD", "DarknetLR"]
