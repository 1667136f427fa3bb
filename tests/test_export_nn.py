"""``deltaprop.export.to_onnx`` on ``nn`` models as ``deltaprop.io`` saves them (LeNet, the MLP, conv-BN nets): ONNX
Runtime gives the eval forward within 1e-4 relative on MNIST test digits and on random inputs, at the built size
and (for a fully convolutional net) another; every module kind the engine runs in inference converts (groups,
dilation, asymmetric and "same" padding, true convolution, untied bias, ceil-mode pooling...); what ONNX cannot
express is refused naming the layer."""
from __future__ import annotations

import numpy as np
import pytest

import deltaprop as dp
from conftest import SHARED, need_data_set, rel_err
from deltaprop import io, models, nn
from deltaprop.export import ExportError, to_onnx
from export_testutil import RTOL, onnx, ops_of, randomize_batchnorm, run_onnx


def _forward(model, x):
    model.eval()
    with dp.no_grad():
        return model(x)


def _saved(tmp_path, model, name):
    """The model as ``deltaprop train``/``deltaprop.io`` writes it, read back (architecture rebuilt from the file)."""
    randomize_batchnorm(model)
    io.save_model(tmp_path / f"{name}.npz", model)
    return io.load_model(tmp_path / f"{name}.npz")


SAVED = {"lenet": lambda: models.build("lenet"), "mlp": lambda: models.build("mlp"),
         "convnet": lambda: models.build_for_input("convnet", (1, 28, 28)),        # conv + BatchNormAct2d
         "convbn": lambda: models.build_for_input("convbn", (1, 28, 28))}          # conv + BatchNormActPool2d


@pytest.fixture(scope="module")
def mnist_digits():
    from deltaprop.data import default_preprocess, load_mnist, preprocess
    images, labels = load_mnist(need_data_set(SHARED / "data" / "mnist"), "test", download=False)
    return preprocess(images[:64], default_preprocess()).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SAVED))
def test_saved_models_match_onnxruntime_on_mnist_digits(tmp_path, mnist_digits, name):
    dp.manual_seed(0)
    model = _saved(tmp_path, SAVED[name](), name)
    proto = to_onnx(model, tmp_path / f"{name}.onnx", dynamic_batch=True)
    (got,) = run_onnx(tmp_path / f"{name}.onnx", mnist_digits)
    want = _forward(model, mnist_digits)
    err = rel_err(got, want)
    assert got.shape == want.shape == (64, 10) and err <= RTOL, err
    assert np.array_equal(got.argmax(1), want.argmax(1))
    print(f"{name} on 64 MNIST test digits: max rel diff {err:.2e} ({len(proto.graph.node)} nodes)")


@pytest.mark.parametrize("name", sorted(SAVED))
@pytest.mark.parametrize("fold,opset", [(True, 9), (False, 13)], ids=["folded-opset9", "kept-opset13"])
def test_saved_models_match_onnxruntime_on_random_inputs(tmp_path, name, fold, opset):
    dp.manual_seed(1)
    model = _saved(tmp_path, SAVED[name](), name)
    proto = to_onnx(model, None, batch=3, fold_bn=fold, opset=opset)
    assert ("BatchNormalization" in ops_of(proto)) is (not fold and name.startswith("conv"))
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    (got,) = run_onnx(proto, x)
    assert rel_err(got, _forward(model, x)) <= RTOL


def test_fixed_size_models_refuse_another_size(tmp_path):
    model = _saved(tmp_path, models.build("lenet"), "lenet")
    with pytest.raises(ExportError, match=r"input 32x32: layer '7' \(Linear\) cannot take it.*another input size"):
        to_onnx(model, tmp_path / "x.onnx", size=(32, 32))
    with pytest.raises(ExportError, match=r"size 30x30: layer '1' \(Linear\) takes 784 inputs"):
        to_onnx(_saved(tmp_path, models.build("mlp"), "mlp"), None, size=(30, 30))
    assert not (tmp_path / "x.onnx").exists()


def test_fully_convolutional_conv_bn_at_two_sizes(tmp_path, mnist_digits):
    """conv-BN-leaky with a global average pooling: the built 28×28 and, with size=(36, 36), the digits padded."""
    dp.manual_seed(3)
    model = _saved(tmp_path, nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNormAct2d(16, "leaky", 0.1), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 10)), "fcn")
    for size, x in ((None, mnist_digits), ((36, 36), np.pad(mnist_digits, ((0, 0), (0, 0), (4, 4), (4, 4))))):
        (got,) = run_onnx(to_onnx(model, None, size=size, batch=len(x)), x)
        err = rel_err(got, _forward(model, x))
        assert err <= RTOL, (size, err)
        print(f"conv-BN, global pooling, {x.shape[3]}x{x.shape[2]}: max rel diff {err:.2e}")


