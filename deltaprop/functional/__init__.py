"""Pure kernels: ``op_forward(...) -> (out, cache)`` and ``op_backward(dout, cache) -> (dx, dparams...)``.
Every cache is a typed record, one type per path (docs/architecture.md#functional). The kernels whose fast form
reorganises the arithmetic have a naive twin written straight from their equation (the README lists which); the
tests check one against the other."""
from . import activation, dense
from . import conv, im2col, shape
from . import loss, loss_binary, loss_margin
from . import norm, norm_fused, conv_bn, pool
from . import darknet_loss, norm_darknet
from . import update
