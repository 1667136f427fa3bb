"""deltaprop.explain: sensitivity maps equal the gradients of a hand-driven layer-by-layer backward pass
(Sequential, a hand-built Graph with a shared node, a Darknet cfg graph), the input map matches centred
differences, the model is left untouched, gradient norms, and the PNG pictures."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import backend, nn
from deltaprop.errors import DataError, ShapeError
from deltaprop.explain import (format_norms, layer_gradient_norms, model_layers, plot_history, plot_sensitivity,
                               read_history, sensitivity_maps)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cnn():
    dp.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 6), nn.Tanh(), nn.Linear(6, 4)).double()


def _batch(rng, n=3):
    return rng.standard_normal((n, 1, 8, 8)), np.array([0, 3, 1][:n])


def _manual_sequential(model, x, loss, y):
    """Forward layer by layer (eval behaviour, caches kept), then each layer's backward by hand."""
    douts = {}
    model.eval()
    with dp.enable_grad():
        a = x
        for layer in model:
            a = layer.forward(a)
        loss(a, y)
        d = loss.backward()
        for i in range(len(model) - 1, -1, -1):
            douts[str(i)] = d
            d = model[i].backward(d)
    model.train()
    return douts, d


def test_sequential_maps_equal_hand_backward(rng):
    model = _cnn()
    x, y = _batch(rng)
    maps = sensitivity_maps(model, x, nn.CrossEntropyLoss(), y)
    assert list(maps) == ["input"] + [str(i) for i in range(len(model))]
    douts, dx = _manual_sequential(model, x, nn.CrossEntropyLoss(), y)
    for name, d in douts.items():
        assert maps[name].shape == d.shape and np.array_equal(maps[name], d), name
    assert np.array_equal(maps["input"], dx)
    assert maps.types["0"] == "Conv2d" and maps.types["6"] == "Linear"
    assert maps.loss == pytest.approx(nn.CrossEntropyLoss()(model.eval()(x), y), rel=1e-14)


def test_input_map_matches_centred_differences(rng):
    model = _cnn()
    x, y = _batch(rng, 2)
    loss = nn.CrossEntropyLoss()
    g = sensitivity_maps(model, x, loss, y)["input"]
    model.eval()
    h = 1e-6
    for _ in range(4):  # directional derivatives along random unit vectors
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        with dp.no_grad():
            num = (loss(model(x + h * v), y) - loss(model(x - h * v), y)) / (2 * h)
        assert abs(num - np.sum(g * v)) <= 1e-7 * max(abs(num), 1e-3)


class _Add(nn.Module):
    multi_input = True

    def forward(self, xs):
        return xs[0] + xs[1]

    def backward(self, dout):
        return [dout, dout]


def test_graph_shared_node_gets_the_sum_of_its_consumers(rng):
    dp.manual_seed(1)
    g = nn.Graph()
    lin0, tanh1, lin2, add3, lin4 = nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 5), _Add(), nn.Linear(5, 3)
    for mod, ins in [(lin0, None), (tanh1, None), (lin2, None), (add3, [1, 2]), (lin4, None)]:
        g.add(mod, ins)
    g.double()
    x, t = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    maps = sensitivity_maps(g, x, nn.MSELoss(), t)
    # by hand: node 1 feeds node 2 and node 3, so δ1 = (from 3) + (from 2)
    loss = nn.MSELoss()
    with dp.enable_grad():
        a0 = lin0.forward(x)
        a1 = tanh1.forward(a0)
        a2 = lin2.forward(a1)
        a3 = add3.forward([a1, a2])
        loss(lin4.forward(a3), t)
        d4 = loss.backward()
        d3 = lin4.backward(d4)
        d1_direct, d2 = add3.backward(d3)
        d1 = d1_direct + lin2.backward(d2)
        d0 = tanh1.backward(d1)
        dx = lin0.backward(d0)
    for name, d in [("4", d4), ("3", d3), ("2", d2), ("1", d1), ("0", d0), ("input", dx)]:
        assert np.allclose(maps[name], d, rtol=1e-14, atol=1e-16), name


