"""One training step of the real Darknet (darknet/reference/tiny_cls), reproduced layer by layer BY HAND
with this issue's kernels: numpy conv → Darknet BN (norm_darknet) → leaky → maxpool → connected →
[softmax] → [cost] (darknet_loss) → DarknetSGD. Every dumped array within 1e-5 relative (float32).
Darknet's deltas and updates are negative gradients: compared as −(engine gradient)."""
import json

import numpy as np
import pytest

from conftest import fixture_dir, rel_err
from deltaprop.functional import darknet_loss as dl
from deltaprop.functional import norm_darknet as nd
from deltaprop.nn.parameter import Parameter
from deltaprop.optim.darknet import DarknetSGD

TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    root = fixture_dir("darknet", "reference", "tiny_cls", "step")
    man = json.loads((root / "manifest.json").read_text())
    arrs = {f["file"][:-4]: np.fromfile(root / f["file"], dtype="<f4") for f in man["files"]}
    assert all(a.size == f["count"] for a, f in zip(arrs.values(), man["files"]))
    costs = {}
    for line in (root / "cost.txt").read_text().splitlines():
        w = line.split()
        if w[0] == "layer":
            costs[int(w[1])] = float(w[4])
        elif w[0] in ("net_cost", "reported_loss"):
            costs[w[0]] = float(w[1])
    return arrs, costs, man


def step(arrs):
    f32 = np.float32
    x = arrs["forward/input"].reshape(2, 3, 8, 8)
    t = arrs["forward/truth"].reshape(2, 10)
    W0 = Parameter(arrs["params_before/L00_weights"].reshape(8, 3, 3, 3).copy())
    b0 = Parameter(arrs["params_before/L00_biases"].copy())
    s0 = Parameter(arrs["params_before/L00_scales"].copy())
    W2 = Parameter(arrs["params_before/L02_weights"].reshape(10, 128).copy())
    b2 = Parameter(arrs["params_before/L02_biases"].copy())
    out = {}
    # L00 convolutional 3×3 pad 1 (cross-correlation, Conv forward of docs/equations.md §3)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    z = sum(np.einsum("fc,nchw->nfhw", W0.data[:, :, a, b], xp[:, :, a:a + 8, b:b + 8])
            for a in range(3) for b in range(3)).astype(f32)
    out["forward/L00_bn_x"] = z
    y, cache, (rm, rv) = nd.batchnorm_darknet_forward(z, s0.data, b0.data,
                                                      arrs["params_before/L00_rolling_mean"],
                                                      arrs["params_before/L00_rolling_variance"])
    mu, var = nd.darknet_batch_stats(z)
    out.update({"forward/L00_bn_mean": mu, "forward/L00_bn_variance": var, "forward/L00_bn_x_norm": nd.bn_cache_arrays(cache)["x_norm"],
                "forward/L00_rolling_mean": rm, "forward/L00_rolling_variance": rv})
    a0 = np.where(y > 0, y, f32(0.1) * y)
    out["forward/L00_output"] = a0
    # L01 maxpool 2/2 (first maximum wins)
    win = a0.reshape(2, 8, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 8, 4, 4, 4)
    am = win.argmax(-1)
    p1 = win.max(-1)
    out["forward/L01_output"] = p1
    # L02 connected, linear
    z2 = p1.reshape(2, 128) @ W2.data.T + b2.data
    out["forward/L02_output"] = z2
    # L03 [softmax], L04 [cost] sse scale 1
    p = dl.darknet_softmax(z2)
    c3, g3 = dl.darknet_softmax_loss(p, t)
    c4, err4, g4 = dl.darknet_cost(p, t, "sse", scale=1.0)
    out["forward/L03_output"], out["forward/L04_output"] = p, err4
    out["forward/L03_delta_after_forward"] = -g3
    out["forward/L04_delta_after_forward"] = -g4          # scale 1: the stored delta equals the scaled one
    # backward (engine sign), converted to Darknet's on comparison
    dlog = dl.darknet_softmax_backward(g4, g3)            # (1 + scale)(p − t)
    out["backward/L03_delta"] = out["backward/L02_delta_in"] = -dlog
    W2.accumulate(dlog.T @ p1.reshape(2, 128))
    b2.accumulate(dlog.sum(0))
    out["backward/L02_weight_updates"], out["backward/L02_bias_updates"] = -W2.grad, -b2.grad
    dp1 = (dlog @ W2.data).reshape(2, 8, 4, 4)
    out["backward/L01_delta_in"] = -dp1
    da0 = np.zeros((2, 8, 4, 4, 4), np.float32)
    np.put_along_axis(da0, am[..., None], dp1[..., None], axis=-1)
    da0 = da0.reshape(2, 8, 4, 4, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 8, 8, 8)
    out["backward/L00_delta_in"] = -da0
    dy = da0 * np.where(a0 > 0, f32(1), f32(0.1))
    dz, dscale, dbias = nd.batchnorm_darknet_backward(dy, cache)
    md, vd = nd.darknet_bn_intermediates(dy, cache)
    out["backward/L00_bn_mean_delta"], out["backward/L00_bn_variance_delta"] = -md, -vd
    out["backward/L00_delta"] = -dz
    s0.accumulate(dscale)
    b0.accumulate(dbias)
    W0.accumulate(np.stack([np.stack([np.einsum("nfhw,nchw->fc", dz, xp[:, :, a:a + 8, b:b + 8])
                                      for b in range(3)], -1) for a in range(3)], -2))
    out["backward/L00_weight_updates"] = -W0.grad
    out["backward/L00_scale_updates"], out["backward/L00_bias_updates"] = -s0.grad, -b0.grad
    gx = np.zeros_like(xp)
    for a in range(3):
        for b in range(3):
            gx[:, :, a:a + 8, b:b + 8] += np.einsum("fc,nfhw->nchw", W0.data[:, :, a, b], dz)
    out["backward/input_delta"] = -gx[:, :, 1:-1, 1:-1]
    # update
    named = {"L00_weights": W0, "L00_biases": b0, "L00_scales": s0, "L02_weights": W2, "L02_biases": b2}
    opt = DarknetSGD(list(named.items()), lr=0.1, momentum=0.9, decay=0.0005, batch=2)
    opt.step()
    bufname = {"weights": "weight_updates", "biases": "bias_updates", "scales": "scale_updates"}
    for k, prm in named.items():
        out[f"after_update/{k}"] = prm.data
        lay, kind = k.split("_")
        out[f"after_update/{lay}_{bufname[kind]}"] = -opt.state[prm]["momentum_buffer"]
    out["after_update/L00_rolling_mean"], out["after_update/L00_rolling_variance"] = rm, rv
    costs = (c3, c4)
    return out, costs


