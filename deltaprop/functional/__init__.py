"""Pure kernels: ``op_forward(...) -> (out, cache)`` and ``op_backward(dout, cache) -> (dx, dparams...)``.
Each fast kernel has a naive twin written straight from its equation; the tests check one against the other."""
from . import activation, dense
from . import conv, im2col, shape
from . import loss
from . import norm, pool
from . import darknet_loss, norm_darknet
