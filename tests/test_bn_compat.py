"""Files written before the batch-norm redesign still load and compute what they computed then
(tests/fixtures/bn_compat/, written by the old tree with its ``make_fixture.py``): a Darknet cfg with batch norm in
``[convolutional]`` and ``[connected]`` layers (``.weights`` and a deltaprop checkpoint with its SGD state) and a
``convbn`` model (``BatchNormActPool2d``; model file and checkpoint). The state-dict keys, the ``.weights`` layout
and the numbers are the old ones."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import FIXTURES
from deltaprop import darknet, io, optim
from deltaprop.darknet.trainer import DarknetTrainer
from deltaprop.darknet.weights import save_weights
from deltaprop.nn.normalization import BatchNormActPool2d

HERE = FIXTURES / "bn_compat"
TOL = dict(rtol=1e-5, atol=1e-6)   # float32; the BLAS library's threads may sum in another order


def _maker():
    spec = importlib.util.spec_from_file_location("bn_compat_make", HERE / "make_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def expected():
    return np.load(HERE / "expected.npz")


def _net(numerics: str):
    return darknet.load(HERE / "tiny.cfg", HERE / "tiny.weights", numerics=numerics)


@pytest.mark.parametrize("numerics", ["standard", "darknet"])
def test_old_weights_file_gives_the_old_outputs(numerics, expected):
    net = _net(numerics)
    net.eval()
    np.testing.assert_allclose(net(expected["x_cfg"]), expected[f"eval_{numerics}"], **TOL)


@pytest.mark.parametrize("numerics", ["standard", "darknet"])
def test_old_weights_train_as_before(numerics, expected):
    """One training forward and backward: the output and every parameter gradient, keys as before."""
    got = _maker().cfg_step(_net("standard"), numerics)
    want = {k: expected[k] for k in expected.files if k.startswith(f"grad_{numerics}/")}
    assert sorted(k for k in got if k.startswith("grad_")) == sorted(want)
    for k, v in got.items():
        np.testing.assert_allclose(v, expected[k], err_msg=k, **TOL)


def test_old_weights_file_round_trips_byte_for_byte(tmp_path):
    save_weights(_net("darknet"), tmp_path / "again.weights")
    assert (tmp_path / "again.weights").read_bytes() == (HERE / "tiny.weights").read_bytes()


def test_old_darknet_checkpoint_loads_with_its_optimizer():
    ck = io.read_checkpoint(HERE / "tiny_state.npz")
    net = _net("standard")
    assert list(ck.model_state) == list(net.state_dict())              # the same keys in the same order
    tr = DarknetTrainer(net)
    io.load_checkpoint(HERE / "tiny_state.npz", net, tr.optimizer)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, ck.model_state[k], err_msg=k)
    rebuilt = io.load_model(HERE / "tiny_state.npz")
    assert list(rebuilt.state_dict()) == list(ck.model_state)
    bufs = [s["momentum_buffer"] for s in tr.optimizer.state_dict()["state"].values()]
    assert len(bufs) == len(list(net.parameters())) and any(np.abs(b).max() > 0 for b in bufs)


def test_old_convbn_model_and_checkpoint_load(expected):
    model = io.load_model(HERE / "convbn.npz")
    assert any(isinstance(m, BatchNormActPool2d) for m in model.modules())
    model.eval()
    np.testing.assert_allclose(model(expected["x_convbn"]), expected["eval_convbn"], **TOL)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ck = io.load_checkpoint(HERE / "convbn_ckpt.npz", model, opt)
    assert ck.epoch == 1 and list(ck.model_state) == list(model.state_dict())
    model.eval()
    np.testing.assert_allclose(model(expected["x_convbn"]), expected["eval_convbn"], **TOL)


def test_old_model_file_naming_sync_batchnorm_loads(expected):
    """The old conversion swapped the class: such a file names ``SyncBatchNorm``, which still builds (synchronised
    over ``world()``, one process here) and gives the old outputs."""
    from deltaprop.distributed import SyncBatchNorm
    model = io.load_model(HERE / "sync_mlp.npz")
    assert isinstance(model[1], SyncBatchNorm) and model[1].allsum is not None
    model.eval()
    np.testing.assert_allclose(model(expected["x_mlp"]), expected["eval_sync_mlp"], **TOL)
