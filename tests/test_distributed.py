"""deltaprop.distributed in one process: shards, buckets, the synchronised batch norm's formulas, the
launcher's environment. (tests/test_distributed_mpi.py runs the real thing under mpirun.)"""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import nn
from deltaprop.data import DataLoader
from deltaprop.distributed import (GradientReducer, LocalComm, SyncBatchNorm, convert_sync_batchnorm,
                                   shard_batches, shard_bounds, world_size_from_env)
from deltaprop.distributed.comm import rank_from_env
from deltaprop.errors import BackwardError, ShapeError


@pytest.mark.parametrize("n,size", [(16, 2), (17, 3), (5, 8), (64, 7)])
def test_shards_are_disjoint_and_cover_the_batch(n, size):
    rows = [set(range(*shard_bounds(n, r, size))) for r in range(size)]
    assert set().union(*rows) == set(range(n))
    assert sum(len(r) for r in rows) == n
    assert max(len(r) for r in rows) - min(len(r) for r in rows) <= 1


@pytest.mark.parametrize("shuffle", [True, False])
def test_sharded_batches_put_together_are_the_loaders_batches(shuffle):
    X = np.arange(50, dtype=np.float64).reshape(25, 2)
    y = np.arange(25)
    loader = DataLoader(X, y, batch_size=8, shuffle=shuffle, seed=3)
    loader.set_epoch(2)
    whole = list(loader)
    parts = []
    for r in range(3):
        loader.set_epoch(2)
        parts.append(list(shard_batches(loader, r, 3)))
    assert loader.epoch == 3
    for b, (xb, yb) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([parts[r][b][0] for r in range(3)]), xb)
        np.testing.assert_array_equal(np.concatenate([parts[r][b][1] for r in range(3)]), yb)
        assert all(parts[r][b][2] == len(xb) for r in range(3))


def _mlp():
    dp.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64, dtype="float64"), nn.ReLU(), nn.Linear(64, 32, dtype="float64"), nn.ReLU(),
                         nn.Linear(32, 5, dtype="float64"))


def test_buckets_follow_backward_order_and_respect_the_cap():
    model = _mlp()
    sizes = [p.data.nbytes for p in model.parameters()]          # w1 b1 w2 b2 w3 b3
    red = GradientReducer(model, LocalComm(), bucket_bytes=sizes[2] + sizes[3])
    order = [p for b in red.buckets for p in b.params]
    assert order == list(reversed(list(model.parameters())))
    assert all(b.nbytes <= sizes[2] + sizes[3] or len(b.params) == 1 for b in red.buckets)
    assert len(red.buckets) == 3


def test_buckets_launch_during_backward_and_give_the_gradients_back():
    model = _mlp()
    x = np.random.default_rng(1).standard_normal((7, 20))
    ref = _mlp()
    ref(x)
    ref.backward(np.ones((7, 5)))
    red = GradientReducer(model, LocalComm(), bucket_bytes=4096)
    launched = []
    inner = red._launch
    red._launch = lambda b: (launched.append((b.index, model[0].weight.grad is None)), inner(b))
    model(x)
    model.backward(np.ones((7, 5)))
    # the last layer's bucket left while the first Linear still had no gradient: overlap
    assert launched and launched[0] == (0, True)
    red.finish()
    assert red.stats["bucket_bytes"] == [b.nbytes for b in red.buckets]
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    red.remove_hooks()
    assert "backward" not in model[0].__dict__


def test_a_layer_run_twice_is_refused_when_overlapping():
    lin = nn.Linear(4, 4, dtype="float64")
    model = nn.Sequential(lin, nn.ReLU(), lin)
    GradientReducer(model, LocalComm())
    x = np.ones((2, 4))
    model(x)
    with pytest.raises(BackwardError, match="ran backward twice"):
        model.backward(np.ones((2, 4)))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5)])
