"""``deltaprop.export.to_onnx`` on Darknet networks: ONNX Runtime (and OpenCV's DNN module) give deltaprop's eval
forward within 1e-4 relative on the coco128 photos, at the cfg size and another, batch norm folded or kept; each
converter pitfall of the issue has its test; the bytes are the same twice; what ONNX cannot express is refused
naming the layer, before anything is written.

yolov3-tiny runs with seeded weights (He-scaled, positive rolling variances: ``darknet_testutil.seeded_weights``);
a real yolov3-tiny.weights is 35 MB and not in the repository."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import rel_err
from darknet_testutil import TINY_GRAPH_CFG, seeded_weights, yolo_section
from deltaprop import darknet
from deltaprop.export import ExportError, to_onnx
from export_testutil import RTOL, onnx, ops_of, photos, run_onnx


@pytest.fixture(scope="module")
def tiny():
    """yolov3-tiny at its cfg size (416) with seeded weights, and its outputs on the three photos (one forward,
    every layer's output kept)."""
    net = darknet.load("yolov3-tiny")
    seeded_weights(net, 3)
    x = photos(416, 416)
    outs = net.predict(x)
    return net, x, [o.copy() for o in outs], [None if o is None else o.copy() for o in net.layer_outputs]


def _close(got, want, what):
    assert len(got) == len(want), what
    errs = [rel_err(g, w) for g, w in zip(got, want)]
    for g, w in zip(got, want):
        assert g.shape == w.shape, (what, g.shape, w.shape)
    assert max(errs) <= RTOL, (what, errs)
    return errs


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "batchnorm-kept"])
def test_yolov3_tiny_matches_onnxruntime_on_photos(tiny, tmp_path, fold):
    net, x, want, _ = tiny
    proto = to_onnx(net, tmp_path / "y.onnx", dynamic_batch=True, fold_bn=fold)
    assert [o.name for o in proto.graph.output] == ["yolo_16", "yolo_23"]
    assert ("BatchNormalization" in ops_of(proto)) is not fold
    errs = _close(run_onnx(tmp_path / "y.onnx", x), want, "yolov3-tiny 416")
    print(f"yolov3-tiny 416x416, batch norm {'folded' if fold else 'kept'}: max rel diff {max(errs):.2e}")


def test_yolov3_tiny_at_another_size(tiny, tmp_path):
    """Exported at 288×224 from the 416 network (planned again, the network untouched) equals deltaprop's network
    loaded at that size."""
    net, _, _, _ = tiny
    proto = to_onnx(net, None, size=(288, 224), batch=1, opset=11)
    assert net.input_shape == (3, 416, 416)
    other = darknet.load("yolov3-tiny", width=288, height=224)
    other.load_state_dict(net.state_dict())
    x = photos(288, 224, 1)
    errs = _close(run_onnx(proto, x), other.predict(x), "yolov3-tiny 288x224")
    assert [tuple(o.shape) for o in run_onnx(proto, x)] == [(1, 255, 7, 9), (1, 255, 14, 18)]
    print(f"yolov3-tiny 288x224, opset 11: max rel diff {max(errs):.2e}")


def test_opencv_dnn_runs_the_export(tiny, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless, the test extra) runs the ONNX file")
    net, x, want, _ = tiny
    to_onnx(net, tmp_path / "y.onnx", batch=len(x))
    dnn = cv2.dnn.readNetFromONNX(str(tmp_path / "y.onnx"))
    dnn.setInput(x)
    got = dnn.forward(["yolo_16", "yolo_23"])
    errs = [rel_err(g, w) for g, w in zip(got, want)]
    assert max(errs) <= 1e-3, errs
    print(f"OpenCV {cv2.__version__} DNN on yolov3-tiny 416: max rel diff {max(errs):.2e}")


# --- the converter pitfalls -----------------------------------------------------------------------------

