"""The loss of a cfg network: every loss layer (a ``LossLayer``: ``[softmax]``, ``[cost]``, ``[logistic]``,
``[yolo]``) computes its own cost and gradient (its ``loss`` method, as Darknet's layer files set their delta),
from the last layer back, then one backward pass runs through the rest of the network. ``compute_losses``
returns a ``NetworkLoss``: each layer's ``LossResult`` (cost, gradients, the ``[yolo]`` assignment and
statistics), the gradients to propagate, and Darknet's reported loss. Two numerics (the layers'):

- ``"darknet"``: exactly what the real program does. Each loss layer sets its delta in the forward pass and
  its backward adds that delta, WITHOUT any Jacobian, to the layer below: ``[softmax]`` gives its logits
  ``p − t`` (engine sign), ``[logistic]`` ``p − t``, ``[cost]`` its input ``−scale·delta``, ``[yolo]`` its raw
  input ``−delta`` (docs/equations.md §9). A ``[cost]`` after a ``[softmax]`` therefore reaches the logits
  unchanged: ``(1 + scale)(p − t)`` in all (sse). Costs are Darknet's: softmax ``Σ_{t≠0} −log p``, cost
  ``Σ error`` (unscaled), logistic BCE, yolo ``Σ delta²``.
- ``"standard"``: true gradients of one objective, the sum over loss layers of: softmax ``−Σ t log p``,
  cost ``scale·½Σ(t − p)²`` (sse/masked), ``scale·Σ|t − p|`` (L1), ``scale·½·error`` (smooth), logistic
  BCE, yolo the differentiable loss of docs/equations.md §9 (assignment and ignore masks fixed per step);
  gradients from later layers go through each layer's own backward. Costs are these terms (gradcheckable).

Darknet's reported loss of one forward pass: ``Σ costs / count / batch`` (``calc_network_cost``,
``train_network``). All gradients are the engine's sign (``−delta``) and SUMMED over the images (the
function differentiated is ``Σ costs``), as Darknet's, whose update divides by the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, ShapeError, ValueRangeError
from ..functional import darknet_loss as dl
from .layers import LossLayer, LossResult, YoloLossResult


def loss_layer_indices(net) -> List[int]:
    """Indices of the layers that compute a cost (the ``LossLayer``s). ConfigError if there is none, or if a
    loss layer is read by a layer that is not one."""
    idx = [i for i, layer in enumerate(net.layers) if isinstance(layer, LossLayer)]
    if not idx:
        raise ConfigError(f"{net.source}: no loss layer ([softmax], [cost], [logistic] or [yolo]) to train "
                          f"against")
    for i, layer in enumerate(net.layers):
        if isinstance(layer, LossLayer):
            continue
        for j in net.node_inputs(i):
            if j in idx:
                raise ConfigError(f"layer {i} [{layer.kind}] reads the loss layer {j}: only loss layers "
                                  f"may follow a loss layer in a trainable cfg")
    return idx


@dataclass
class NetworkLoss:
    """The losses of one forward pass of ``batch`` images: ``results`` (loss layer index → its
    ``LossResult``, in layer order) and ``grads``, the gradients waiting to be propagated (node index →
    ∂C/∂output, −1 for the network input). The rest is read from the results."""
    results: Dict[int, LossResult]
    grads: Dict[int, np.ndarray]
    batch: int

    @property
    def costs(self) -> Dict[int, float]:
        """Each loss layer's cost."""
        return {i: r.cost for i, r in self.results.items()}

    @property
    def output_grads(self) -> Dict[int, np.ndarray]:
        """∂C/∂(output) of each loss layer that has one."""
        return {i: r.grad_output for i, r in self.results.items() if r.grad_output is not None}

    @property
    def assignments(self) -> Dict[int, Any]:
        """The decisions of the loss layers that take some (``[yolo]``: {layer: YoloAssignment}); given back
        to ``compute_losses`` they are held fixed."""
        return {i: r.assignment for i, r in self.results.items() if r.assignment is not None}

    @property
    def heads(self) -> List[YoloLossResult]:
        """The ``[yolo]`` heads' results, in layer order."""
        return [r for r in self.results.values() if isinstance(r, YoloLossResult)]

    @property
    def yolo_stats(self) -> List[Dict[str, float]]:
        """Per ``[yolo]`` head, Darknet's statistics with its ``layer`` (``YoloLossResult.stats_row``)."""
        return [r.stats_row() for r in self.heads]

    @property
    def reported(self) -> float:
        """Darknet's printed loss: Σ costs / number of cost layers / batch."""
        return dl.darknet_reported_loss(list(self.costs.values()), self.batch)

    @property
    def total(self) -> float:
        """Σ costs: the function ``backward`` differentiates (in standard numerics)."""
        return float(sum(self.costs.values()))


