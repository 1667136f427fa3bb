"""The loss of a cfg network: Darknet's loss layers (``[softmax]``, ``[cost]``, ``[logistic]``) against a
truth, their costs, and the backward pass they start. Two numerics (the network's ``numerics``):

- ``"darknet"``: exactly what the real program does (``functional.darknet_loss``). Each loss layer sets
  its delta in the forward pass and its backward adds that delta, WITHOUT any Jacobian, to the layer
  below: ``[softmax]`` gives its logits ``p − t`` (engine sign), ``[logistic]`` gives ``p − t``, ``[cost]``
  gives its input ``−scale·delta``. A ``[cost]`` after a ``[softmax]`` therefore reaches the logits
  unchanged: ``(1 + scale)(p − t)`` in all (sse). Costs are Darknet's: softmax ``Σ_{t≠0} −log p``, cost
  ``Σ error`` (unscaled), logistic BCE.
- ``"standard"``: true gradients of one objective, ``Σ`` over loss layers of: softmax ``−Σ t log p``
  (gradient at the logits ``(p·Σt − t)/T`` per softmax group), cost ``scale·½Σ(t − p)²`` (sse/masked),
  ``scale·Σ|t − p|`` (L1), ``scale·½·error`` (smooth, whose gradient has the right sign), logistic BCE;
  gradients from later layers go through each layer's own backward (softmax and σ' Jacobians). Costs are
  these terms, so the reported loss is the function being descended (gradcheckable).

Every layer of these kinds counts in the reported loss (``calc_network_cost``): ``Σ costs / count / batch``.
All gradients here are the engine's sign (``−delta``); they are summed over the images, as Darknet's.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError, ShapeError
from ..functional import darknet_loss as dl

LOSS_KINDS = ("softmax", "cost", "logistic")


def loss_layer_indices(net) -> List[int]:
    """Indices of the layers that compute a cost. Raises ConfigError for kinds this trainer cannot train
    ([yolo]) or for a loss layer read by a non-loss layer."""
    idx = []
    for i, layer in enumerate(net.layers):
        if layer.kind == "yolo":
            raise ConfigError(f"layer {i} [yolo]: training detection networks is not supported by the "
                              f"classifier trainer (deltaprop.darknet.trainer)")
        if layer.kind in LOSS_KINDS:
            idx.append(i)
    if not idx:
        raise ConfigError(f"{getattr(net, 'source', 'the cfg')}: no loss layer ([softmax], [cost] or [logistic]) "
                          f"to train against")
    for i in range(len(net.layers)):
        if net.layers[i].kind in LOSS_KINDS:
            continue
        for j in net.node_inputs(i):
            if j in idx:
                raise ConfigError(f"layer {i} [{net.layers[i].kind}] reads the loss layer {j}: only loss layers "
                                  f"may follow a loss layer in a trainable cfg")
    return idx


def _truth_for(out: np.ndarray, truth: np.ndarray, i: int, kind: str) -> np.ndarray:
    if truth.shape[0] != out.shape[0] or truth[0].size != out[0].size:
        raise ShapeError(f"layer {i} [{kind}]: truth of shape {truth.shape} does not fit its output "
                         f"{out.shape} ({out[0].size} values per image)")
    return truth.reshape(out.shape).astype(out.dtype, copy=False)


def _softmax_ce_grad(layer, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Standard: ∂(−Σ t log p)/∂x = (p·Σ_group t − t)/T, the groups as the layer's softmax."""
    n = p.shape[0]
    if getattr(layer, "spatial", False):
        pg, tg, ax = p.reshape(n, p.shape[1], -1), t.reshape(n, p.shape[1], -1), 1
    else:
        pg, tg, ax = p.reshape(n, layer.groups, -1), t.reshape(n, layer.groups, -1), 2
    g = pg * tg.sum(axis=ax, keepdims=True) - tg
    if layer.temperature != 1.0:
        g = g / p.dtype.type(layer.temperature)
    return g.reshape(p.shape)


