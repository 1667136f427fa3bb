"""A cfg network's evaluation forward as an ``EvalProgram`` (``functional.inference``), and the planned forward.

``program(net)`` describes each layer by its step: ``[convolutional]`` with a linear, ReLU or leaky activation a
``ConvStep`` (its weights, its bias or its batch norm's γ, β and rolling statistics with ε where the numerics put
it), ``[maxpool]`` a ``MaxPoolStep`` (Darknet's padding), ``[route]`` a ``ConcatStep``, ``[upsample]`` an
``UpsampleStep``, ``[yolo]`` in the standard numerics a ``LogisticStep``, every other layer (``[shortcut]``, other
activations, AlexeyAB's grouped routes and ``scale_x_y``, Darknet's summation order, a layer whose ``forward`` was
wrapped by a hook) a ``CallStep`` of its own evaluation forward, with its planned output shape.

``planned_forward(net, x)`` runs the network's program through the op ``eval_program``: its compiled plan with
numba (docs/inference.md), else the reference. ``DarknetNet.forward`` takes it in evaluation inside ``no_grad()``.
The program is kept on the network while it describes the same layers with the same arrays; a forward that keeps
caches (training, ``enable_grad``) drops it, since the weights may change after it; ``refold(net)``
(``nn.eval_program.refold``) drops it by hand (after editing weights in place outside training).
"""
from __future__ import annotations

import weakref
from typing import List, Optional

import numpy as np

from ..functional import inference as fi
from ..nn.eval_program import kept, kept_program, refold  # noqa: F401  (refold, kept: the hook's, re-exported)
from .activations import LEAKY_SLOPE
from .layers import ConvolutionalLayer, MaxpoolLayer, RouteLayer, UpsampleLayer, YoloLayer

def _wrapped(module) -> bool:
    """Whether ``module.forward`` was replaced on the instance (a hook, a profiler): then the layer runs as is."""
    return module is not None and "forward" in module.__dict__


def _conv_step(layer: ConvolutionalLayer, src: int) -> Optional[fi.ConvStep]:
    """The layer's evaluation (``ConvolutionalLayer._infer``: the convolution, the batch norm folded with the ε its
    fork and numerics place, ``eval_eps``, and the activation) as a step; None where it computes something else
    (another activation, a wrapped forward, Darknet's summation order)."""
    bn = layer.bn
    if layer.activation not in fi.ACTIVATIONS or _wrapped(layer) or _wrapped(bn) or layer.sums != "pairwise":
        return None
    if bn is not None and bn.numerics == "darknet" and getattr(bn, "sums", "pairwise") != "pairwise":
        return None
    step_bn = None
    if bn is not None:
        eps, outside = bn.eval_eps()
        step_bn = fi.BatchNormEval(bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var, eps, outside)
    p = layer.padding
    return fi.ConvStep(src, layer.weight.data, None if layer.bias is None else layer.bias.data, step_bn,
                       layer.activation, LEAKY_SLOPE, (layer.stride, layer.stride), (p, p, p, p), layer.groups)


def _step(layer, ins) -> fi.Step:
    step = None
    if isinstance(layer, ConvolutionalLayer):
        step = _conv_step(layer, ins[0])
    elif _wrapped(layer):
        step = None
    elif isinstance(layer, MaxpoolLayer) and not layer.depth:
        step = fi.MaxPoolStep(ins[0], (layer.size, layer.size), (layer.stride, layer.stride), tuple(layer.pads))
    elif isinstance(layer, RouteLayer) and layer.groups == 1:
        step = fi.ConcatStep(tuple(ins))
    elif isinstance(layer, UpsampleLayer):
        step = fi.UpsampleStep(ins[0], layer.stride, layer.scale)
    elif isinstance(layer, YoloLayer) and layer.numerics == "standard" and layer.scale_x_y == 1.0:
        # σ on x, y, objectness and the classes of each anchor's 5 + classes channels; w and h (2, 3) as they are
        per = layer.classes + 5
        step = fi.LogisticStep(ins[0], tuple(c % per not in (2, 3) for c in range(layer.n_anchors * per)))
    return step if step is not None else fi.CallStep(tuple(ins), layer.forward, layer.kind,
                                                     bool(getattr(layer, "multi_input", False)),
                                                     tuple(layer.out_shape))


def program(net) -> fi.EvalProgram:
    """The evaluation program of ``net`` as its layers are now."""
    steps: List[fi.Step] = [_step(layer, net.node_inputs(i)) for i, layer in enumerate(net.layers)]
    outputs = tuple(net.output_indices or [len(steps) - 1])
    return fi.EvalProgram(steps, outputs, tuple(net.input_shape))


def current_program(net) -> fi.EvalProgram:
    """The program of ``net``, kept while the network's state is the same (``nn.eval_program.kept_program``)."""
    return kept_program(net, tuple(net.input_shape), lambda: program(net))


def planned_forward(net, x: np.ndarray):
    """The evaluation forward through ``functional.inference.run_program`` (its compiled plan with numba): the
    output array, or a list with one per output layer. ``layer_outputs`` holds every layer's output of this
    forward as before, read on demand (``functional.inference.StepOutputs``): a list of them kept from an earlier
    forward is read whole before this one reuses the plan's buffers."""
    earlier = net.__dict__.get("layer_outputs")
    object.__setattr__(net, "layer_outputs", [])
    if isinstance(earlier, fi.StepOutputs):
        alive = weakref.ref(earlier)
        del earlier
        if alive() is not None:                  # someone kept the list: its arrays must stay that forward's
            alive().freeze()
    program = current_program(net)
    outs, steps = fi.run_program(program, x, keep_steps=True)
    object.__setattr__(net, "layer_outputs", fi.StepOutputs(program, x, steps, outs))
    return outs[0] if len(outs) == 1 else outs
