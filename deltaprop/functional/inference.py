"""A network's evaluation forward as a program of steps, and its reference: each step by the textbook ops.

In evaluation (running statistics, no gradient) a convolutional network is a fixed function of its input. A
network describes that function as an ``EvalProgram``: steps in order, each reading earlier steps' outputs (or
the input, index −1), among them

- ``ConvStep``: convolution (Conv forward), then the batch norm with its running statistics (BN forward in
  evaluation, ``conv_bn.bn_scale_shift``) or the bias, then the activation (linear, ReLU or leaky);
- ``MaxPoolStep``: max pooling with −∞ outside the input (max pooling, Darknet's asymmetric padding included);
- ``ConcatStep``: the inputs side by side along the channels (Darknet's ``[route]``);
- ``UpsampleStep``: nearest-neighbour upsampling, times a scale;
- ``DenseStep``: a fully connected layer and its activation (FC forward);
- ``LogisticStep``: the logistic on some channels (``[yolo]``);
- ``CallStep``: any other layer, computed by its own evaluation forward.

``run_program`` (the op ``eval_program``) is the reference: every step by the functions that compute it in
training too, in the order the layers would. The compiled plan of ``fast/inference_plan.py`` is its fast variant
(the batch norm folded into the weights once, fused epilogues, Winograd products, buffers reused between calls;
docs/inference.md); ``tests/test_variants.py`` holds the two equal within float32 rounding.

A program holds the layers' own arrays (weights, biases, running statistics), not copies; whoever keeps a program
(``nn.eval_program.kept_program``) keeps it only while the network's arrays are the same objects, so what is
derived from it (the plan's folded weights) follows the network's weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import dispatch
from .activation import leaky_relu_into, sigmoid_forward
from .conv import conv2d_forward
from .conv_bn import TAIL_ACTIVATIONS, affine_act_, bn_scale_shift
from .dense import linear_forward
from .pool import max_pool2d_forward
from .shape import upsample_nearest_forward

INPUT = -1        # the index that names the program's input

#: the activations a ConvStep or DenseStep applies: max(y, slope·y) with slope 1 (linear), 0 (ReLU) or its own
ACTIVATIONS = tuple(TAIL_ACTIVATIONS)


@dataclass(eq=False)
class BatchNormEval:
    """A batch norm in evaluation: γ, β and the running statistics, ε, and where ε goes (Darknet adds it
    outside the square root, ``bn_scale_shift``)."""
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float
    eps_outside_root: bool = False

    def scale_shift(self, dtype) -> Tuple[np.ndarray, np.ndarray]:
        """(scale, shift) with y = z·scale + shift per channel (``conv_bn.bn_scale_shift``)."""
        return bn_scale_shift(self.gamma, self.beta, self.running_mean, self.running_var, self.eps,
                              eps_outside_root=self.eps_outside_root, dtype=dtype)


@dataclass(eq=False)
class ConvStep:
    """conv(x, weight) [+ bias] → [batch norm] → activation. ``padding`` is (top, bottom, left, right)."""
    src: int
    weight: np.ndarray
    bias: Optional[np.ndarray]
    bn: Optional[BatchNormEval]
    activation: str
    slope: float
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1

    @property
    def srcs(self) -> Tuple[int, ...]:
        return (self.src,)


@dataclass(eq=False)
class MaxPoolStep:
    """Max pooling; ``padding`` (top, bottom, left, right) cells read −∞."""
    src: int
    size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def srcs(self) -> Tuple[int, ...]:
        return (self.src,)


@dataclass(eq=False)
class ConcatStep:
    """The outputs of ``inputs`` side by side along the channels."""
    inputs: Tuple[int, ...]

    @property
    def srcs(self) -> Tuple[int, ...]:
        return tuple(self.inputs)


@dataclass(eq=False)
class UpsampleStep:
    """Nearest-neighbour upsampling by ``stride``, times ``scale``."""
    src: int
    stride: int
    scale: float = 1.0

    @property
    def srcs(self) -> Tuple[int, ...]:
        return (self.src,)


@dataclass(eq=False)
class DenseStep:
    """x (N, …) flattened, times weightᵀ (weight (out, in)), plus bias, then the activation."""
    src: int
    weight: np.ndarray
    bias: Optional[np.ndarray]
    activation: str = "linear"
    slope: float = 1.0

    @property
    def srcs(self) -> Tuple[int, ...]:
        return (self.src,)


@dataclass(eq=False)
class LogisticStep:
    """The logistic σ(x) = 1/(1 + e^{−x}) on the channels where ``mask`` is true, the others as they are (a
    ``[yolo]`` layer in evaluation: x, y, objectness and classes through σ, w and h not)."""
    src: int
    mask: Tuple[bool, ...]

    @property
    def srcs(self) -> Tuple[int, ...]:
        return (self.src,)


@dataclass(eq=False)
class CallStep:
    """Any other layer: ``fn`` is its evaluation forward, called with its input's array, or with the list of its
    inputs' arrays when it takes several or ``multi`` (a layer that always takes a list: ``[route]``). ``shape``:
    its output's shape for one sample when the builder knows it (a cfg layer's planned shape), else None."""
    inputs: Tuple[int, ...]
    fn: Callable
    name: str = ""
    multi: bool = False
    shape: Optional[Tuple[int, ...]] = None

    @property
    def srcs(self) -> Tuple[int, ...]:
        return tuple(self.inputs)


Step = object   # one of the step classes above


@dataclass(eq=False)
class EvalProgram:
    """Steps in order and the indices of the outputs; ``input_shape`` is (C, H, W) of one sample."""
    steps: List[Step]
    outputs: Tuple[int, ...]
    input_shape: Tuple[int, ...]



# --- the reference ----------------------------------------------------------------------------------------------

def activate_(y: np.ndarray, activation: str, slope: float) -> np.ndarray:
    """In place: y ← max(y, s·y) with s = 1 (linear: nothing to do), 0 (ReLU) or ``slope`` (leaky)."""
    if activation != "linear":
        leaky_relu_into(y, slope if activation == "leaky" else 0.0, y)
    return y


def conv_step(step: ConvStep, x: np.ndarray) -> np.ndarray:
    """Conv forward, then the batch norm in evaluation and the activation in one pass (``affine_act_``), or the
    bias (added by the convolution) and the activation."""
    z, _ = conv2d_forward(x, step.weight, step.bias, stride=step.stride, padding=step.padding, groups=step.groups,
                          keep_cols=False)
    if step.bn is not None:
        scale, shift = step.bn.scale_shift(z.dtype)
        return affine_act_(z, scale, shift, step.activation, step.slope)
    return activate_(z, step.activation, step.slope)


def dense_step(step: DenseStep, x: np.ndarray) -> np.ndarray:
    """FC forward on x flattened per sample, then the activation."""
    y, _ = linear_forward(x.reshape(x.shape[0], -1), step.weight, step.bias)
    return activate_(y, step.activation, step.slope)


def upsample_step(step: UpsampleStep, x: np.ndarray) -> np.ndarray:
    y, _ = upsample_nearest_forward(x, step.stride)
    if step.scale != 1.0:
        y *= x.dtype.type(step.scale)
    return y


def logistic_step(step: LogisticStep, x: np.ndarray) -> np.ndarray:
    """A copy of x with ``activation.sigmoid_forward`` on the masked channels."""
    y = x.copy()
    idx = np.flatnonzero(np.asarray(step.mask))
    y[:, idx] = sigmoid_forward(x[:, idx])[0]
    return y


def run_step(step: Step, xs: List[np.ndarray]) -> np.ndarray:
    """One step on its inputs' arrays."""
    if isinstance(step, ConvStep):
        return conv_step(step, xs[0])
    if isinstance(step, MaxPoolStep):
        return max_pool2d_forward(xs[0], step.size, step.stride, padding=step.padding)[0]
    if isinstance(step, ConcatStep):
        return xs[0] if len(xs) == 1 else np.concatenate(xs, axis=1)
    if isinstance(step, UpsampleStep):
        return upsample_step(step, xs[0])
    if isinstance(step, DenseStep):
        return dense_step(step, xs[0])
    if isinstance(step, LogisticStep):
        return logistic_step(step, xs[0])
    if isinstance(step, CallStep):
        return step.fn(list(xs) if step.multi or len(xs) > 1 else xs[0])
    raise TypeError(f"eval program: unknown step {type(step).__name__}")


