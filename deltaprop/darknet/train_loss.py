"""The loss of a cfg network: every loss layer (``[softmax]``, ``[cost]``, ``[logistic]``, ``[yolo]``) computes
its own cost and gradient (its ``loss`` method, as Darknet's layer files set their delta), from the last
layer back, then one backward pass runs through the rest of the network. Two numerics (the layers'):

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

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional import darknet_loss as dl

LOSS_KINDS = ("softmax", "cost", "logistic", "yolo")


def loss_layer_indices(net) -> List[int]:
    """Indices of the layers that compute a cost. ConfigError if there is none, or if a loss layer is read
    by a non-loss layer."""
    idx = [i for i, layer in enumerate(net.layers) if layer.kind in LOSS_KINDS]
    if not idx:
        raise ConfigError(f"{getattr(net, 'source', 'the cfg')}: no loss layer ([softmax], [cost], [logistic] "
                          f"or [yolo]) to train against")
    for i in range(len(net.layers)):
        if net.layers[i].kind in LOSS_KINDS:
            continue
        for j in net.node_inputs(i):
            if j in idx:
                raise ConfigError(f"layer {i} [{net.layers[i].kind}] reads the loss layer {j}: only loss layers "
                                  f"may follow a loss layer in a trainable cfg")
    return idx


@dataclass
class NetworkLoss:
    """The losses of one forward pass: ``costs`` per loss layer, ``grads`` waiting to be propagated
    (node index → ∂C/∂output, −1 for the network input), ``output_grads`` of the loss layers themselves."""
    costs: Dict[int, float]
    grads: Dict[int, np.ndarray]
    output_grads: Dict[int, np.ndarray]
    batch: int
    assignments: Dict[int, Any] = field(default_factory=dict)

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
    the layers' for this call; ``assignments`` ({layer: YoloAssignment}) holds [yolo] targets fixed."""
    idx = loss_layer_indices(net)
    outs = net.layer_outputs
    if not outs or len(outs) != len(net.layers) or any(outs[i] is None for i in idx):
        raise ShapeError("net.loss: run the network's forward pass (in train mode) first")
    if not isinstance(truth, (list, tuple)):
        truth = np.asarray(truth)
    pending: Dict[int, np.ndarray] = {}
    costs: Dict[int, float] = {}
    out_grads: Dict[int, np.ndarray] = {}
    asg: Dict[int, Any] = {}
    net_size = (net.input_shape[2], net.input_shape[1])
    for i in reversed(idx):
        layer = net.layers[i]
        before = layer.numerics
        if numerics is not None and numerics != before:
            layer.set_numerics(numerics)
        try:
            j = net.node_inputs(i)[0]
            x = x_in if j < 0 else outs[j]
            res = layer.loss(x, outs[i], truth, pending.pop(i, None), net_size=net_size,
                             assignment=(assignments or {}).get(i))
        finally:
            if layer.numerics != before:
                layer.set_numerics(before)
        costs[i] = res.cost
        if res.grad_output is not None:
            out_grads[i] = res.grad_output
        if getattr(layer, "assignment", None) is not None:
            asg[i] = layer.assignment
        if res.grad_input is not None:
            pending[j] = dl.add_grads(pending.get(j), res.grad_input)
    return NetworkLoss(dict(sorted(costs.items())), pending, out_grads, int(outs[idx[0]].shape[0]), asg)


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
