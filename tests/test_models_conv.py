"""models.lenet / convnet / convbn: shapes, dtype, a learning sanity check, PyTorch parity end to end."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

import deltaprop as dp
from deltaprop import models, nn, optim


@pytest.mark.parametrize("name,shape", [("lenet", (3, 1, 28, 28)), ("convnet", (3, 1, 28, 28)),
                                        ("convbn", (3, 3, 64, 64))])
def test_build_forward_backward_float32(name, shape, rng):
    assert name in models.available()
    dp.manual_seed(0)
    model = models.build(name)
    x = rng.standard_normal(shape).astype(np.float32)
    y = model(x)
    assert y.shape == (3, 10) and y.dtype == np.float32
    assert model.backward(np.ones_like(y)) is None          # the first layer skips its input gradient
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())


def test_lenet_learns_a_tiny_batch(rng):
    dp.manual_seed(0)
    model = models.build("lenet")
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 16)
    loss = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    first = None
    for _ in range(60):
        value = loss(model(x), t)
        first = value if first is None else first
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    assert value < 0.1 * first


def test_lenet_matches_torch_end_to_end(torch_ref, rng):
    """Same weights: logits, the loss gradient through every layer, every parameter gradient (float64)."""
    T = torch_ref.nn
    ref = T.Sequential(T.Conv2d(1, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2), T.Conv2d(6, 16, 5), T.ReLU(),
                       T.MaxPool2d(2), T.Flatten(), T.Linear(400, 120), T.ReLU(), T.Linear(120, 84), T.ReLU(),
                       T.Linear(84, 10)).double()
    model = models.build("lenet", dtype="float64")
    model.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    x = rng.standard_normal((4, 1, 28, 28))
    out = model(x)
    dout = rng.standard_normal(out.shape)
    model.backward(dout)
    ot = ref(torch_ref.tensor(x))
    ot.backward(torch_ref.tensor(dout))
    assert rel_err(out, ot.detach().numpy()) <= 1e-10
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        assert rel_err(p.grad, grads[name].grad.numpy()) <= 1e-10, name


def test_convbn_config():
    model = models.build("convbn", widths=(8, 16), input_size=32, num_classes=5)
    assert model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 5)
    with pytest.raises(ValueError, match="too small"):
        models.build("convnet", widths=(8, 8, 8, 8, 8), input_size=16)