def _standard_cost(layer, p: np.ndarray, t: np.ndarray) -> Tuple[float, np.ndarray]:
    kind = layer.cost_type
    s = float(layer.scale)
    if kind == "masked":
        p = np.where(t == t.dtype.type(dl.SECRET_NUM), t, p)
    diff = t - p
    if kind == "L1":
        return s * float(np.abs(diff).astype(np.float64).sum()), -p.dtype.type(s) * np.sign(diff)
    if kind == "smooth":
        a = np.abs(diff)
        small = a < 1
        err = np.where(small, diff * diff, 2 * a - 1)
        g = np.where(small, -diff, -np.sign(diff))
        return 0.5 * s * float(err.astype(np.float64).sum()), p.dtype.type(s) * g
    return 0.5 * s * float((diff.astype(np.float64) ** 2).sum()), -p.dtype.type(s) * diff


def _layer_loss(layer, i: int, x: np.ndarray, out: np.ndarray, truth: np.ndarray, g_out: Optional[np.ndarray],
                numerics: str) -> Tuple[float, Optional[np.ndarray]]:
    """(cost, gradient at the layer's input) of loss layer ``i``; ``g_out`` is what reached its output."""
    kind = layer.kind
    if kind == "softmax":
        if layer.noloss:
            cost, own = 0.0, None
        else:
            t = _truth_for(out, truth, i, kind)
            if numerics == "darknet":
                cost, own = dl.darknet_softmax_loss(out, t)
            else:
                nz = t != 0
                cost = float(-(t[nz].astype(np.float64) * np.log(out[nz].astype(np.float64))).sum())
                own = _softmax_ce_grad(layer, out, t)
        if g_out is not None:
            g_out = g_out if numerics == "darknet" else layer.backward(g_out)   # darknet: no Jacobian
        return cost, _add(own, g_out)
    if kind == "logistic":
        t = _truth_for(out, truth, i, kind)
        _, cost, own = dl.darknet_logistic(x, t)
        if g_out is not None:
            g_out = g_out if numerics == "darknet" else layer.backward(g_out)
        return cost, _add(own, g_out)
    # [cost]: the identity on its input; its loss compares that input with the truth
    t = _truth_for(x, truth, i, kind)
    if numerics == "darknet":
        cost, _, own = dl.darknet_cost(x, t, layer.cost_type, layer.scale)
        if g_out is not None:   # backward_cost_layer scales its whole delta buffer
            g_out = g_out * x.dtype.type(layer.scale)
    else:
        cost, own = _standard_cost(layer, x, t)
    return cost, _add(own, g_out)


def _add(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b.reshape(a.shape)


def network_loss(net, x_in: np.ndarray, truth: np.ndarray, numerics: Optional[str] = None,
                 backward: bool = True) -> Tuple[Dict[int, float], Optional[np.ndarray]]:
    """After ``net(x_in)`` in training mode: every loss layer's cost against ``truth`` (N, ...), and, with
    ``backward``, the backward pass through the whole network (parameter gradients ADDED into ``.grad``).
    Returns ``({layer index: cost}, ∂C/∂input or None)``."""
    numerics = numerics or net.numerics
    idx = loss_layer_indices(net)
    outs = net.layer_outputs
    if not outs or len(outs) != len(net.layers):
        raise ShapeError("network_loss: run the network's forward pass first")
    truth = np.asarray(truth)
    grads: Dict[int, np.ndarray] = {}
    costs: Dict[int, float] = {}
    for i in reversed(idx):
        layer = net.layers[i]
        j = net.node_inputs(i)[0]
        x = x_in if j < 0 else outs[j]
        cost, g = _layer_loss(layer, i, x, outs[i], truth, grads.pop(i, None), numerics)
        costs[i] = cost
        if g is not None:
            grads[j] = _add(grads.get(j), g)
    if not backward:
        return dict(sorted(costs.items())), None
    d_input = grads.pop(-1, None)
    if grads:
        keep = list(net.output_indices)
        order = sorted(grads)
        try:
            net.set_outputs(order)
            g_in = net.backward([grads[k].reshape(outs[k].shape) for k in order])
        finally:
            net.set_outputs(keep)
        d_input = _add(d_input, g_in)
    return dict(sorted(costs.items())), d_input


def reported_loss(costs: Dict[int, float], batch: int) -> float:
    """Darknet's printed loss for one forward pass of ``batch`` images: Σ costs / count / batch."""
    return dl.darknet_reported_loss(list(costs.values()), batch)
