"""deltaprop: a deep-learning engine whose backpropagation is explicit, layer by layer, as the textbook
equations (every docstring cites a label of docs/equations.md)."""
from . import backend, errors, functional, gradcheck, nn
from .runtime import blas
from . import optim
from . import fast

fast.register_all()  # the fast variants register with deltaprop.dispatch, after the references they replace
from .backend import enable_grad, get_default_dtype, is_grad_enabled, manual_seed, no_grad, set_default_dtype
from .errors import DeltapropError

__version__ = "0.1.0"


def tune() -> dict:
    """Make the process-wide settings the engine runs fastest with, now rather than on first use (the CLI calls
    it): glibc keeps freed memory for reuse (``_malloc``), the library of the products is chosen
    (``DELTAPROP_BLAS``; ``auto`` is measured once per machine, ``calibrate``) and the threads are set up for it
    (``threads``). ``import deltaprop`` changes none of these. Returns what was chosen (``blas.info()``)."""
    from .runtime import malloc as _malloc
    _malloc.tune()
    blas.ensure()
    return dict(blas.info(), malloc_tuned=_malloc.applied)


__all__ = ["backend", "errors", "functional", "gradcheck", "nn", "optim", "enable_grad", "get_default_dtype",
           "is_grad_enabled", "manual_seed", "no_grad", "set_default_dtype", "DeltapropError", "tune", "__version__"]
