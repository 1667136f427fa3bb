"""Backpropagation by hand on the 2-2-2 sigmoid network of seeds 001/002 (docs/equations.md §1), next to the engine.

Forward pass, the output error δ_o by BP1, the hidden error δ_h by FC-1, the gradients by FC-2/FC-3 and one
SGD step (FC-4/FC-5), all in plain Python loops; then the same network built from nn.Linear + nn.Sigmoid,
nn.HalfSquaredError and optim.SGD, whose numbers are printed beside them.

    python3 examples/01_backprop_by_hand.py
"""
import math

import numpy as np

from deltaprop import nn, optim

x, target, lr = [0.05, 0.10], [0.01, 0.99], 0.5
w_h, b_h = [[0.15, 0.20], [0.25, 0.30]], [0.35, 0.35]   # w1 w2 / w3 w4: row j = hidden neuron j
w_o, b_o = [[0.40, 0.45], [0.50, 0.55]], [0.60, 0.60]   # w5 w6 / w7 w8


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


# --- by hand ---------------------------------------------------------------------------------------
h = [sigmoid(sum(w_h[j][k] * x[k] for k in range(2)) + b_h[j]) for j in range(2)]      # a¹ = σ(W¹x + b¹)
o = [sigmoid(sum(w_o[j][k] * h[k] for k in range(2)) + b_o[j]) for j in range(2)]      # a² = σ(W²a¹ + b²)
cost = sum(0.5 * (target[j] - o[j]) ** 2 for j in range(2))                             # C = ½ Σ (y − a)²
d_o = [(o[j] - target[j]) * o[j] * (1 - o[j]) for j in range(2)]                       # BP1: (a − y) ⊙ σ'
d_h = [sum(w_o[j][k] * d_o[j] for j in range(2)) * h[k] * (1 - h[k]) for k in range(2)]  # FC-1: (Wᵀδ) ⊙ σ'
hand = {
    "output a2": o, "cost C": [cost], "delta_o (BP1)": d_o, "delta_h (FC-1)": d_h,
    "dC/dW2 (FC-3)": [d_o[j] * h[k] for j in range(2) for k in range(2)],               # e.g. ∂C/∂w5 = δ_o1·h1
    "dC/dW1 (FC-3)": [d_h[j] * x[k] for j in range(2) for k in range(2)],
    "new W2 (FC-5)": [w_o[j][k] - lr * d_o[j] * h[k] for j in range(2) for k in range(2)],
    "new b2 (FC-4)": [b_o[j] - lr * d_o[j] for j in range(2)],
    "new W1 (FC-5)": [w_h[j][k] - lr * d_h[j] * x[k] for j in range(2) for k in range(2)],
    "new b1 (FC-4)": [b_h[j] - lr * d_h[j] for j in range(2)],
}

# --- the engine ----------------------------------------------------------------------------------------
net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).double()
net.load_state_dict({"0.weight": np.array(w_h), "0.bias": np.array(b_h),
                     "2.weight": np.array(w_o), "2.bias": np.array(b_o)})
loss = nn.HalfSquaredError()                  # ½ Σ (y − a)², ∂C/∂a = a − y
opt = optim.SGD(net.parameters(), lr=lr)
opt.zero_grad()
out = net(np.array([x]))
c = loss(out, np.array([target]))
grad_a = loss.backward()                       # ∇_a C, the start of BP1
delta_o = net[3].backward(grad_a)              # through the output sigmoid: δ_o = ∇_a C ⊙ σ'(z)
delta_h = net[1].backward(net[2].backward(delta_o))   # Wᵀδ_o (and ∂C/∂W2, ∂C/∂b2), then ⊙ σ'(z¹)
net[0].backward(delta_h)                       # ∂C/∂W1, ∂C/∂b1
g_w2, g_w1 = net[2].weight.grad.ravel().copy(), net[0].weight.grad.ravel().copy()
opt.step()                                     # w ← w − α ∂C/∂w (update-1)
engine = {
    "output a2": out[0], "cost C": [c], "delta_o (BP1)": delta_o[0], "delta_h (FC-1)": delta_h[0],
    "dC/dW2 (FC-3)": g_w2, "dC/dW1 (FC-3)": g_w1,
    "new W2 (FC-5)": net[2].weight.data.ravel(), "new b2 (FC-4)": net[2].bias.data,
    "new W1 (FC-5)": net[0].weight.data.ravel(), "new b1 (FC-4)": net[0].bias.data,
}

print(f"2-2-2 sigmoid network, input {x}, target {target}, learning rate {lr}, float64\n")
print(f"{'quantity':<16} {'by hand':<53} engine")
worst = 0.0
for key, hv in hand.items():
    ev = [float(v) for v in engine[key]]
    worst = max(worst, max(abs(a - b) for a, b in zip(hv, ev)))
    print(f"{key:<16} {' '.join(f'{v:+.9f}' for v in hv):<53} {' '.join(f'{v:+.9f}' for v in ev)}")
mse = nn.MSELoss()(out, np.array([target]))    # mean over n = 2 outputs: (1/2)Σ(y − a)², the same C here
print(f"\nnn.MSELoss on this one sample (2 outputs) gives the same cost: {mse:.9f}")
print(f"dC/dw5 = delta_o1 * out_h1 = {d_o[0]:.9f} * {h[0]:.9f} = {d_o[0] * h[0]:.9f}")
print(f"max difference hand vs engine: {worst:.3e}")
print("OK: the engine's backward is the hand computation" if worst < 1e-12 else "MISMATCH")
