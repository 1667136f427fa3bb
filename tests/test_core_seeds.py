"""The seeds' worked numbers (docs/equations.md §1, §6, §7), each computed by the engine and checked against
the value in the text, or against an independent plain-Python computation where the seed's figure was lost."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deltaprop import nn, optim
from deltaprop.gradcheck import numerical_gradient

# Seed 004's score table: one column per image (true class cat, car, frog); rows are the classes.
SCORES = np.array([[3.2, 1.3, 2.2],     # cat
                   [5.1, 4.9, 2.5],     # car
                   [-1.7, 2.0, -3.1]])  # frog
TRUE = np.array([0, 1, 2])


def test_hinge_table_is_2_9_0_12_9():
    """§6: Σ_{j≠y} max(0, s_j − s_y + 1) per image = 2.9, 0, 12.9 (the seed's 10.9 is an arithmetic slip)."""
    loss = nn.MulticlassHingeLoss(margin=1.0, reduction="none")
    per = loss(SCORES.T.copy(), TRUE)
    assert np.allclose(per, [2.9, 0.0, 12.9], atol=1e-12)
    assert abs(per[2] - 10.9) > 1.9
    mean = nn.MulticlassHingeLoss()(SCORES.T.copy(), TRUE)
    assert mean == pytest.approx((2.9 + 0 + 12.9) / 3, abs=1e-12)     # L = (1/N) Σ L_i


def test_multi_margin_loss_divides_by_classes():
    """PyTorch's MultiMarginLoss divides the same hinge sums by C = 3: 0.97, 0, 4.3."""
    per = nn.MultiMarginLoss(reduction="none")(SCORES.T.copy(), TRUE)
    assert np.allclose(per, [2.9 / 3, 0.0, 4.3], atol=1e-12)
    assert np.round(per, 2).tolist() == [0.97, 0.0, 4.3]


def test_cat_softmax_loss_is_2_04():
    """Seed 004: scores cat 3.2, car 5.1, frog −1.7, true cat: L = −ln softmax(s)_cat ≈ 2.04 (natural log;
    the seed's 0.89 is log base 10)."""
    s = np.array([3.2, 5.1, -1.7])
    ce = nn.CrossEntropyLoss()(s, np.array(0))
    assert ce == pytest.approx(2.0404, abs=1e-4)
    p = np.exp(s) / np.exp(s).sum()
    assert nn.ProbabilityCrossEntropyLoss()(p[None], np.array([0])) == pytest.approx(ce, abs=1e-12)
    assert -math.log10(p[0]) == pytest.approx(0.89, abs=0.005)        # the seed's number, in base 10


def test_one_sided_numerical_gradient_is_minus_2_5():
    """Seed 004's "follow the slope": W = [0.34, −1.11, ...], loss 1.25347; W[0] + 0.0001 gives 1.25322,
    so dL/dW[0] ≈ (1.25322 − 1.25347)/0.0001 = −2.5. Rebuilt as a 9-weight linear unit with a squared
    error whose loss and slope are those of the seed; the engine's backward gives the same slope."""
    w0 = np.array([0.34, -1.11, 0.78, 0.12, 0.55, 2.81, -3.1, -1.5, 0.33])
    r = -math.sqrt(1.25347)                     # residual ŷ − y, so that loss = r² = 1.25347
    x = np.full(9, 0.1)
    x[0] = -2.5 / (2 * r)                       # dL/dW[0] = 2 r x[0] = −2.5
    y = float(w0 @ x) - r
    lin = nn.Linear(9, 1, bias=False).double()
    lin.weight.data[...] = w0
    loss = nn.MSELoss()

    def f() -> float:
        return loss(lin(x[None]), np.array([[y]]))

    base = f()
    lin.weight.data[0, 0] += 0.0001
    nudged = f()
    lin.weight.data[0, 0] -= 0.0001
    assert round(base, 5) == 1.25347 and round(nudged, 5) == 1.25322
    assert (round(nudged, 5) - round(base, 5)) / 0.0001 == pytest.approx(-2.5, abs=1e-9)
    lin.zero_grad()
    f()
    lin.backward(loss.backward())
    assert lin.weight.grad[0, 0] == pytest.approx(-2.5, abs=1e-12)
    # the centred form the engine uses for its checks (§7) agrees with the analytic gradient everywhere
    num, kinks = numerical_gradient(f, lin.weight.data)
    assert not kinks.any() and np.allclose(num, lin.weight.grad, atol=1e-8)


def test_computational_graph_example():
    """Seed 004: ŷ = x·w, loss = (ŷ − y)², x = 1, w = 1, y = 2 → ∂loss/∂ŷ = −2, ∂loss/∂w = −2."""
    lin = nn.Linear(1, 1, bias=False).double()
    lin.weight.data[...] = 1.0
    loss = nn.MSELoss()
    lin.zero_grad()
    value = loss(lin(np.array([[1.0]])), np.array([[2.0]]))
    dyhat = loss.backward()
    lin.backward(dyhat)
    assert value == 1.0
    assert dyhat.item() == -2.0 and lin.weight.grad.item() == -2.0


# --- seeds 001/002: a 2-2-2 sigmoid network with the quadratic cost, one SGD step ---------------------

I = [0.05, 0.10]
W_H = [[0.15, 0.20], [0.25, 0.30]]        # w1 w2 / w3 w4: hidden neuron j, input k
B_H = [0.35, 0.35]
W_O = [[0.40, 0.45], [0.50, 0.55]]        # w5 w6 / w7 w8
B_O = [0.60, 0.60]
T = [0.01, 0.99]
LR = 0.5


def _by_hand():
    """Forward, BP1, FC-1, FC-2, FC-3 and update-1 in plain Python loops (no NumPy)."""
    sig = lambda z: 1 / (1 + math.exp(-z))
    h = [sig(sum(W_H[j][k] * I[k] for k in range(2)) + B_H[j]) for j in range(2)]
    o = [sig(sum(W_O[j][k] * h[k] for k in range(2)) + B_O[j]) for j in range(2)]
    e = sum(0.5 * (T[j] - o[j]) ** 2 for j in range(2))
    d_o = [(o[j] - T[j]) * o[j] * (1 - o[j]) for j in range(2)]                                   # BP1
    d_h = [sum(W_O[j][k] * d_o[j] for j in range(2)) * h[k] * (1 - h[k]) for k in range(2)]      # FC-1
    new_wo = [[W_O[j][k] - LR * d_o[j] * h[k] for k in range(2)] for j in range(2)]              # FC-3, FC-5
    new_bo = [B_O[j] - LR * d_o[j] for j in range(2)]                                            # FC-2, FC-4
    new_wh = [[W_H[j][k] - LR * d_h[j] * I[k] for k in range(2)] for j in range(2)]
    new_bh = [B_H[j] - LR * d_h[j] for j in range(2)]
    return e, d_o, h, new_wh, new_bh, new_wo, new_bo


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_2_2_2_sigmoid_network_one_sgd_step(dtype):
    net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).to(dtype)
    net.load_state_dict({"0.weight": np.array(W_H), "0.bias": np.array(B_H),
                         "2.weight": np.array(W_O), "2.bias": np.array(B_O)})
    loss = nn.HalfSquaredError()
    opt = optim.SGD(net.parameters(), lr=LR)
    opt.zero_grad()
    e = loss(net(np.array([I], dtype=dtype)), np.array([T], dtype=dtype))
    delta_out = loss.backward()
    net.backward(delta_out)
    opt.step()
    e_ref, d_o, h, wh, bh, wo, bo = _by_hand()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    assert e == pytest.approx(e_ref, abs=tol)
    assert e == pytest.approx(0.298371109, abs=1e-6)                  # the classic worked value of this net
    sd = net.state_dict()
    assert all(v.dtype == dtype for v in sd.values())
    assert np.allclose(sd["0.weight"], wh, atol=tol, rtol=0) and np.allclose(sd["0.bias"], bh, atol=tol, rtol=0)
    assert np.allclose(sd["2.weight"], wo, atol=tol, rtol=0) and np.allclose(sd["2.bias"], bo, atol=tol, rtol=0)
    # ∂E/∂w5 = δ_o1 · out_h1 (seeds 001/002), and the well-known updated weights w5, w1
    assert sd["2.weight"][0, 0] == pytest.approx(0.35891648, abs=1e-7)
    assert sd["0.weight"][0, 0] == pytest.approx(0.149780716, abs=1e-7)
    assert net[2].weight.grad[0, 0] == pytest.approx(d_o[0] * h[0], abs=tol)