def test_upsample_is_resize_and_passes_the_checker(tiny):
    """The deprecated Upsample fails the checker at opset ≥ 10; the export's Resize (nearest, asymmetric, floor)
    passes it with full shape inference."""
    net = tiny[0]
    proto = to_onnx(net, None)
    onnx.checker.check_model(proto, full_check=True)
    resize = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert "Upsample" not in ops_of(proto) and len(resize) == 1
    attrs = {a.name: a.s.decode() for a in resize[0].attribute}
    assert attrs == {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    h = onnx.helper
    g = h.make_graph([h.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")], "u",
                     [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 2, 2])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
                     [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    with pytest.raises(Exception):
        onnx.checker.check_model(h.make_model(g, opset_imports=[h.make_opsetid("", 13)]), full_check=True)


def test_two_by_two_stride_one_maxpool_keeps_13x13(tiny):
    """yolov3-tiny's layer 11 (maxpool size 2 stride 1 on 13×13): pads (0, 0, 1, 1), so 13×13 as in Darknet (no
    pads: 12×12); the shape inference of the exported graph says so, and so does the output it feeds."""
    net, x, _, layer_outputs = tiny
    proto = to_onnx(net, None)
    pool = next(n for n in proto.graph.node if n.output[0] == "maxpool_11")
    attrs = {a.name: list(a.ints) for a in pool.attribute}
    assert attrs["pads"] == [0, 0, 1, 1] and attrs["strides"] == [1, 1] and attrs["kernel_shape"] == [2, 2]
    inferred = onnx.shape_inference.infer_shapes(proto)
    info = next(v for v in inferred.graph.value_info if v.name == "maxpool_11")
    assert [d.dim_value for d in info.type.tensor_type.shape.dim] == [1, 512, 13, 13]
    assert layer_outputs[11].shape[2:] == (13, 13)
    assert 13 == (13 + 1 - 2) // 1 + 1 and 12 == (13 - 2) // 1 + 1      # with Darknet's padding, and without


def test_yolo_logistic_on_x_y_obj_classes_not_on_w_h(tiny, tmp_path):
    """Per anchor, x, y, objectness and classes are σ of the conv output below the head; w, h are that output
    unchanged (far outside (0, 1))."""
    net, x, want, layer_outputs = tiny
    got = run_onnx(to_onnx(net, None, batch=len(x)), x)
    for head, out in ((16, got[0]), (23, got[1])):
        raw = layer_outputs[head - 1].reshape(len(x), 3, 85, *out.shape[2:]).astype(np.float64)
        planes = out.reshape(raw.shape).astype(np.float64)
        np.testing.assert_allclose(planes[:, :, 2:4], raw[:, :, 2:4], rtol=0, atol=RTOL * np.abs(raw).max())
        assert np.abs(raw[:, :, 2:4]).max() > 1.5                      # not squashed into (0, 1)
        sig = 1 / (1 + np.exp(-raw))
        np.testing.assert_allclose(planes[:, :, [0, 1, 4]], sig[:, :, [0, 1, 4]], atol=1e-5)
        np.testing.assert_allclose(planes[:, :, 5:], sig[:, :, 5:], atol=1e-5)


YOLO_CFG = """[net]
width=32
height=32
channels=3

[convolutional]
filters=14
size=3
stride=2
pad=1
activation=linear

""" + yolo_section([0, 1], "10,14, 23,27", classes=2)


def test_scale_x_y_is_kept_when_the_layer_has_it():
    """A [yolo] layer with ``scale_x_y`` s (yolov4): x, y = σ·s − (s − 1)/2 in the export; w, h raw, objectness and
    classes σ (the attribute is read where another part of deltaprop sets it on the layer)."""
    net = darknet.load_cfg_text(YOLO_CFG)
    seeded_weights(net, 1)
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    plain = run_onnx(to_onnx(net, None, batch=2), x)[0]
    np.testing.assert_allclose(plain, net.predict(x), atol=1e-6)
    object.__setattr__(net.layers[1], "scale_x_y", 1.05)
    scaled = run_onnx(to_onnx(net, None, batch=2), x)[0]
    p, s = plain.reshape(2, 2, 7, 16, 16), scaled.reshape(2, 2, 7, 16, 16)
    np.testing.assert_allclose(s[:, :, :2], p[:, :, :2] * 1.05 - 0.025, atol=1e-6)
    np.testing.assert_array_equal(s[:, :, 2:], p[:, :, 2:])
    assert np.abs(s[:, :, :2] - p[:, :, :2]).max() > 1e-3


# --- every layer kind, both numerics, old and new opsets --------------------------------------------------

EVERY_KIND_CFG = TINY_GRAPH_CFG + """
[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
groups=3
activation=relu

[avgpool]

[dropout]
probability=0.3

[connected]
output=8
batch_normalize=1
activation=selu

[connected]
output=6
activation=loggy

[logistic]

[softmax]
groups=2
temperature=2

[cost]
"""


@pytest.mark.parametrize("numerics", ["darknet", "standard"])
@pytest.mark.parametrize("opset", [9, 13, 17])
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "batchnorm-kept"])
def test_every_section_kind_matches(numerics, opset, fold):
    """conv (groups, batch norm, biases), shortcut, upsample, route, the 2×2/1 maxpool, avgpool, dropout,
    connected with and without batch norm, logistic, grouped softmax with a temperature, cost; at opset 9 (no
    Resize: the upsample is refused, naming it) and newer."""
    net = darknet.load_cfg_text(EVERY_KIND_CFG, numerics=numerics)
    seeded_weights(net, 4)
    x = np.random.default_rng(1).random((2, 3, 6, 6)).astype(np.float32)
    if opset < 11:
        with pytest.raises(ExportError, match=r"layer 4 \[upsample\].*opset ≥ 11, got opset 9"):
            to_onnx(net, None, opset=opset)
        return
    proto = to_onnx(net, None, batch=2, opset=opset, fold_bn=fold)
    assert [o.name for o in proto.graph.output] == ["softmax_15"]      # the [cost] after it is not an output
    (got,) = run_onnx(proto, x)
    assert rel_err(got, net.predict(x).reshape(got.shape)) <= RTOL


SPATIAL_CFG = """[net]
width=4
height=4
channels=3

[convolutional]
filters=5
size=1
stride=1
activation=hardtan

[maxpool]
size=3
stride=2
padding=2

[softmax]
spatial=1
"""


def test_spatial_softmax_needs_opset_13_and_matches():
    net = darknet.load_cfg_text(SPATIAL_CFG)
    seeded_weights(net, 2)
    with pytest.raises(ExportError, match=r"layer 2 \[softmax\].*opset ≥ 13, got opset 12"):
        to_onnx(net, None, opset=12)
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 4)).astype(np.float32)
    (got,) = run_onnx(to_onnx(net, None, opset=13), x)
    want = net.predict(x)
    assert got.shape == want.shape == (1, 5, 2, 2) and rel_err(got, want) <= RTOL


