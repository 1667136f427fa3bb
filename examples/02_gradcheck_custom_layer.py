"""Write your own layer and verify its backward pass with deltaprop.gradcheck.check_module.

ScaledTanh computes y = A·tanh(S·x) with two trainable scalars (LeCun's 1.7159·tanh(2x/3) when A, S are
fixed). Its backward follows the module contract: given dout = ∂C/∂y it ADDS ∂C/∂A and ∂C/∂S into the
parameters' .grad and returns ∂C/∂x. check_module compares every gradient with centred differences in
float64; a correct layer has relative errors ~1e-10, one with a forgotten chain-rule factor ≫ 1e-6.

    python3 examples/02_gradcheck_custom_layer.py
"""
import numpy as np

import deltaprop as dp
from deltaprop import nn
from deltaprop.gradcheck import check_module


class ScaledTanh(nn.Module):
    """y = A·tanh(S·x); ∂y/∂x = A·S·(1 − t²), ∂y/∂A = t, ∂y/∂S = A·x·(1 − t²), with t = tanh(S·x)."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2 / 3) -> None:
        super().__init__()
        self.A = nn.Parameter(np.array([amplitude]))
        self.S = nn.Parameter(np.array([slope]))

    def forward(self, x):
        t = np.tanh(self.S.data * x)
        self._save((x, t))                       # what backward needs (kept in train mode only)
        return self.A.data * t

    def backward(self, dout):
        x, t = self._take()
        a, s = self.A.data, self.S.data
        dt = dout * (1 - t * t)                  # ∂C/∂(S·x) / A
        self.A.accumulate(np.array([np.sum(dout * t)]))        # parameter gradients are ADDED (summed over
        self.S.accumulate(np.array([np.sum(dt * a * x)]))      # every element of the batch)
        return dt * a * s                        # ∂C/∂x


class BuggyScaledTanh(ScaledTanh):
    """The same layer with a classic mistake: the inner derivative S is forgotten in ∂C/∂x."""

    def backward(self, dout):
        x, t = self._take()
        dt = dout * (1 - t * t)
        self.A.accumulate(np.array([np.sum(dout * t)]))
        self.S.accumulate(np.array([np.sum(dt * self.A.data * x)]))
        return dt * self.A.data                  # WRONG: should be dt · A · S


dp.manual_seed(0)
x = np.random.default_rng(0).standard_normal((4, 5))          # float64: gradchecks need it
for layer in (ScaledTanh(), BuggyScaledTanh()):
    res = check_module(layer, x)                 # C = Σ layer(x) ⊙ R for a fixed random R
    verdict = "pass" if res.ok(1e-6) else "FAIL"
    print(f"{type(layer).__name__:<16} {verdict}: relative errors {res}")
    for name, err in res.errors.items():
        print(f"    {name:<6} {err:.2e} {'ok' if err < 1e-6 else '<-- wrong gradient'}")

# The layer composes with the engine's own layers; the whole network checks out too.
net = nn.Sequential(nn.Linear(5, 3), ScaledTanh(), nn.Linear(3, 2)).double()
res = check_module(net, x)
print(f"Linear -> ScaledTanh -> Linear: {'pass' if res.ok(1e-6) else 'FAIL'} (max error {res.max_error:.2e})")