@dispatch.op("eval_program")
def run_program(program: EvalProgram, x: np.ndarray, keep_steps: bool = False):
    """The program's outputs for the input x (N, C, H, W): every step in order by ``run_step``. With
    ``keep_steps``, (outputs, every step's output): a fast variant may leave None for a step it fused away and
    views of buffers it reuses (``StepOutputs`` reads them)."""
    outs: List[Optional[np.ndarray]] = [None] * len(program.steps)
    for i, step in enumerate(program.steps):
        outs[i] = run_step(step, [x if j == INPUT else outs[j] for j in step.srcs])
    result = [outs[i] for i in program.outputs]
    return (result, outs) if keep_steps else result


class StepOutputs(list):
    """Every step's output of one ``run_program(..., keep_steps=True)``, read as a list (a graph's
    ``layer_outputs``): each entry is copied out of the buffers the plan reuses when first read, a step the plan
    fused away (a convolution whose pooled map alone was written) is computed then from its inputs by
    ``run_step``. ``freeze`` reads them all (before the next call overwrites the buffers, when the list is still
    held by someone)."""

    def __init__(self, program: EvalProgram, x: np.ndarray, raw: Sequence[Optional[np.ndarray]],
                 outputs: Sequence[np.ndarray]) -> None:
        super().__init__([None] * len(raw))
        self._program, self._x, self._raw = program, x, list(raw)
        self._done = [False] * len(raw)
        self._copies: dict = {}
        for i, o in zip(program.outputs, outputs):       # the outputs handed to the caller are fresh already
            self._set(i, o)

    def _set(self, i: int, value: np.ndarray) -> None:
        list.__setitem__(self, i, value)
        self._done[i] = True
        if self._raw[i] is not None:
            self._copies[id(self._raw[i])] = value

    def _entry(self, i: int) -> np.ndarray:
        if not self._done[i]:
            raw = self._raw[i]
            if raw is None:
                step = self._program.steps[i]
                value = run_step(step, [self._x if j == INPUT else self._entry(j) for j in step.srcs])
            else:
                value = self._copies.get(id(raw))            # a step that passes its input on: the same array
                if value is None:
                    value = np.array(raw, copy=True)
            self._set(i, value)
        return list.__getitem__(self, i)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._entry(k) for k in range(len(self))[i]]
        return self._entry(range(len(self))[i])

    def __iter__(self):
        return (self._entry(k) for k in range(len(self)))

    def freeze(self) -> None:
        """Read every entry now."""
        for k in range(len(self)):
            self._entry(k)
        self._raw = [None] * len(self)