def every_kind():
    """One Sequential with each module kind and option the converters handle."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same", dilation=2), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, (3, 2), padding=(0, 1, 2, 1), groups=4, mode="convolution"), nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),                  # 19×22 -> 10×12 (ceil adds a column)
        nn.Sequential(nn.Conv2d(8, 6, 3, untied_bias=(8, 10)), nn.Sigmoid(2.0)),
        nn.AvgPool2d(2, 1, padding=1, count_include_pad=False), nn.Upsample(2), nn.Tanh(),
        nn.LPPool2d(2, 2), nn.Dropout(0.3), nn.Identity(), nn.Flatten(), nn.Linear(594, 10),
        nn.BatchNorm1d(10), nn.Softmax(1))


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "batchnorm-kept"])
@pytest.mark.parametrize("opset", [11, 17])
def test_every_module_kind(fold, opset):
    dp.manual_seed(4)
    model = every_kind()
    randomize_batchnorm(model, 5)
    proto = to_onnx(model, None, size=(20, 20), dynamic_batch=True, fold_bn=fold, opset=opset)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(6).standard_normal((4, 3, 20, 20)).astype(np.float32)
    (got,) = run_onnx(proto, x)
    assert rel_err(got, _forward(model, x)) <= RTOL


def test_conv1d_lp_inf_and_partial_flatten():
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding="same", dilation=2), nn.ReLU(),
                          nn.Conv1d(4, 3, 3, padding=(2, 0), untied_bias=(12,)), nn.Flatten(1, 1), nn.LogSoftmax(1))
    x = np.random.default_rng(7).standard_normal((2, 2, 12)).astype(np.float32)
    (got,) = run_onnx(to_onnx(model, None, size=(12, 1), batch=2), x)
    assert rel_err(got, _forward(model, x)) <= RTOL
    pool = nn.Sequential(nn.Conv2d(1, 2, 1), nn.LPPool2d(float("inf"), 2), nn.Flatten(2, 3))
    x = np.random.default_rng(8).standard_normal((1, 1, 6, 6)).astype(np.float32)
    (got,) = run_onnx(to_onnx(pool, None, size=(6, 6)), x)
    assert got.shape == (1, 2, 9) and rel_err(got, _forward(pool, x)) <= RTOL


def test_true_convolution_flips_the_kernel():
    """mode="convolution" exports the flipped kernel: the same as a cross-correlation layer holding it."""
    conv = nn.Sequential(nn.Conv2d(1, 1, 3, mode="convolution"))
    proto = to_onnx(conv, None, size=(5, 5))
    w = onnx.numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name.endswith("/weight")))
    np.testing.assert_array_equal(w, conv[0].weight.data[:, :, ::-1, ::-1])


class Doubling(nn.Module):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize("model,size,opset,msg", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), Doubling()), None, 13, r"layer '1' \(Doubling\): no ONNX converter"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)), None, 13,
     r"layer '1' \(BatchNorm2d\): without running statistics"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4)), None, 13, r"layer '1'.*26x26 -> 4x4.*unequal"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.LPPool2d(1.5, 2)), None, 13, r"norm_type=1.5"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, 2, ceil_mode=True)), (10, 10), 13,
     r"layer '1' \(AvgPool2d\): ceil_mode adds a partial window"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(0)), None, 13, r"start_dim=0 merges the batch"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(1)), None, 11, r"layer '1' \(Softmax\).*opset ≥ 13, got opset 11"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(2)), None, 10, r"layer '1' \(Upsample\).*opset ≥ 11"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Linear(4, 2)), None, 13, r"layer '2' \(Linear\) cannot take"),
    (nn.Linear(4, 2), None, 13, r"Linear: deltaprop exports nn.Sequential models and Darknet cfg networks"),
    (nn.Sequential(), None, 13, r"empty Sequential"),
], ids=["unknown-module", "bn-no-stats", "adaptive-unequal", "lp-fractional", "avg-ceil", "flatten-batch",
        "softmax-opset", "upsample-opset", "linear-4d", "not-sequential", "empty"])
def test_refusals_name_the_layer(tmp_path, model, size, opset, msg):
    with pytest.raises(ExportError, match=msg):
        to_onnx(model, tmp_path / "m.onnx", size=size, opset=opset)
    assert not list(tmp_path.iterdir())
