"""deltaprop: a deep-learning engine whose backpropagation is explicit, layer by layer, as the textbook
equations (every docstring cites a label of docs/equations.md)."""
from . import backend, errors
from . import functional, gradcheck, nn, optim
from . import fast
from .backend import enable_grad, get_default_dtype, is_grad_enabled, manual_seed, no_grad, set_default_dtype
from .errors import DeltapropError
from .runtime import blas, calibrate  # deltaprop.blas: the library of the products (bench, docs)

fast.register_all()  # the fast variants register with deltaprop.dispatch, after the references they replace

from .version import __version__


def tune(recalibrate: bool = False) -> dict:
    """Make the process-wide choices the engine runs fastest with, now rather than on first use (the ``deltaprop``
    command calls it): every ``DELTAPROP_*`` setting is validated, glibc keeps freed memory for reuse, the library
    of the products is chosen (``DELTAPROP_BLAS``; ``auto`` is measured once per machine and cached), the threads
    are set up for it, and each registered tunable (the direct convolution loops) is chosen, measured on a cache
    miss. ``recalibrate`` forgets the caches first. ``import deltaprop`` changes none of these, and only this
    measures (docs/runtime.md). Returns what was chosen (``runtime.calibrate.tune``)."""
    return calibrate.tune(recalibrate)


__all__ = ["backend", "errors", "functional", "gradcheck", "nn", "optim", "enable_grad", "get_default_dtype",
           "is_grad_enabled", "manual_seed", "no_grad", "set_default_dtype", "DeltapropError", "tune", "__version__"]
