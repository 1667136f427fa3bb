"""Convolution vs cross-correlation (seed 003, docs/equations.md §3): the same network up to a kernel flip.

Every framework's "convolution" is a cross-correlation z = x ⋆ W. A true convolution z = x * W turns the
kernel by 180° in the forward pass (and so not in the backward pass: Conv-1 and Conv-3 flip once less).
Two small conv nets, one in each mode, start from kernels that are 180° turns of each other and take the
same SGD steps on the same data: their outputs and losses agree at every step, and their kernels stay
turns of each other: the two conventions train the same network.

    python3 examples/04_conv_vs_correlation.py [--steps 20]
"""
import argparse

import numpy as np

import deltaprop as dp
from deltaprop import nn, optim

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--steps", type=int, default=20)
args = p.parse_args()


def net(mode):
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, mode=mode), nn.Tanh(),
                         nn.Conv2d(4, 3, (2, 3), stride=2, mode=mode), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).double()


def flip(w):
    return w[:, :, ::-1, ::-1].copy()           # rot180 of every kernel


dp.manual_seed(0)
corr, conv = net("cross_correlation"), net("convolution")
state = corr.state_dict()
for k in ("0.weight", "2.weight"):              # the convolution net starts from the turned kernels
    state[k] = flip(state[k])
conv.load_state_dict(state)

rng = np.random.default_rng(0)
x, t = rng.standard_normal((8, 2, 7, 7)), rng.standard_normal((8, 2))
loss_a, loss_b = nn.MSELoss(), nn.MSELoss()
opt_a, opt_b = optim.SGD(corr.parameters(), lr=0.05, momentum=0.5), optim.SGD(conv.parameters(), lr=0.05, momentum=0.5)
print(f"{'step':>4} {'loss (correlation)':>19} {'loss (convolution)':>19} {'max|W_corr − rot180(W_conv)|':>30}")
worst = 0.0
for step in range(args.steps + 1):
    diff = max(float(np.abs(corr[i].weight.data - flip(conv[i].weight.data)).max()) for i in (0, 2))
    same = max(float(np.abs(getattr(corr[4], n).data - getattr(conv[4], n).data).max()) for n in ("weight", "bias"))
    worst = max(worst, diff, same)
    la, lb = loss_a(corr(x), t), loss_b(conv(x), t)
    if step % 5 == 0 or step == args.steps:
        print(f"{step:>4} {la:>19.12f} {lb:>19.12f} {diff:>30.2e}")
    if step == args.steps:
        break
    for model, loss, opt in ((corr, loss_a, opt_a), (conv, loss_b, opt_b)):
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()

# A true convolution, one output value by its definition: the kernel index runs backwards over the input.
n, f, i, j = 1, 2, 3, 4
xp, w = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), conv[0].weight.data           # padding 1, 3x3 kernels
z = sum(w[f, c, a, b] * xp[n, c, i + 2 - a, j + 2 - b] for c in range(2) for a in range(3) for b in range(3))
with dp.no_grad():
    z_layer = conv[0](x)[n, f, i, j] - conv[0].bias.data[f]
print(f"convolution by definition at (n={n}, f={f}, {i}, {j}): {z:.12f}, the layer: {z_layer:.12f}")
print(f"largest difference over {args.steps} steps (kernels up to the flip, dense layer as is): {worst:.2e}")
print("kernel [0,0] of the first layer, correlation net:\n", np.round(corr[0].weight.data[0, 0], 4))
print("the same kernel in the convolution net (turned 180°):\n", np.round(conv[0].weight.data[0, 0], 4))
print("OK: flipped kernels stay flipped" if worst < 1e-12 else "MISMATCH")
