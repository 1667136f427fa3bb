"""deltaprop: a deep-learning engine whose backpropagation is explicit, layer by layer, as the textbook
equations (every docstring cites a label of docs/equations.md)."""
from . import backend, blas, errors, functional, gradcheck, nn
from . import optim
from . import _malloc  # noqa: F401  (keeps freed memory for reuse; DELTAPROP_MALLOC=0 turns it off)
from .backend import enable_grad, get_default_dtype, is_grad_enabled, manual_seed, no_grad, set_default_dtype
from .errors import DeltapropError

__version__ = "0.1.0"

__all__ = ["backend", "errors", "functional", "gradcheck", "nn", "optim", "enable_grad", "get_default_dtype",
           "is_grad_enabled", "manual_seed", "no_grad", "set_default_dtype", "DeltapropError", "__version__"]