def test_sync_batchnorm_on_one_rank_is_batchnorm(shape):
    """The global sums over one rank are the local ones: forward, running statistics and gradients agree."""
    g = np.random.default_rng(2)
    x = g.standard_normal(shape) * 3 + 1
    dy = g.standard_normal(shape)
    plain = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, dtype="float64")
    plain.weight.data[:] = [1.5, 0.5, -1.0]
    synced = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, dtype="float64")
    synced.load_state_dict(plain.state_dict())
    convert_sync_batchnorm(synced, LocalComm())
    assert synced.allsum is not None and plain.allsum is None
    np.testing.assert_allclose(synced(x), plain(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(synced.backward(dy), plain.backward(dy), rtol=0, atol=1e-12)
    np.testing.assert_allclose(synced.weight.grad, plain.weight.grad, atol=1e-12)
    np.testing.assert_allclose(synced.running_var, plain.running_var, atol=1e-12)
    synced.eval(), plain.eval()
    np.testing.assert_allclose(synced(x), plain(x), atol=1e-12)


@pytest.mark.parametrize("numerics", ["darknet", "standard"])
def test_sync_darknet_batchnorm_on_one_rank_is_darknets(numerics):
    from deltaprop.darknet.layers.batchnorm import DarknetBatchNorm
    g = np.random.default_rng(3)
    x = g.standard_normal((4, 3, 5, 5)) * 2 - 1
    dy = g.standard_normal(x.shape)
    plain = DarknetBatchNorm(3, numerics, dtype="float64")
    plain.weight.data[:] = [2.0, 1.0, 0.5]
    holder = nn.Sequential(DarknetBatchNorm(3, numerics, dtype="float64"))
    holder[0].load_state_dict(plain.state_dict())
    convert_sync_batchnorm(holder, LocalComm())
    synced = holder[0]
    assert synced.allsum is not None and plain.allsum is None
    np.testing.assert_allclose(synced(x), plain(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(synced.backward(dy), plain.backward(dy), rtol=0, atol=1e-12)
    np.testing.assert_allclose(synced.weight.grad, plain.weight.grad, atol=1e-12)
    np.testing.assert_allclose(synced.running_mean, plain.running_mean, atol=1e-12)
    np.testing.assert_allclose(synced.running_var, plain.running_var, atol=1e-12)


def test_sync_batchnorm_input_gradient_is_the_derivative():
    from deltaprop.gradcheck import check_module
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(2, dtype="float64")), LocalComm())
    bn[0].weight.data[:] = [1.3, -0.7]
    x = np.random.default_rng(4).standard_normal((3, 2, 2, 2))
    res = check_module(bn, x)
    assert res.ok(), str(res)


def test_every_batch_norm_module_synchronises():
    """The fused modules and the batch norm + activation of a Darknet layer are converted too (they pass their
    ``allsum`` to their ops); the modules and their state-dict keys stay as they were."""
    from deltaprop import darknet
    net = darknet.load_cfg_text("[net]\nwidth=4\nheight=4\nchannels=2\n\n[convolutional]\nbatch_normalize=1\n"
                                "filters=3\nsize=1\nactivation=leaky\n", dtype=np.float64)
    model = nn.Sequential(nn.BatchNormAct2d(3, dtype="float64"), nn.BatchNormActPool2d(3, dtype="float64"),
                          nn.BatchNorm1d(3, dtype="float64"), net)
    keys = list(model.state_dict())
    classes = [type(m) for m in model.modules()]
    convert_sync_batchnorm(model, LocalComm())
    assert [model[0].allsum, model[1].allsum, model[2].allsum, net.layers[0].bn.allsum].count(None) == 0
    assert list(model.state_dict()) == keys and [type(m) for m in model.modules()] == classes
    assert SyncBatchNorm(3).allsum is not None                # synchronised over world() from the start


def test_launcher_environment(monkeypatch):
    for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS", "SLURM_STEP_ID",
              "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert world_size_from_env() == 1 and rank_from_env() == 0
    monkeypatch.setenv("SLURM_NTASKS", "4")              # an allocation, not inside srun
    assert world_size_from_env() == 1
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert world_size_from_env() == 4 and rank_from_env() == 3
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert world_size_from_env() == 2 and rank_from_env() == 1


class _TwoRankShape(LocalComm):
    """Claims two ranks (collectives stay the identity): enough to build what DataParallel builds."""
    size = 2


@pytest.mark.parametrize("arg,env,synced", [(False, None, False), (True, None, True), (False, "1", True)])
def test_sync_bn_by_argument_or_environment(monkeypatch, arg, env, synced):
    from deltaprop.distributed import DataParallel
    if env is None:
        monkeypatch.delenv("DELTAPROP_SYNC_BN", raising=False)
    else:
        monkeypatch.setenv("DELTAPROP_SYNC_BN", env)
    model = nn.Sequential(nn.Linear(3, 4, dtype="float64"), nn.BatchNorm1d(4, dtype="float64"))
    par = DataParallel(model, _TwoRankShape(), sync_bn=arg)
    assert (model[1].allsum is not None) is synced
    assert par.reducer is not None


def test_sync_batchnorm_needs_two_values_per_channel_over_all_ranks():
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3, dtype="float64")), LocalComm())[0]
    with pytest.raises(ShapeError, match=r"over all processes: m = 1"):
        bn(np.ones((1, 3)))
