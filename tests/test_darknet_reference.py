"""The real Darknet's training step (darknet/reference/tiny_cls), reproduced by the cfg network in
Darknet numerics through the trainer: from step/init.weights, input.f32 and truth.f32, one
``DarknetTrainer.train_step`` gives every dumped array within 1e-5 relative (float32) and a saved
after.weights equal to the real one within float32 rounding. Darknet's deltas and updates are
negative gradients: they are compared with −(engine gradient). Also: a float64 gradcheck of the
whole cfg network in standard numerics (tiny_cls_nocost.cfg)."""
import json

import numpy as np
import pytest

import deltaprop.darknet as dn
from conftest import fixture_dir, rel_err
from deltaprop.darknet.train_loss import network_loss
from deltaprop.darknet.trainer import DarknetTrainer
from deltaprop.gradcheck import numerical_gradient, relative_error

TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    root = fixture_dir("darknet", "reference", "tiny_cls")
    man = json.loads((root / "step" / "manifest.json").read_text())
    arrs = {f["file"][:-4]: np.fromfile(root / "step" / f["file"], dtype="<f4") for f in man["files"]}
    costs = {}
    for line in (root / "step" / "cost.txt").read_text().splitlines():
        w = line.split()
        if w[0] == "layer":
            costs[int(w[1])] = float(w[4])
        elif w[0] in ("net_cost", "reported_loss"):
            costs[w[0]] = float(w[1])
    return root, arrs, costs


def _record(net):
    """Wrap layer/BN forward and backward to record what Darknet dumps (a test-only probe)."""
    rec = {}
    for i, layer in enumerate(net.layers):
        def bwd(dout, _b=layer.backward, _i=i):
            rec[f"backward/L{_i:02d}_delta_in"] = dout.copy()
            return _b(dout)
        object.__setattr__(layer, "backward", bwd)
    bn = net.layers[0].bn

    def bn_fwd(x, _f=bn.forward):
        rec["forward/L00_bn_x"] = x.copy()
        y = _f(x)
        from deltaprop.functional.norm_darknet import bn_cache_arrays
        arrays = bn_cache_arrays(bn._cache)
        rec["forward/L00_bn_x_norm"] = arrays["x_norm"].copy()
        rec["forward/L00_bn_variance"] = arrays["variance"].copy()
        rec["forward/L00_bn_mean"] = arrays["mean"].copy()
        rec["forward/L00_rolling_mean"] = bn.running_mean.copy()
        rec["forward/L00_rolling_variance"] = bn.running_var.copy()
        return y

    def act_bwd(dout, _b=bn.act.backward):   # bn is batch norm + activation: its BN's δ comes after σ'
        from deltaprop.functional.norm_darknet import darknet_bn_intermediates
        dy = _b(dout)
        md, vd = darknet_bn_intermediates(dy, bn._cache)
        rec["backward/L00_bn_mean_delta"], rec["backward/L00_bn_variance_delta"] = md, vd
        return dy

    def bn_bwd(dout, _b=bn.backward):
        dz = _b(dout)
        rec["backward/L00_delta"] = dz.copy()
        return dz
    object.__setattr__(bn, "forward", bn_fwd)
    object.__setattr__(bn, "backward", bn_bwd)
    object.__setattr__(bn.act, "backward", act_bwd)
    return rec