def compute_losses(net, x_in: np.ndarray, truth, numerics: Optional[str] = None,
                   assignments: Optional[Dict[int, Any]] = None) -> NetworkLoss:
    """After ``net(x_in)`` in training mode: every loss layer's ``loss`` against ``truth``, from the last
    back (a loss layer reading another passes its gradient on). ``truth``: (N, ...) for classifier
    layers, one (k, 5) array of ``[class, x, y, w, h]`` per image for ``[yolo]``. ``numerics`` overrides
    the layers' for this call; ``assignments`` ({layer: its result's ``assignment``}, e.g. an earlier
    ``NetworkLoss.assignments``) holds those layers' decisions fixed."""
    idx = loss_layer_indices(net)
    outs = net.layer_outputs
    if not outs or len(outs) != len(net.layers) or any(outs[i] is None for i in idx):
        raise ShapeError("net.loss: run the network's forward pass (in train mode) first")
    fixed = dict(assignments or {})
    stray = sorted(set(fixed) - set(idx))
    if stray:
        raise ValueRangeError(f"assignments given for layers {stray}, which are not loss layers (those are {idx})")
    if not isinstance(truth, (list, tuple)):
        truth = np.asarray(truth)
    pending: Dict[int, np.ndarray] = {}
    results: Dict[int, LossResult] = {}
    for i in reversed(idx):
        layer: LossLayer = net.layers[i]
        before = layer.numerics
        if numerics is not None and numerics != before:
            layer.set_numerics(numerics)
        try:
            j = net.node_inputs(i)[0]
            x = x_in if j < 0 else outs[j]
            res = layer.loss(x, outs[i], truth, pending.pop(i, None), fixed.get(i))
        finally:
            if layer.numerics != before:
                layer.set_numerics(before)
        results[i] = res
        if res.grad_input is not None:
            pending[j] = dl.add_grads(pending.get(j), res.grad_input)
    return NetworkLoss(dict(sorted(results.items())), pending, int(outs[idx[0]].shape[0]))


def backpropagate(net, nl: NetworkLoss, keep: bool = True) -> Tuple[Optional[np.ndarray], List[Optional[np.ndarray]]]:
    """One backward pass from the loss layers' gradients (parameter gradients ADDED into ``.grad``).
    Returns (∂C/∂input or None, ∂C/∂(output of layer i) for every i, None where nothing reached it;
    with ``keep=False`` an empty list: nothing is copied)."""
    grads = dict(nl.grads)
    d_input = grads.pop(-1, None)
    layer_grads: List[Optional[np.ndarray]] = [None] * len(net.layers)
    if grads:
        outs = net.layer_outputs
        keep_outputs = list(net.output_indices)
        order = sorted(grads)
        try:
            net.set_outputs(order)
            g_in = net.graph_backward([grads[k].reshape(outs[k].shape) for k in order],
                                      keep=layer_grads if keep else None)
        finally:
            net.set_outputs(keep_outputs)
        d_input = dl.add_grads(d_input, g_in)
    if not keep:
        return d_input, []
    for i, g in nl.output_grads.items():
        layer_grads[i] = g
    return d_input, layer_grads


def network_loss(net, x_in: np.ndarray, truth, numerics: Optional[str] = None,
                 backward: bool = True) -> Tuple[Dict[int, float], Optional[np.ndarray]]:
    """``compute_losses`` and, with ``backward``, ``backpropagate``: ``({layer index: cost}, ∂C/∂input)``."""
    nl = compute_losses(net, x_in, truth, numerics)
    if not backward:
        return nl.costs, None
    d_input, _ = backpropagate(net, nl)
    return nl.costs, d_input


def reported_loss(costs: Dict[int, float], batch: int) -> float:
    """Darknet's printed loss for one forward pass of ``batch`` images: Σ costs / count / batch."""
    return dl.darknet_reported_loss(list(costs.values()), batch)