def test_darknet_graph_maps(rng):
    from darknet_testutil import TINY_GRAPH_CFG
    from deltaprop import darknet
    dp.manual_seed(2)
    net = darknet.load_cfg_text(TINY_GRAPH_CFG, numerics="standard", dtype=np.float64)
    x = rng.random((2, 3, 6, 6))
    out = net.predict(x)
    t = rng.random(out.shape)
    maps = sensitivity_maps(net, x, nn.MSELoss(), t)
    n = len(net)
    assert list(maps) == ["input"] + [str(i) for i in range(n)]
    assert maps.types["0"] == type(net.layers[0]).__name__
    # by hand: walk the nodes backwards, summing the gradients sent to each node by its consumers
    net.eval()
    loss = nn.MSELoss()
    grads = [None] * n
    with dp.enable_grad():
        loss(net(x), t)
        grads[n - 1] = loss.backward()
        dx = None
        for i in range(n - 1, -1, -1):
            assert np.allclose(maps[str(i)], grads[i], rtol=1e-13, atol=1e-15), i
            ins = net.node_inputs(i)
            back = net.layers[i].backward(grads[i])
            for j, d in zip(ins, back if getattr(net.layers[i], "multi_input", False) else [back]):
                if j == -1:
                    dx = d if dx is None else dx + d
                else:
                    grads[j] = d if grads[j] is None else grads[j] + d
    net.train()
    assert np.allclose(maps["input"], dx, rtol=1e-13, atol=1e-15)
    assert len(net.node_inputs(5)) == 2 and 0 in [i for k in range(n) for i in net.node_inputs(k)][1:]


def test_model_left_untouched(rng):
    dp.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    model[0].needs_input_grad = False
    model[4].weight.grad = np.full((3, 6), 7.0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rng_state = backend.get_rng_state()
    x, y = rng.standard_normal((4, 5)), np.array([0, 1, 2, 0])
    for train_mode in (False, True):
        maps = sensitivity_maps(model, x, nn.CrossEntropyLoss(), y, train_mode=train_mode)
        assert maps["input"] is not None and maps["input"].shape == x.shape   # computed despite the flag
        assert model[0].needs_input_grad is False and model.training and model[1].training
        assert all("backward" not in m.__dict__ and m._cache is None for m in model.modules())
        assert model[0].weight.grad is None and np.array_equal(model[4].weight.grad, np.full((3, 6), 7.0))
        after = model.state_dict()
        assert all(np.array_equal(before[k], after[k]) for k in before)   # BN running statistics too
        assert backend.get_rng_state()["state"] == rng_state["state"]
    model.eval()
    sensitivity_maps(model, x, nn.CrossEntropyLoss(), y)
    assert not model.training and not model[1].training


def test_dout_explains_one_class_score(rng):
    model = _cnn()
    x, _ = _batch(rng, 2)
    dout = np.zeros((2, 4))
    dout[:, 2] = 1.0                       # C = Σ_n score_2(x_n): ∂C/∂x is the classic saliency of class 2
    maps = sensitivity_maps(model, x, dout=dout)
    assert maps.loss is None and np.array_equal(maps["6"], dout)
    assert np.allclose(maps["5"], dout @ model[6].weight.data)            # FC-1 without σ'


def test_errors(rng):
    model = _cnn()
    x, y = _batch(rng)
    with pytest.raises(ValueError, match="give a loss"):
        sensitivity_maps(model, x)
    with pytest.raises(ShapeError, match="scalar"):
        sensitivity_maps(model, x, nn.CrossEntropyLoss(reduction="none"), y)
    with pytest.raises(ShapeError, match="dout has shape"):
        sensitivity_maps(model, x, dout=np.zeros((3, 5)))
    named = nn.Sequential(__import__("collections").OrderedDict(input=nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="named 'input'"):
        sensitivity_maps(named, np.zeros((1, 2), np.float32), dout=np.zeros((1, 2), np.float32))
    assert all("backward" not in m.__dict__ for m in model.modules())    # restored after an error too


def test_model_layers_opens_nested_containers():
    inner = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    model = nn.Sequential(nn.Linear(2, 2), inner, nn.Linear(2, 1))
    assert [n for n, _ in model_layers(model)] == ["0", "1.0", "1.1", "2"]
    assert [n for n, _ in model_layers(nn.Linear(2, 2))] == ["Linear"]


def test_layer_gradient_norms_by_hand(rng):
    model = _cnn()
    x, y = _batch(rng)
    rows = layer_gradient_norms(model, x, nn.CrossEntropyLoss(), y)
    assert [r["layer"] for r in rows] == ["input"] + [str(i) for i in range(len(model))]
    douts, dx = _manual_sequential(model, x, nn.CrossEntropyLoss(), y)   # also leaves the parameter grads
    by = {r["layer"]: r for r in rows}
    assert by["input"]["delta_norm"] == pytest.approx(np.linalg.norm(dx), rel=1e-12)
    for i, layer in enumerate(model):
        r = by[str(i)]
        assert r["delta_norm"] == pytest.approx(np.linalg.norm(douts[str(i)]), rel=1e-12)
        assert r["delta_rms"] == pytest.approx(np.sqrt(np.mean(douts[str(i)] ** 2)), rel=1e-12)
        ps = list(layer.parameters())
        if not ps:
            assert r["grad_norm"] is None and r["param_norm"] is None and r["ratio"] is None
            continue
        g = np.sqrt(sum(np.sum(p.grad ** 2) for p in ps))
        w = np.sqrt(sum(np.sum(p.data ** 2) for p in ps))
        assert r["grad_norm"] == pytest.approx(g, rel=1e-12) and r["param_norm"] == pytest.approx(w, rel=1e-12)
        assert r["ratio"] == pytest.approx(g / w, rel=1e-12)
        assert r["grads"]["weight"] == pytest.approx(np.linalg.norm(layer.weight.grad), rel=1e-12)
    table = format_norms(rows)
    assert all(f"{i} (" in table for i in range(len(model))) and "input (input)" in table


def test_norms_show_vanishing_gradients_in_a_deep_sigmoid_net(rng):
    dp.manual_seed(4)
    layers = []
    for _ in range(8):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(16, 2)).double()
    rows = layer_gradient_norms(model, rng.standard_normal((8, 16)), nn.CrossEntropyLoss(), np.arange(8) % 2)
    rms = {r["layer"]: r["delta_rms"] for r in rows}
    assert rms["0"] < 1e-3 * rms["16"]              # σ' ≤ 1/4 per layer: δ shrinks towards the input


def _check_png(path, min_w=100, min_h=100):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] >= min_w and im.size[1] >= min_h
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]   # atomic write left nothing


