"""Fast variants of the reference kernels of ``deltaprop.functional`` (docs/architecture.md#variants).

Each module here registers its variants with ``deltaprop.dispatch`` when imported; importing this package
registers them all and installs the runtime's BLAS product as the references' product hook. Nothing here imports
numba or starts a thread at import: kernels compile and pools start on first use.
"""
from __future__ import annotations

from .. import dispatch
from ..runtime import blas

dispatch.set_product(blas.matmul)
