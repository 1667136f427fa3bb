"""A ``Sequential`` model's evaluation forward as an ``EvalProgram`` (``functional.inference``), and the planned
forward that ``Sequential.forward`` takes in evaluation inside ``no_grad()``.

The layers become steps: ``Conv2d`` (cross-correlation, tied bias, no dilation) with the batch norm
(``BatchNorm2d``, ``BatchNormAct2d``, ``BatchNormActPool2d`` with running statistics) and the ReLU or leaky ReLU
that follow a ``ConvStep`` (the pooling of ``BatchNormActPool2d`` a ``MaxPoolStep``); ``MaxPool2d`` (no
dilation, floor mode) a ``MaxPoolStep``; ``Linear`` (after a ``Flatten``, which it absorbs) with the ReLU or
leaky ReLU that follows a ``DenseStep``; any other layer a ``CallStep`` of its own forward, as is a layer whose
``forward`` was replaced on the instance (a hook, ``Module.summary``). The numbers equal the layers' own to
float32 rounding (the batch norm is applied as a scale and shift per channel, ``conv_bn.bn_scale_shift``).

The program is kept on the model while it describes the same layers with the same arrays and the same input shape;
a forward that keeps caches drops it, as ``refold`` does by hand (after editing weights in place outside
training; replaced arrays are detected).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..functional import inference as fi
from ..functional.pool_geometry import pair2, pool_padding
from .activation import LeakyReLU, ReLU
from .conv import Conv2d
from .linear import Linear
from .normalization import BatchNorm2d, BatchNormAct2d, BatchNormActPool2d
from .pooling import MaxPool2d
from .shape import Flatten

_ATTR = "_eval_program"


def _wrapped(m) -> bool:
    return "forward" in m.__dict__


def _act_of(m) -> Optional[Tuple[str, float]]:
    """(activation, slope) of a ReLU or leaky ReLU the plan applies as max(y, s·y), else None."""
    if isinstance(m, ReLU) and not _wrapped(m):
        return "relu", 0.0
    if isinstance(m, LeakyReLU) and not _wrapped(m) and 0.0 <= m.negative_slope <= 1.0:
        return "leaky", m.negative_slope
    return None


def _bn_of(m) -> Optional[fi.BatchNormEval]:
    """A batch norm over (N, C, H, W) with running statistics, as its evaluation constants."""
    if not isinstance(m, BatchNorm2d) or _wrapped(m) or not m.track_running_stats:
        return None
    c = m.num_features
    dt = m.running_mean.dtype
    g = m.weight.data if m.affine else np.ones(c, dt)
    b = m.bias.data if m.affine else np.zeros(c, dt)
    return fi.BatchNormEval(g, b, m.running_mean, m.running_var, m.eps)


def _plain_conv(m) -> bool:
    return (isinstance(m, Conv2d) and not _wrapped(m) and len(m.kernel_size) == 2 and m.mode == "cross_correlation"
            and m.untied_bias is None and tuple(m.dilation) == (1, 1))


def program(model, input_shape: Tuple[int, ...]) -> fi.EvalProgram:
    """The evaluation program of the ``Sequential`` ``model`` for inputs (N,) + ``input_shape``."""
    layers = list(model)
    steps: List[fi.Step] = []
    i = 0

    def prev() -> int:
        return len(steps) - 1 if steps else fi.INPUT

    while i < len(layers):
        m = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if _plain_conv(m):
            bn = _bn_of(nxt)
            j = i + 1 + (bn is not None)
            act = ("linear", 1.0)
            pool = False
            if bn is not None and isinstance(nxt, BatchNormAct2d):
                act = (nxt.activation, nxt.negative_slope if nxt.activation == "leaky" else 0.0)
                pool = isinstance(nxt, BatchNormActPool2d)
            elif j < len(layers) and _act_of(layers[j]) is not None:
                act = _act_of(layers[j])
                j += 1
            steps.append(fi.ConvStep(prev(), m.weight.data, None if m.bias is None else m.bias.data, bn, act[0],
                                     act[1], tuple(m.stride), tuple(m._p4), m.groups))
            if pool:
                steps.append(fi.MaxPoolStep(prev(), (2, 2), (2, 2)))
            i = j
            continue
        if isinstance(m, MaxPool2d) and not _wrapped(m) and pair2(m.dilation, "dilation") == (1, 1) \
                and not m.ceil_mode:
            steps.append(fi.MaxPoolStep(prev(), pair2(m.kernel_size, "kernel_size"), pair2(m.stride, "stride"),
                                        pool_padding(m.padding)))
            i += 1
            continue
        flat = isinstance(m, Flatten) and not _wrapped(m) and m.start_dim == 1 and m.end_dim == -1
        lin = nxt if flat else m
        if isinstance(lin, Linear) and not _wrapped(lin):
            j = i + (2 if flat else 1)
            act = _act_of(layers[j]) if j < len(layers) else None
            steps.append(fi.DenseStep(prev(), lin.weight.data, None if lin.bias is None else lin.bias.data,
                                      *(act or ("linear", 1.0))))
            i = j + (act is not None)
            continue
        steps.append(fi.CallStep((prev(),), m.forward, type(m).__name__))
        i += 1
    return fi.EvalProgram(steps, (len(steps) - 1,), tuple(input_shape))


def state_key(model, input_shape: Tuple[int, ...]) -> tuple:
    """What a kept program depends on, cheap to compare: the input shape, each module (its identity, a forward
    replaced on the instance, its numerics settings) and the identity of every parameter's array and buffer. The
    kept program holds those arrays, so an identity cannot be reused by another array while it lives."""
    mods = tuple((id(m), id(m.__dict__.get("forward")), getattr(m, "numerics", None), getattr(m, "sums", None),
                  getattr(m, "fork", None)) for m in model.modules())
    return (tuple(input_shape), mods, tuple(id(p.data) for p in model.parameters()),
            tuple(id(b) for _, b in model.named_buffers()))


def kept_program(model, input_shape: Tuple[int, ...], build) -> fi.EvalProgram:
    """The program kept on ``model`` while its ``state_key`` is the same, else ``build()`` (kept with its key)."""
    key = state_key(model, input_shape)
    kept = model.__dict__.get(_ATTR)
    if kept is not None and kept[0] == key:
        return kept[1]
    new = build()
    object.__setattr__(model, _ATTR, (key, new))
    return new


def current_program(model, input_shape: Tuple[int, ...]) -> fi.EvalProgram:
    """The program of ``model`` for inputs of ``input_shape``, kept while the model's state is the same."""
    return kept_program(model, input_shape, lambda: program(model, input_shape))


def kept(model) -> Optional[fi.EvalProgram]:
    """The program kept on ``model`` (None when none is)."""
    entry = model.__dict__.get(_ATTR)
    return None if entry is None else entry[1]


def refold(model) -> None:
    """Forget the kept program (its folded weights with it); the next planned forward folds them again."""
    object.__setattr__(model, _ATTR, None)


def plannable(model, x) -> bool:
    """Whether ``x`` is a batch the program can take: images (N, C, H, W), or rows (N, features) for a model that
    starts with a ``Linear`` (an unbatched sample, (C, H, W) or (features,), runs layer by layer)."""
    if not isinstance(x, np.ndarray):
        return False
    first = next(iter(model), None)
    return x.ndim == 4 or (x.ndim == 2 and isinstance(first, Linear))


def planned_forward(model, x: np.ndarray) -> np.ndarray:
    """The evaluation forward of ``model`` through ``functional.inference.run_program``."""
    return fi.run_program(current_program(model, x.shape[1:]), x)[0]