def test_route_groups_take_one_channel_slice_of_each_input():
    """AlexeyAB's ``[route] groups=2 group_id=1`` (yolov4-tiny) where a layer's plan carries them: the second half
    of each input's channels, joined (the network here ends at that route, whose plan says 2 + 2 channels)."""
    cfg = TINY_GRAPH_CFG[:TINY_GRAPH_CFG.index("layers=-1,0")] + "layers=-1,0\n"
    net = darknet.load_cfg_text(cfg)
    seeded_weights(net, 5)
    spec = net.plan.specs[5]                        # [route] layers=-1,0: 4 + 4 channels
    x = np.random.default_rng(3).random((1, 3, 6, 6)).astype(np.float32)
    net.predict(x)
    a, b = net.layer_outputs[4], net.layer_outputs[0]
    spec.attrs.update(groups=2, group_id=1)
    spec.out_shape = (4, 6, 6)
    (got,) = run_onnx(to_onnx(net, None), x)
    np.testing.assert_allclose(got, np.concatenate([a[:, 2:], b[:, 2:]], axis=1), atol=1e-6)


def test_same_bytes_twice(tiny, tmp_path):
    net = tiny[0]
    to_onnx(net, tmp_path / "a.onnx")
    to_onnx(net, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


# --- refusals ----------------------------------------------------------------------------------------

def test_refusals_name_the_layer_and_write_nothing(tmp_path):
    plse = SPATIAL_CFG.replace("activation=hardtan", "activation=plse")
    out = tmp_path / "o.onnx"
    with pytest.raises(ExportError, match=r"layer 0 \[convolutional\]: activation 'plse'"):
        to_onnx(darknet.load_cfg_text(plse), out)
    conn = darknet.load_cfg_text(EVERY_KIND_CFG.replace("[avgpool]", "[maxpool]\nsize=1\nstride=1"))
    with pytest.raises(ExportError, match=r"layer 12 \[connected\]: its weights take 216 inputs.*gives it 384"):
        to_onnx(conn, out, size=(8, 8))
    with pytest.raises(ExportError, match="size 100x100:.*route"):
        to_onnx(darknet.load("yolov3-tiny"), out, size=(100, 100))
    net = darknet.load_cfg_text(YOLO_CFG)
    for kw, msg in (({"opset": 8}, "opset 8: deltaprop writes opsets 9 to"), ({"opset": 99}, "opset 99"),
                    ({"batch": 0}, "batch 0"), ({"size": (0, 32)}, "size"), ({"size": (32,)}, "size")):
        with pytest.raises(ExportError, match=msg):
            to_onnx(net, out, **kw)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        to_onnx(net, tmp_path / "file" / "o.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        to_onnx(net, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]     # nothing written, no temporary left