def test_one_step_reproduces_real_darknet(ref, tmp_path):
    root, arrs, costs = ref
    net = dn.load(root / "tiny_cls.cfg", root / "step" / "init.weights", numerics="darknet")
    assert net.seen == 0 and net.dtype == np.float32
    x = np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8)
    t = np.fromfile(root / "truth.f32", "<f4").reshape(2, 10)
    assert np.array_equal(x.ravel(), arrs["forward/input"]) and np.array_equal(t.ravel(), arrs["forward/truth"])
    for k in ("weights", "biases", "scales", "rolling_mean", "rolling_variance"):
        assert np.array_equal(net.layers[0].get_darknet_array(k), arrs[f"params_before/L00_{k}"])
    tr = DarknetTrainer(net)
    assert (tr.batch, tr.subdivisions) == (2, 1)
    object.__setattr__(net, "needs_input_grad", True)   # Darknet never computes it; the dump has it
    rec = _record(net)
    grads = {}
    step = tr.optimizer.step

    def spy_step(*a):
        for i in (0, 2):
            lay = net.layers[i]
            grads[f"L{i:02d}_weight_updates"] = -lay.weight.grad
            grads[f"L{i:02d}_bias_updates"] = -(lay.bn.bias.grad if i == 0 else lay.bias.grad)
        grads["L00_scale_updates"] = -net.layers[0].bn.weight.grad
        return step(*a)
    tr.optimizer.step = spy_step
    input_grad = {}
    orig_bw = net.backward

    def net_bw(d, _b=orig_bw):
        g = _b(d)
        input_grad["g"] = g
        return g
    object.__setattr__(net, "backward", net_bw)
    res = tr.train_step(x, t)

    out = {}
    for i in range(5):
        if i != 4:                                        # [cost]'s "output" is its error array
            out[f"forward/L{i:02d}_output"] = net.layer_outputs[i]
    p = net.layer_outputs[3].reshape(2, 10)
    out["forward/L04_output"] = (t - p) ** 2
    out["forward/L03_delta_after_forward"] = out["forward/L04_delta_after_forward"] = t - p
    for k, v in rec.items():
        out[k] = -v if k.startswith("backward/") and "delta" in k else v
    # the delta a layer holds after its backward: maxpool/connected(linear) pass it on unchanged
    out["backward/L01_delta"] = out["backward/L01_delta_in"]
    out["backward/L02_delta"] = out["backward/L02_delta_in"]
    out["backward/input_delta"] = -input_grad["g"]
    for k, v in grads.items():
        out[f"backward/{k}"] = v
    lay0, lay2 = net.layers[0], net.layers[2]
    st = tr.optimizer.state
    out.update({
        "after_update/L00_weights": lay0.weight.data, "after_update/L00_biases": lay0.bn.bias.data,
        "after_update/L00_scales": lay0.bn.weight.data, "after_update/L00_rolling_mean": lay0.bn.running_mean,
        "after_update/L00_rolling_variance": lay0.bn.running_var,
        "after_update/L00_weight_updates": -st[lay0.weight]["momentum_buffer"],
        "after_update/L00_bias_updates": -st[lay0.bn.bias]["momentum_buffer"],
        "after_update/L00_scale_updates": -st[lay0.bn.weight]["momentum_buffer"],
        "after_update/L02_weights": lay2.weight.data, "after_update/L02_biases": lay2.bias.data,
        "after_update/L02_weight_updates": -st[lay2.weight]["momentum_buffer"],
        "after_update/L02_bias_updates": -st[lay2.bias]["momentum_buffer"],
    })
    bad = {k: rel_err(np.ravel(v), arrs[k]) for k, v in out.items() if not rel_err(np.ravel(v), arrs[k]) < TOL}
    assert not bad, bad
    assert all(np.asarray(v).dtype == np.float32 for v in out.values())
    # the softmax's delta: t − p from its own loss plus the [cost]'s t − p passed through: 2(t − p)
    assert rel_err(out["backward/L02_delta_in"].ravel(), arrs["backward/L03_delta"]) < TOL
    assert rel_err(out["forward/L04_delta_after_forward"].ravel(), arrs["backward/L04_delta"]) < TOL
    # every dump is checked (params_before above; the rest are zeros, copies or Darknet-internal indices)
    rest = set(arrs) - set(out) - {k for k in arrs if k.startswith("params_before/")}
    assert rest == {"forward/input", "forward/truth", "forward/L01_maxpool_indexes", "backward/L04_delta_in",
                    "backward/L04_delta", "backward/L03_delta", "backward/L03_delta_in",
                    "forward/L00_delta_after_forward", "forward/L01_delta_after_forward",
                    "forward/L02_delta_after_forward"} | {k for k in arrs if k.startswith("backward/L0")
                                                         and k.split("_", 1)[1] in ("weights", "biases", "scales",
                                                                                     "rolling_mean",
                                                                                     "rolling_variance")}
    # costs, reported loss, learning rate, seen
    assert res.costs[0][3] == pytest.approx(costs[3], rel=1e-6)
    assert res.costs[0][4] == pytest.approx(costs[4], rel=1e-6)
    assert res.loss == pytest.approx(costs["reported_loss"], rel=1e-6)
    assert res.lr == float(np.float32(0.1)) and res.seen == 2 == net.seen and res.batch_num == 1
    # the saved file
    dn.save_weights(net, tmp_path / "after.weights")
    mine = (tmp_path / "after.weights").read_bytes()
    real = (root / "step" / "after.weights").read_bytes()
    assert len(mine) == len(real) and mine[:20] == real[:20]
    a, b = np.frombuffer(mine[20:], "<f4"), np.frombuffer(real[20:], "<f4")
    assert rel_err(a, b) < TOL
    # within float32 rounding: per Darknet array, |mine − real| ≤ 8 ε₃₂ · max|real| (about half the
    # floats are bit-identical; the others differ by the order of float32 summation in the BLAS products)
    off = 0
    for i, lay in enumerate(net.layers):
        for name, n in lay.weight_layout(loading=False):
            aa, bb = a[off:off + n].astype(np.float64), b[off:off + n].astype(np.float64)
            off += n
            assert np.abs(aa - bb).max() <= 8 * np.finfo(np.float32).eps * np.abs(bb).max(), (i, name)
    assert off == a.size
    assert (a == b).mean() > 0.3


