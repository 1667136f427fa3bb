"""``Graph``: layers in order, each reading the previous output or any earlier outputs (Darknet's
``route``/``shortcut``), with one or several outputs.

Forward runs the nodes in order and keeps every node's output in ``layer_outputs`` (node i's output
is ``layer_outputs[i]``: Darknet's layer numbering for cfg networks). Backward walks the nodes in
reverse with a loop (no recursion, so depth is unlimited) and, for an output read by several
consumers, SUMS the gradients they send back: the multivariable chain rule
``∂C/∂a = Σ_consumers ∂C/∂a|_consumer``.

Node protocol: a ``Module`` with one input has ``forward(x)`` / ``backward(dout) -> dx``; a module with
``multi_input = True`` gets the list of its inputs and returns one gradient per input (None allowed).
A node with ``stop_backward = True`` ends the backward pass before itself (Darknet's ``stopbackward``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ShapeError
from .module import Module

INPUT = -1  # the index that names the graph's input


class Graph(Module):
    """A directed acyclic graph of modules in topological order (node i reads nodes < i or the input)."""

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_node_inputs", [])
        object.__setattr__(self, "output_indices", [])
        object.__setattr__(self, "layer_outputs", [])

    # --- building ------------------------------------------------------------------------------
    def add(self, module: Module, inputs: Optional[Sequence[int]] = None) -> int:
        """Append ``module`` reading ``inputs`` (absolute indices; −1 = the graph input; default: the
        previous node, or the input for the first). Returns its index."""
        if not isinstance(module, Module):
            raise TypeError(f"Graph.add: expected a Module, got {type(module).__name__}")
        i = len(self._node_inputs)
        ins: Tuple[int, ...] = (i - 1,) if inputs is None else tuple(int(j) for j in inputs)
        if not ins:
            raise ValueError(f"Graph.add: node {i} needs at least one input")
        for j in ins:
            if not INPUT <= j < i:
                raise ValueError(f"Graph.add: node {i} cannot read node {j} (only −1..{i - 1})")
        if len(ins) > 1 and not getattr(module, "multi_input", False):
            raise ValueError(f"Graph.add: node {i} ({type(module).__name__}) reads {len(ins)} inputs but is not "
                             f"a multi_input module")
        self.add_module(str(i), module)
        self._node_inputs.append(ins)
        return i

    def set_outputs(self, indices: Sequence[int]) -> None:
        """Which nodes' outputs ``forward`` returns (default: the last node)."""
        n = len(self._node_inputs)
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < n:
                raise ValueError(f"Graph.set_outputs: no node {i} (0..{n - 1})")
        object.__setattr__(self, "output_indices", idx)

    @property
    def nodes(self) -> List[Module]:
        return list(self._modules.values())

    def node_inputs(self, i: int) -> Tuple[int, ...]:
        return self._node_inputs[i]

    def __len__(self) -> int:
        return len(self._node_inputs)

    def __getitem__(self, i: int) -> Module:
        return self.nodes[i]

    def _outputs(self) -> List[int]:
        return self.output_indices or [len(self._node_inputs) - 1]

    # --- passes --------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> Union[np.ndarray, List[np.ndarray]]:
        """Run every node; return the output node's array, or a list when there are several outputs."""
        if not self._node_inputs:
            raise ShapeError("Graph.forward: the graph has no nodes")
        nodes = self.nodes
        object.__setattr__(self, "layer_outputs", [])   # the last pass's outputs go before this one allocates
        outs: List[Optional[np.ndarray]] = [None] * len(nodes)
        for i, (mod, ins) in enumerate(zip(nodes, self._node_inputs)):
            if getattr(mod, "multi_input", False):
                outs[i] = mod.forward([x if j == INPUT else outs[j] for j in ins])
            else:
                j = ins[0]
                outs[i] = mod.forward(x if j == INPUT else outs[j])
        object.__setattr__(self, "layer_outputs", outs)
        sel = self._outputs()
        return outs[sel[0]] if len(sel) == 1 else [outs[i] for i in sel]

    def backward(self, dout: Union[np.ndarray, Sequence[Optional[np.ndarray]]],
                 keep: Optional[List[Optional[np.ndarray]]] = None) -> Optional[np.ndarray]:
        """``dout``: the gradient of the output (a list, one per output, None for an output without one).
        Returns ∂C/∂input (None if no node reading the input needs it). ``keep``: a list of one entry per
        node that receives a copy of ∂C/∂(node i's output), summed over its consumers."""
        sel = self._outputs()
        douts = [dout] if isinstance(dout, np.ndarray) else list(dout)
        if len(douts) != len(sel):
            raise ShapeError(f"Graph.backward: {len(sel)} output(s) but {len(douts)} gradient(s) given")
        nodes = self.nodes
        grads: List[Optional[np.ndarray]] = [None] * len(nodes)
        owned = [False] * len(nodes)  # whether grads[i] is our own array (safe to add into in place)
        grad_in: List[Optional[np.ndarray]] = [None]
        in_owned = [False]

        def acc(j: int, g: Optional[np.ndarray]) -> None:
            if g is None:
                return
            store, own, k = (grad_in, in_owned, 0) if j == INPUT else (grads, owned, j)
            if store[k] is None:
                store[k] = g
            elif own[k]:
                store[k] += g
            else:
                store[k] = store[k] + g
                own[k] = True

        for i, g in zip(sel, douts):
            acc(i, g)
        for i in range(len(nodes) - 1, -1, -1):
            g = grads[i]
            grads[i] = None  # free as we go
            if g is None:
                continue
            if keep is not None:
                keep[i] = g.copy()
            mod, ins = nodes[i], self._node_inputs[i]
            if getattr(mod, "stop_backward", False):
                break
            if INPUT in ins:
                object.__setattr__(mod, "needs_input_grad", self.needs_input_grad)
            if getattr(mod, "multi_input", False):
                for j, d in zip(ins, mod.backward(g)):
                    acc(j, d)
            else:
                acc(ins[0], mod.backward(g))
        return grad_in[0]

    def extra_repr(self) -> str:
        return f"{len(self._node_inputs)} nodes, outputs {self._outputs()}"
