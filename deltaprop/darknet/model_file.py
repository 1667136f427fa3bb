"""What a deltaprop model file may name of Darknet, registered into :mod:`deltaprop.checkpoint_schema` when this
module is imported: the ``darknet_cfg`` architecture (``{"kind": "darknet_cfg", "cfg": text, "numerics": ...}``,
checked, planned against the budget, then built by ``load_cfg_text``) and the Darknet memory budget
(``DELTAPROP_DARKNET_BUDGET``) as the default budget of every rebuilt model. The cfg layers themselves are not
registered as ``sequential`` layers: they are built from a planned cfg, never from a file's constructor
arguments.

``checkpoint_schema`` imports this module (and only the modules of its fixed ``PROVIDERS`` list) when a model file
names the kind before anything registered it, so the packages below ``darknet`` never import it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import numpy as np

from .. import backend
from ..checkpoint_schema import Schema, guarded, register_architecture, register_budget, show
from ..errors import CheckpointError
from ..nn.parameter import allocation_limit
from .cfg import parse_cfg_text
from .layers import NUMERICS
from .network import get_memory_budget, plan_network

KIND = "darknet_cfg"


def check(schema: Schema, arch: Dict[str, Any], field: str) -> None:
    """The fields of a ``darknet_cfg`` architecture: the cfg text, a known ``numerics``."""
    if not isinstance(arch.get("cfg"), str):
        raise schema.error(f"{field}.cfg", f"expected the cfg text, got {show(arch.get('cfg'))}")
    if arch.get("numerics", "darknet") not in NUMERICS:
        raise schema.error(f"{field}.numerics", f"expected one of {', '.join(NUMERICS)}, got "
                                                f"{show(arch.get('numerics'))}")


def build(arch: Dict[str, Any], budget: int, schema: Schema, over: Callable[[int], CheckpointError]):
    """The network of a checked ``darknet_cfg`` architecture: planned (nothing allocated) and its parameter
    count checked against ``budget`` before ``load_cfg_text`` builds it."""
    from . import load_cfg_text
    where, field = schema.where, "architecture.cfg"
    plan = guarded(where, field, lambda: plan_network(parse_cfg_text(arch["cfg"], f"{where}:{field}")))
    itemsize = np.dtype(arch.get("dtype") or backend.get_default_dtype()).itemsize
    if plan.n_params * itemsize > budget:
        raise over(plan.n_params * itemsize)
    with allocation_limit(budget, over):
        model = guarded(where, field, lambda: load_cfg_text(arch["cfg"], numerics=arch.get("numerics", "darknet"),
                                                              name=f"{where}:{field}"))
    if model.__dict__.get("_architecture") is None:
        object.__setattr__(model, "_architecture", {k: v for k, v in arch.items() if k != "dtype"})
    return model


register_architecture(KIND, ("cfg", "numerics"), check, build)
register_budget(get_memory_budget)
