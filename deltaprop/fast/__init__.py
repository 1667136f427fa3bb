"""Fast variants of the reference kernels of ``deltaprop.functional`` (docs/architecture.md#variants).

Each module here registers its variants with ``deltaprop.dispatch`` when imported. ``register_all`` (called by
``import deltaprop``, once the references are loaded) imports every module of the package, so a new variant module
needs no line here; importing the package installs the runtime's BLAS product as the references' product hook. Nothing here imports numba or starts a thread at import: kernels compile and pools
start on first use.
"""
from __future__ import annotations

import importlib
import pkgutil

from .. import dispatch
from ..runtime import blas

dispatch.set_product(blas.matmul)



def register_all() -> None:
    """Import every module of ``deltaprop.fast``: each registers its variants."""
    for name in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{name}")