def test_plot_sensitivity_png(tmp_path, rng):
    pytest.importorskip("matplotlib")
    model = _cnn()
    x, y = _batch(rng)
    maps = sensitivity_maps(model, x, nn.CrossEntropyLoss(), y)
    out = plot_sensitivity(maps, tmp_path / "sub" / "maps.png", max_layers=4)
    assert out == tmp_path / "sub" / "maps.png"
    _check_png(out)
    # vector input (N, 16) with a square length is drawn as a 4x4 picture
    dp.manual_seed(5)
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    m2 = sensitivity_maps(mlp, rng.standard_normal((2, 16)), nn.CrossEntropyLoss(), np.array([0, 2]))
    _check_png(plot_sensitivity(m2, tmp_path / "mlp.png"))
    m2["0"][0, 0], m2["input"][0, 1] = np.inf, np.nan          # an exploding gradient still draws
    _check_png(plot_sensitivity(m2, tmp_path / "inf.png"))
    with pytest.raises(ValueError, match="input"):
        plot_sensitivity({"0": np.zeros((1, 2))}, tmp_path / "bad.png")


def test_plot_history_from_fit_and_darknet_records(tmp_path, rng):
    pytest.importorskip("matplotlib")
    from deltaprop import optim
    from deltaprop.train import fit
    dp.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), (X, y), (X[:16], y[:16]), epochs=3,
        batch_size=16, out_dir=tmp_path / "run", progress=False, log=None)
    hist = tmp_path / "run" / "history.jsonl"
    assert len(read_history(hist)) == 3
    _check_png(plot_history(hist, tmp_path / "curves.png"))
    darknet_like = [{"batch": 10 * i, "loss": 2.0 / i, "avg_loss": 2.2 / i, "lr": 0.001 * min(i, 3)}
                    for i in range(1, 6)]
    darknet_like[-1].update(eval_loss=0.5, eval_acc=0.8)
    _check_png(plot_history(darknet_like, tmp_path / "dk.png"))


def test_plot_history_errors(tmp_path):
    bad = tmp_path / "h.jsonl"
    bad.write_text(json.dumps({"epoch": 1, "train_loss": 1.0}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"h\.jsonl:2"):
        plot_history(bad, tmp_path / "x.png")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no records"):
        plot_history(empty, tmp_path / "x.png")
    with pytest.raises(DataError, match="no loss or accuracy"):
        plot_history([{"epoch": 1, "lr": 0.1}], tmp_path / "x.png")
    with pytest.raises(DataError, match="no such history"):
        plot_history(tmp_path / "missing.jsonl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plots_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"deltaprop\[plot\]"):
        plot_history([{"epoch": 1, "train_loss": 1.0}], tmp_path / "x.png")