def test_standard_numerics_do_not_match(ref):
    """The reference can tell the numerics apart: standard BN misses Darknet's layer-0 output."""
    root, arrs, _ = ref
    net = dn.load(root / "tiny_cls.cfg", root / "step" / "init.weights", numerics="standard")
    net.train()
    x = np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8)
    net(x)
    assert rel_err(net.layer_outputs[0].ravel(), arrs["forward/L00_output"]) > 1e-4


@pytest.mark.parametrize("cfg", ["tiny_cls_nocost.cfg", "tiny_cls.cfg"])
def test_gradcheck_standard_numerics_float64(ref, cfg):
    """Standard numerics: the gradients of Σ costs (softmax cross-entropy, ½·scale·sse) are exact."""
    root, _, _ = ref
    import deltaprop
    deltaprop.manual_seed(3)
    net = dn.load(root / cfg, root / "step" / "init.weights", numerics="standard", dtype=np.float64)
    net.train()
    rng = np.random.default_rng(0)
    for p in net.parameters():              # move off the zero-initialised biases/ones scales
        p.data += 0.1 * rng.standard_normal(p.data.shape)
    x = rng.standard_normal((3, 3, 8, 8))
    t = np.eye(10)[[1, 4, 7]]

    def objective():
        net(x)
        costs, _ = network_loss(net, x, t, backward=False)
        return sum(costs.values())
    net.zero_grad()
    net(x)
    _, dx = network_loss(net, x, t)
    worst = {}
    for name, p in net.named_parameters():
        num, kinks = numerical_gradient(objective, p.data)
        keep = ~kinks
        worst[name] = relative_error(p.grad[keep], num[keep])
    assert max(worst.values()) < 1e-6, worst
    xx = x.copy()

    def obj_x():
        net(xx)
        return sum(network_loss(net, xx, t, backward=False)[0].values())
    num, kinks = numerical_gradient(obj_x, xx)
    assert relative_error(dx[~kinks], num[~kinks]) < 1e-6


def test_darknet_loss_after_softmax_is_double_counted(ref):
    """In Darknet numerics the logits get (1 + scale)(p − t) with [cost] after [softmax]; without [cost], p − t."""
    root, _, _ = ref
    x = np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 8, 8)
    t = np.fromfile(root / "truth.f32", "<f4").reshape(2, 10)
    got = {}
    for cfg in ("tiny_cls.cfg", "tiny_cls_nocost.cfg"):
        net = dn.load(root / cfg, root / "step" / "init.weights")
        net.train()
        net(x)
        seen = {}
        orig = net.layers[2].backward
        object.__setattr__(net.layers[2], "backward", lambda d, _o=orig: seen.setdefault("d", d.copy()) is None or _o(d))
        network_loss(net, x, t)
        got[cfg] = seen["d"].reshape(2, 10)
        p = net.layer_outputs[3].reshape(2, 10)
    assert rel_err(got["tiny_cls.cfg"], 2 * got["tiny_cls_nocost.cfg"]) < 1e-6
    assert rel_err(got["tiny_cls_nocost.cfg"], p - t) < 1e-6
