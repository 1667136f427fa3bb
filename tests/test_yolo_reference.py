"""The real Darknet's training step of a tiny YOLO net (darknet/reference/tiny_yolo, two threshold settings),
reproduced by the cfg network in Darknet numerics through the trainer: the [yolo] output, its deltas, the
deltas reaching the layers below, every weight update, the new parameters and momentum buffers, the saved
.weights and the reported loss, each within 1e-5 relative. Darknet's deltas and updates are NEGATIVE
gradients: they are compared with −(engine gradient)."""
import numpy as np
import pytest

import deltaprop.darknet as dn
from conftest import fixture_dir, rel_err
from darknet_testutil import read_cost_file
from deltaprop.darknet.trainer import DarknetTrainer

TOL = 1e-5
STEPS = [("step", "tiny_yolo.cfg", 2), ("step_thresh", "tiny_yolo_thresh.cfg", 3)]


def darknet_truth_to_targets(truth: np.ndarray):
    """Darknet's truth array (N, 90, 5) of [x, y, w, h, class], each list ending at x = 0, as the engine's
    detection targets: one (k, 5) array of [class, x, y, w, h] per image."""
    targets = []
    for rows in truth:
        k = 0
        while k < len(rows) and rows[k, 0] != 0:
            k += 1
        targets.append(np.stack([rows[:k, 4], rows[:k, 0], rows[:k, 1], rows[:k, 2], rows[:k, 3]], axis=1))
    return targets


@pytest.mark.parametrize("step,cfg,count", STEPS)
def test_one_yolo_step_reproduces_real_darknet(step, cfg, count, tmp_path):
    root = fixture_dir("darknet", "reference", "tiny_yolo")
    d = root / step
    arr = lambda name: np.fromfile(d / f"{name}.f32", "<f4")
    net = dn.load(root / cfg, d / "init.weights", numerics="darknet")
    x = np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 64, 64)
    targets = darknet_truth_to_targets(arr("forward/truth").reshape(2, 90, 5))
    if step == "step":   # the label files hold the same boxes
        for k, t in enumerate(targets):
            assert np.allclose(np.loadtxt(root / f"img{k}.txt", ndmin=2), t, atol=1e-7)
    tr = DarknetTrainer(net, keep_layer_grads=True)
    grads = {}
    step_fn = tr.optimizer.step

    def spy_step(*a):
        for i in (0, 2, 4):
            lay = net.layers[i]
            grads[f"backward/L{i:02d}_weight_updates"] = -lay.weight.grad
            grads[f"backward/L{i:02d}_bias_updates"] = -(lay.bn.bias.grad if i < 4 else lay.bias.grad)
            if i < 4:
                grads[f"backward/L{i:02d}_scale_updates"] = -lay.bn.weight.grad
        return step_fn(*a)
    tr.optimizer.step = spy_step
    res = tr.train_step(x, targets)

    out = {"forward/L05_output": net.layer_outputs[5],
           "forward/L05_delta_after_forward": -net.layer_grads[5],
           "backward/L05_delta_in": -net.layer_grads[5]}
    for i in (4, 3, 2):
        out[f"backward/L{i:02d}_delta_in"] = -net.layer_grads[i]
    out.update(grads)
    st = tr.optimizer.state
    for i in (0, 2, 4):
        lay = net.layers[i]
        bias = lay.bn.bias if i < 4 else lay.bias
        out[f"after_update/L{i:02d}_weights"] = lay.weight.data
        out[f"after_update/L{i:02d}_biases"] = bias.data
        out[f"after_update/L{i:02d}_weight_updates"] = -st[lay.weight]["momentum_buffer"]
        out[f"after_update/L{i:02d}_bias_updates"] = -st[bias]["momentum_buffer"]
        if i < 4:
            out[f"after_update/L{i:02d}_scales"] = lay.bn.weight.data
            out[f"after_update/L{i:02d}_scale_updates"] = -st[lay.bn.weight]["momentum_buffer"]
            out[f"after_update/L{i:02d}_rolling_mean"] = lay.bn.running_mean
            out[f"after_update/L{i:02d}_rolling_variance"] = lay.bn.running_var
    files = {str(p.relative_to(d))[:-4] for p in d.rglob("*.f32")} - {"forward/truth"}
    assert files == set(out)                       # every array of the dump is checked
    bad = {k: rel_err(np.ravel(v), arr(k)) for k, v in out.items() if not rel_err(np.ravel(v), arr(k)) < TOL}
    assert not bad, bad
    assert all(np.asarray(v).dtype == np.float32 for v in out.values())

    costs = read_cost_file(d / "cost.txt")
    assert res.costs[0][5] == pytest.approx(costs[5], rel=TOL)
    assert res.loss == pytest.approx(costs["reported_loss"], rel=TOL)
    assert res.seen == 2 and res.batch_num == 1
    # truths trained: image 0's 0.8×0.7 box fits anchor 5 (60×56), outside mask 0,1,2, so it is skipped
    (stats,) = res.yolo_stats
    assert stats["count"] == count and stats["layer"] == 5
    assert 0 <= stats["avg_iou"] <= 1 and 0 < stats["no_obj"] < 1

    dn.save_weights(net, tmp_path / "after.weights")
    mine, real = (tmp_path / "after.weights").read_bytes(), (d / "after.weights").read_bytes()
    assert len(mine) == len(real) and mine[:20] == real[:20]
    assert rel_err(np.frombuffer(mine[20:], "<f4"), np.frombuffer(real[20:], "<f4")) < TOL


def test_thresholds_change_the_deltas():
    """The two dumps differ where the thresholds act: the test above would notice a layer ignoring them."""
    root = fixture_dir("darknet", "reference", "tiny_yolo")
    a = np.fromfile(root / "step" / "forward" / "L05_delta_after_forward.f32", "<f4")
    net = dn.load(root / "tiny_yolo.cfg", root / "step" / "init.weights")
    net.train()
    net(np.fromfile(root / "input.f32", "<f4").reshape(2, 3, 64, 64))
    truth = np.fromfile(root / "step_thresh" / "forward" / "truth.f32", "<f4").reshape(2, 90, 5)
    net.loss(darknet_truth_to_targets(truth))
    net.backward()
    b = np.fromfile(root / "step_thresh" / "forward" / "L05_delta_after_forward.f32", "<f4")
    assert rel_err(-net.layer_grads[5].ravel(), b) > 1e-2      # thresholds .5/1 on step_thresh's truths
    assert rel_err(a, b) > 1e-2
