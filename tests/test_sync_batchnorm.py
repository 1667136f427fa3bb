"""Synchronised batch norm over two ranks (threads of this process with a communicator that really sums): each
rank holds half of the batch, and its normalised output, input gradient and statistics must be the one-process
run's on the whole batch, its parameter gradients the half of a sum that gives the one-process ones. The halves
are drawn from different distributions, so local statistics fail these checks (the control tests show it).

Covers nn's BatchNorm2d, BatchNormAct2d and BatchNormActPool2d (the one ops, NumPy and numba paths) and a Darknet
``[convolutional] batch_normalize=1`` layer (its batch norm + activation module) in both numerics.
(tests/test_sync_batchnorm_mpi.py runs ``deltaprop train`` under a real ``mpirun -n 2``.)"""
from __future__ import annotations

import threading
from typing import Callable, List

import numpy as np
import pytest

from deltaprop import darknet, enable_grad, nn
from deltaprop.distributed import LocalComm, convert_sync_batchnorm

N = 8      # the global batch; rank r holds rows 4r … 4r + 3


class ThreadRanks:
    """``size`` ranks as threads: ``comm(r)`` is rank r's communicator, whose ``allreduce_sum`` adds every rank's
    buffer in rank order (so each rank gets the same sum) between two barriers."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.parts: List[np.ndarray] = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)

    def comm(self, rank: int) -> LocalComm:
        ranks = self

        class Rank(LocalComm):
            def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
                ranks.parts[self.rank] = buf.copy()
                ranks.barrier.wait()
                total = sum(ranks.parts[1:], ranks.parts[0].copy())
                ranks.barrier.wait()
                buf[...] = total
                return buf
        c = Rank()
        c.rank, c.size = rank, self.size
        return c

    def run(self, fn: Callable[[int, LocalComm], object]) -> list:
        """fn(rank, comm) on every rank at once; the results in rank order (the first failure is raised)."""
        results, errors = [None] * self.size, []

        def main(r: int) -> None:
            try:
                results[r] = fn(r, self.comm(r))
            except BaseException as exc:        # let the other ranks out of their barrier
                errors.append(exc)
                self.barrier.abort()
        threads = [threading.Thread(target=main, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def _batch(shape, seed: int = 0) -> np.ndarray:
    """(N, ...) with rank 1's half shifted and scaled: its statistics differ from rank 0's and the batch's."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((N,) + shape)
    x[N // 2:] = 3.0 * x[N // 2:] + 2.5
    return x


def _grads_and_stats(m) -> tuple:
    return [p.grad.copy() for p in m.parameters()], [np.array(s) for s in _stats(m)]


def _run(make, x: np.ndarray, synchronise: bool):
    """(one process on the whole batch, rank 0 on its half, rank 1 on its half): each (output, input gradient,
    parameter gradients, running statistics) of one forward and backward of a fresh ``make()``, same state."""
    state = make().state_dict()

    def fresh():
        m = make()
        m.load_state_dict(state)
        return m

    one = fresh()
    with enable_grad():
        y = one.forward(x)
    dout = np.random.default_rng(1).standard_normal(y.shape)
    whole = (y, one.backward(dout)) + _grads_and_stats(one)

    def rank(r: int, comm):
        m = fresh()
        if synchronise:
            convert_sync_batchnorm(m, comm)
        half = slice(r * N // 2, (r + 1) * N // 2)
        with enable_grad():
            yr = m.forward(x[half])
        return (yr, m.backward(dout[half])) + _grads_and_stats(m)
    return whole, ThreadRanks(2).run(rank)


def _stats(m):
    bn = m.bn if hasattr(m, "bn") else m
    return bn.running_mean, bn.running_var


def _disagree(whole, ranks, atol: float = 1e-11) -> List[str]:
    """What differs from the one-process run: outputs and input gradients put together, parameter gradients
    summed, running statistics on each rank."""
    (y, dx, grads, stats), parts = whole, ranks
    bad = []
    if not np.allclose(np.concatenate([p[0] for p in parts]), y, rtol=0, atol=atol):
        bad.append("output")
    if dx is not None and not np.allclose(np.concatenate([p[1] for p in parts]), dx, rtol=0, atol=atol):
        bad.append("input gradient")
    for k, g in enumerate(grads):
        if not np.allclose(parts[0][2][k] + parts[1][2][k], g, rtol=0, atol=atol * max(1.0, np.abs(g).max())):
            bad.append(f"gradient of parameter {k}")
    for r, p in enumerate(parts):
        if not all(np.allclose(a, b, rtol=0, atol=atol) for a, b in zip(p[3], stats)):
            bad.append(f"running statistics of rank {r}")
    return bad


NN_LAYERS = {
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3, dtype="float64"), (3, 4, 6)),
    "BatchNormAct2d": (lambda: nn.BatchNormAct2d(3, "leaky", 0.1, dtype="float64"), (3, 4, 6)),
    "BatchNormActPool2d": (lambda: nn.BatchNormActPool2d(3, "leaky", 0.1, dtype="float64"), (3, 4, 32)),
    "BatchNormActPool2d-narrow": (lambda: nn.BatchNormActPool2d(3, "relu", dtype="float64"), (3, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(NN_LAYERS))
def test_two_ranks_normalise_as_one_process(name, numba_mode):
    make, shape = NN_LAYERS[name]

    def made():
        m = make()
        g = np.random.default_rng(9)
        m.weight.data[...] = g.standard_normal(3)
        m.bias.data[...] = g.standard_normal(3)
        return m
    x = _batch(shape)
    assert not _disagree(*_run(made, x, True))
    assert "output" in _disagree(*_run(made, x, False), atol=1e-3)     # control: local statistics are not the batch's


CFG = """[net]
width=6
height=5
channels=2

[convolutional]
batch_normalize=1
filters=3
size=3
stride=1
pad=1
activation={act}
"""


def _darknet_conv(numerics: str, act: str):
    def make():
        net = darknet.load_cfg_text(CFG.format(act=act), numerics=numerics, dtype=np.float64)
        layer = net.layers[0]
        g = np.random.default_rng(4)
        layer.bn.weight.data[...] = g.uniform(0.5, 2.0, 3)
        layer.bn.bias.data[...] = g.standard_normal(3)
        object.__setattr__(layer, "needs_input_grad", True)
        return layer
    return make


@pytest.mark.parametrize("numerics", ["standard", "darknet"])
@pytest.mark.parametrize("act", ["leaky", "logistic"])
def test_darknet_convolutional_layer_two_ranks_normalise_as_one_process(numerics, act, numba_mode):
    """conv → batch norm + activation: with leaky in the standard numerics the one op (fused paths), otherwise
    the batch norm and the activation in turn; Darknet's numerics divide the variance by M − 1."""
    make = _darknet_conv(numerics, act)
    x = _batch((2, 5, 6))
    assert not _disagree(*_run(make, x, True))
    assert "output" in _disagree(*_run(make, x, False), atol=1e-3)


class CountingComm(LocalComm):
    """One rank that records the size of each allreduce."""

    def __init__(self) -> None:
        self.calls: List[int] = []

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        self.calls.append(buf.size)
        return buf


@pytest.mark.parametrize("numerics", ["darknet", "standard", None])
def test_a_synchronised_forward_keeps_its_sum_in_the_cache(numerics):
    """The backward follows the forward through its cache: a training forward keeps the ``allsum`` it normalised
    with (and sums BN 2.1–2.3 with it); evaluation normalises with the running statistics and keeps none."""
    from deltaprop.nn.normalization import DarknetBatchNorm
    x = np.random.default_rng(5).standard_normal((4, 3, 2, 2))
    bn = nn.BatchNorm2d(3, dtype="float64") if numerics is None else DarknetBatchNorm(3, numerics, dtype="float64")
    comm = CountingComm()
    convert_sync_batchnorm(bn, comm)

    def kept_sum():
        return bn._cache.allsum if numerics == "darknet" else bn._cache.stats.allsum
    bn(x)
    assert kept_sum() is bn.allsum and comm.calls == [3 + 1, 3]        # Σz and m, then Σ(z − μ)²
    assert bn.backward(np.ones_like(x)).shape == x.shape and comm.calls[2:] == [6]   # Σδ and Σδ·ẑ
    bn.eval()
    with enable_grad():                                    # evaluation keeps a cache only when asked
        bn(x)
    assert kept_sum() is None
    assert bn.backward(np.ones_like(x)).shape == x.shape and len(comm.calls) == 3


def test_evaluation_communicates_nothing():
    """Evaluation normalises with the running statistics: a rank may evaluate alone (no allreduce to wait in)."""
    layer = _darknet_conv("standard", "leaky")()
    comm = CountingComm()
    convert_sync_batchnorm(layer, comm)
    layer.train()
    layer.forward(_batch((2, 5, 6)))
    assert comm.calls == [4, 3]
    layer.eval()
    layer.forward(_batch((2, 5, 6)))                          # the folded inference path
    with enable_grad():
        layer.forward(_batch((2, 5, 6)))                      # the cached path
    assert comm.calls == [4, 3]