def test_one_step_matches_real_darknet(ref):
    arrs, costs, man = ref
    out, (c3, c4) = step(arrs)
    bad = {}
    for k, v in out.items():
        assert v.dtype == np.float32, k
        e = rel_err(v.ravel(), arrs[k])
        if not e < TOL:
            bad[k] = e
    assert not bad, bad
    # every dump is covered: the ones not computed above are zeros or copies, checked here
    for k in ("L00", "L01", "L02"):
        assert not arrs[f"forward/{k}_delta_after_forward"].any()
    for k in ("weights", "biases", "scales"):
        assert np.array_equal(arrs[f"backward/L00_{k}"], arrs[f"params_before/L00_{k}"])
    for k in ("weights", "biases"):
        assert np.array_equal(arrs[f"backward/L02_{k}"], arrs[f"params_before/L02_{k}"])
    for k in ("rolling_mean", "rolling_variance"):
        assert np.array_equal(arrs[f"backward/L00_{k}"], arrs[f"forward/L00_{k}"])
    assert rel_err(out["forward/L04_delta_after_forward"].ravel(), arrs["backward/L04_delta"]) < TOL
    assert rel_err(out["backward/L03_delta"].ravel(), arrs["backward/L03_delta_in"]) < TOL
    assert np.array_equal(arrs["backward/L04_delta_in"], arrs["backward/L04_delta"])
    assert rel_err(out["backward/L01_delta_in"].ravel(), arrs["backward/L01_delta"]) < TOL
    covered = set(out) | {k for k in arrs if k.startswith(("params_before/", "backward/L00_", "backward/L02_"))}
    covered |= {"forward/input", "forward/truth", "forward/L01_maxpool_indexes", "backward/L04_delta_in",
                "backward/L04_delta", "backward/L03_delta_in", "backward/L01_delta", "forward/L00_delta_after_forward",
                "forward/L01_delta_after_forward", "forward/L02_delta_after_forward"}
    assert set(arrs) <= covered, set(arrs) - covered
    assert c3 == pytest.approx(costs[3], rel=1e-6) and c4 == pytest.approx(costs[4], rel=1e-6)
    assert dl.darknet_reported_loss([c3, c4], 2) == pytest.approx(costs["reported_loss"], rel=1e-6)


def test_standard_bn_would_not_match(ref):
    """The check can fail: PyTorch-style BN (biased variance, ε under the root) misses the dumps."""
    arrs, _, _ = ref
    out, _ = step(arrs)
    z = out["forward/L00_bn_x"]
    mu = z.mean(axis=(0, 2, 3), keepdims=True)
    xn = (z - mu) / np.sqrt(z.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert rel_err(xn.ravel(), arrs["forward/L00_bn_x_norm"]) > 1e-3
