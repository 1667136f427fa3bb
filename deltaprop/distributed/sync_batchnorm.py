"""Synchronised batch norm: the batch statistics of the GLOBAL batch, summed over the ranks (PyTorch's
``SyncBatchNorm`` rule), so N ranks normalise exactly as one process on the whole batch. Off by default.

Forward (training): Σz and the count m are summed over the ranks, μ = Σz/M; then Σ(z − μ)² is summed,
σ² = Σ(z − μ)²/M (Darknet: /(M − 1)); the running statistics move with the global μ, σ² and M.
The forward is the plain layer's kernel (``norm.batch_norm_forward``, ``norm_darknet.batchnorm_darknet_forward``)
whose statistics take those sums through an ``allsum`` (``norm.bn_statistics``): no second copy of them.
Backward: Σδ and Σδ·ẑ are summed over the ranks and BN 2.1–2.3 take them with M in place of the local
count: ∂C/∂z = γ·s⁻¹·δ − ẑ·k2 − k3 (``norm.bn_grad_coefs``). The parameter gradients (BN 2.5, 2.6) stay local sums: the
gradient allreduce adds them like every other gradient. Each layer costs two small allreduces forward and
one backward (2C + 1 and 2C values).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ..darknet.layers.batchnorm import STANDARD_EPS, STANDARD_MOMENTUM, DarknetBatchNorm
from ..errors import ConfigError
from ..functional.norm import (BNCache, batch_norm_forward, bn_grad_coefs, bn_input_grad, channel_dot, channel_sum,
                               channel_view)
from ..functional.norm_darknet import (DarknetBNCache, batchnorm_darknet_forward, darknet_bn_deltas,
                                       darknet_bn_input_grad)
from ..nn.normalization import BatchNorm1d, BatchNorm2d, BatchNormAct2d
from .comm import Communicator, world


def _global_sum(comm: Communicator, *parts: np.ndarray) -> np.ndarray:
    """One allreduce of the concatenated parts, in float64."""
    buf = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])
    return comm.allreduce_sum(buf)


def sync_input_grad(dy3: np.ndarray, xhat: np.ndarray, k: np.ndarray, m, comm: Communicator) -> np.ndarray:
    """BN 2.1–2.3 with global sums: ``norm.bn_grad_coefs`` and ``norm.bn_input_grad`` (the one home of BN 2.3)
    given Σδ and Σδ·ẑ summed over the ranks and M in place of the local count; k = γ·s⁻¹ per channel."""
    c = dy3.shape[1]
    g = _global_sum(comm, channel_sum(dy3), channel_dot(dy3, xhat)).astype(dy3.dtype)
    k2, k3 = bn_grad_coefs(k, g[c:], g[:c], m)
    return bn_input_grad(dy3, xhat, k, k2, k3)


class SyncBNCache(NamedTuple):
    """A synchronised forward's (standard numerics): the plain kernel's cache (ẑ from the global batch's μ and
    σ²) and the global count M of values per channel."""
    bn: BNCache
    m: int


class SyncDarknetBNCache(NamedTuple):
    """A synchronised forward's (Darknet numerics): the plain kernel's cache (ẑ from the global batch's μ and
    unbiased σ²) and the global count M (in the input's dtype)."""
    bn: DarknetBNCache
    m: float


class _SyncStandard:
    """The standard (PyTorch) rule, shared by the nn layers and Darknet's standard numerics."""

    comm: Optional[Communicator] = None

    def _comm(self) -> Communicator:
        return self.comm if self.comm is not None else world()

    def _allsum(self):
        """(allsum, sums): the kernels' ``allsum`` (one float64 allreduce per call) and what it returned; the
        first call's last entry is the global count M (``norm.bn_statistics``'s contract)."""
        comm, sums = self._comm(), []

        def allsum(v: np.ndarray) -> np.ndarray:
            sums.append(_global_sum(comm, v))
            return sums[-1]
        return allsum, sums

    def _sync_forward(self, x, gamma, beta, rm, rv, momentum: float, eps: float) -> np.ndarray:
        """``norm.batch_norm_forward`` (§8) with the global batch's μ, σ² and M: its statistics
        (``norm.bn_statistics``) take their sums through one allreduce each."""
        allsum, sums = self._allsum()
        y, bn = batch_norm_forward(x, gamma, beta, rm, rv, True, momentum, eps, allsum=allsum)
        self._save(SyncBNCache(bn, int(round(sums[0][-1]))))     # the first sum ends with M
        return y

    def _sync_backward(self, dout: np.ndarray, cache: SyncBNCache):
        """BN 2.5, 2.6 local; BN 2.1–2.3 with global sums and M (``sync_input_grad``). (dx, dγ, dβ)."""
        bn, m = cache
        dy3 = channel_view(dout)
        dbeta, dgamma = channel_sum(dy3), channel_dot(dy3, bn.xhat)
        dx = sync_input_grad(dy3, bn.xhat, bn.gamma * bn.inv_std, m, self._comm()) if self.needs_input_grad else None
        return (None if dx is None else dx.reshape(bn.shape)), dgamma, dbeta


class SyncBatchNorm(_SyncStandard, BatchNorm2d):
    """``BatchNorm1d``/``BatchNorm2d`` with the global batch's statistics in training (see the module
    docstring); evaluation uses the running statistics, as the plain layer."""
    _dims = (2, 3, 4)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            return super().forward(x)
        self._check_input(x)
        use_batch, rm, rv, momentum = self._stats_args()
        g, b = self._params()
        return self._sync_forward(x, g, b, rm, rv, momentum, self.eps)

    def backward(self, dout: np.ndarray) -> Optional[np.ndarray]:
        if not isinstance(self._cache, SyncBNCache):      # evaluation: the plain layer's cache
            return super().backward(dout)
        dx, dg, db = self._sync_backward(dout, self._take())
        self._accumulate(dg, db)
        return dx


class SyncDarknetBatchNorm(_SyncStandard, DarknetBatchNorm):
    """Darknet's batch norm with global statistics: μ = Σz/M, unbiased σ² = Σ(z − μ)²/(M − 1),
    ẑ = (z − μ)/(√σ² + 1e-6), rolling ``0.99·r + 0.01·batch``; backward as ``batchnorm_darknet_backward``
    (s = √(σ² + 1e-5)) with global sums and M. Standard numerics: ``SyncBatchNorm``'s rule."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            return super().forward(x)
        if self.numerics != "darknet":
            rm, rv = self.running_stats(x.dtype)
            return self._sync_forward(x, self.weight.data, self.bias.data, rm, rv, STANDARD_MOMENTUM,
                                      STANDARD_EPS)
        allsum, sums = self._allsum()
        y, bn, (rm, rv) = batchnorm_darknet_forward(x, self.weight.data, self.bias.data, self.running_mean,
                                                    self.running_var, training=True, allsum=allsum)
        object.__setattr__(self, "running_mean", rm.astype(x.dtype, copy=False))
        object.__setattr__(self, "running_var", rv.astype(x.dtype, copy=False))
        self._save(SyncDarknetBNCache(bn, x.dtype.type(int(round(sums[0][-1])))))
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if isinstance(self._cache, SyncBNCache):
            dx, dscale, dbias = self._sync_backward(dout, self._take())
        elif isinstance(self._cache, SyncDarknetBNCache):
            dx, dscale, dbias = self._darknet_backward(dout, self._take())
        else:                                              # evaluation: the plain layer's cache
            return super().backward(dout)
        self.weight.accumulate(dscale)
        self.bias.accumulate(dbias)
        return dx

    def _darknet_backward(self, dout: np.ndarray, cache: SyncDarknetBNCache):
        """``batchnorm_darknet_backward`` with Σδ and Σδ·(z − μ) summed over the ranks, m = M."""
        bn, m = cache
        x_norm, xc, var = bn.x_norm, bn.xc, bn.var
        dy3 = channel_view(dout)
        c = dy3.shape[1]
        g = self.weight.data.astype(dout.dtype)
        dbias, dscale = channel_sum(dy3), channel_dot(dy3, x_norm)
        sums = _global_sum(self._comm(), dbias, channel_dot(dy3, xc)).astype(dout.dtype)
        mean_delta, variance_delta = darknet_bn_deltas(g * sums[:c], g * sums[c:], var)
        return darknet_bn_input_grad(dy3, xc, g, var, mean_delta, variance_delta, m).reshape(bn.shape), dscale, dbias


def convert_sync_batchnorm(model, comm: Optional[Communicator] = None):
    """Turn every ``BatchNorm1d``/``BatchNorm2d`` and Darknet batch norm of ``model`` into its synchronised
    twin (same parameters, buffers and state-dict keys); returns ``model``. The fused ``BatchNormAct2d``
    layers have no synchronised twin: ConfigError naming the layer."""
    comm = comm or world()
    for name, mod in model.named_modules():
        if isinstance(mod, (SyncBatchNorm, SyncDarknetBatchNorm)):
            object.__setattr__(mod, "comm", comm)
        elif isinstance(mod, BatchNormAct2d):
            raise ConfigError(f"layer '{name}' ({type(mod).__name__}): a fused batch norm cannot synchronise its "
                              f"statistics; build the model with BatchNorm2d and a separate activation")
        elif type(mod) in (BatchNorm1d, BatchNorm2d):
            object.__setattr__(mod, "__class__", SyncBatchNorm)
            object.__setattr__(mod, "comm", comm)
        elif type(mod) is DarknetBatchNorm:
            object.__setattr__(mod, "__class__", SyncDarknetBatchNorm)
            object.__setattr__(mod, "comm", comm)
    return model
