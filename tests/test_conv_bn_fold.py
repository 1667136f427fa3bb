"""The inference path of [convolutional] (functional/conv_bn.py: batch norm folded into a scale and shift per
channel, applied with the activation in one in-place pass, no cache) against an independent float64
re-derivation (docs/equations.md §8 / §10 in evaluation) and against the layer's unfused path (conv, then
DarknetBatchNorm, then the activation, taken when a cache is kept), for both batch-norm numerics, with the
numba kernels on and off."""
import numpy as np
import pytest

from conftest import rel_err
from deltaprop import backend, darknet
from deltaprop.functional import conv_bn

CFG = """[net]
width=7
height=6
channels=3

[convolutional]
batch_normalize={bn}
filters=5
size=3
stride={stride}
pad=1
activation={act}
"""


def reference(x, w, bias, bn, act, numerics, stride):
    """conv (padding 1) → [eval batch norm] → activation, written out with loops over the kernel (float64)."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h + 2 - k) // stride + 1, (wd + 2 - k) // stride + 1
    z = np.zeros((n, f, oh, ow))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]   # (n, c, oh, ow)
            z += np.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
    if bn is None:
        z += bias[None, :, None, None]
    else:
        gamma, beta, rm, rv = (a[None, :, None, None] for a in bn)
        d = np.sqrt(rv) + 1e-6 if numerics == "darknet" else np.sqrt(rv + 1e-5)   # §10 vs §8 (ε under the root)
        z = gamma * (z - rm) / d + beta
    if act == "relu":
        return np.maximum(z, 0)
    if act == "leaky":
        return np.where(z > 0, z, 0.1 * z)
    return z


@pytest.mark.parametrize("numerics", ["darknet", "standard"])
@pytest.mark.parametrize("act", ["linear", "leaky", "relu"])
@pytest.mark.parametrize("bn,stride", [(1, 1), (1, 2), (0, 1)])
def test_folded_inference_equals_unfused_and_derivation(rng, numba_mode, numerics, act, bn, stride):
    net = darknet.load_cfg_text(CFG.format(bn=bn, stride=stride, act=act), numerics=numerics, dtype=np.float64)
    layer = net.layers[0]
    if bn:
        for a in (layer.bn.weight.data, layer.bn.bias.data):
            a[...] = rng.normal(size=a.shape)
        layer.bn.running_mean[...] = rng.normal(size=5)
        layer.bn.running_var[...] = rng.uniform(0.05, 3.0, 5)
        params = (layer.bn.weight.data, layer.bn.bias.data, layer.bn.running_mean, layer.bn.running_var)
    else:
        layer.bias.data[...] = rng.normal(size=5)
        params = None
    x = rng.normal(size=(3, 3, 6, 7))
    net.eval()
    with backend.no_grad():
        folded = layer.forward(x.copy())
    assert layer._cache is None                          # the folded path keeps nothing
    with backend.enable_grad():                          # a cache is kept: conv, then BN module, then activation
        unfused = layer.forward(x.copy())
    expect = reference(x, layer.weight.data, None if bn else layer.bias.data, params, act, numerics, stride)
    assert folded.dtype == np.float64 and folded.shape == expect.shape
    assert rel_err(folded, expect) < 1e-12
    assert rel_err(unfused, expect) < 1e-12
    assert np.abs(folded - unfused).max() <= 1e-12 * np.abs(expect).max()
    pre = reference(x, layer.weight.data, None if bn else layer.bias.data, params, "linear", numerics, stride)
    assert (pre < 0).any() and (pre > 0).any()           # both sides of the activation's kink are tested


def test_folded_inference_float32_close_to_float64(rng, numba_mode):
    net32 = darknet.load_cfg_text(CFG.format(bn=1, stride=1, act="leaky"), numerics="darknet", dtype=np.float32)
    layer = net32.layers[0]
    layer.bn.running_mean[...] = rng.normal(size=5).astype(np.float32)
    layer.bn.running_var[...] = rng.uniform(0.05, 3.0, 5).astype(np.float32)
    x = rng.normal(size=(2, 3, 6, 7)).astype(np.float32)
    net32.eval()
    with backend.no_grad():
        y = layer.forward(x)
    params = tuple(np.asarray(a, np.float64) for a in (layer.bn.weight.data, layer.bn.bias.data,
                                                        layer.bn.running_mean, layer.bn.running_var))
    expect = reference(x.astype(np.float64), layer.weight.data.astype(np.float64), None, params, "leaky", "darknet", 1)
    assert y.dtype == np.float32
    assert rel_err(y, expect) < 1e-5


def test_affine_act_checks_its_arguments():
    z = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="activation"):
        conv_bn.affine_act_(z, np.ones(3), np.zeros(3), "tanh")
    with pytest.raises(ValueError, match="C-contiguous"):
        conv_bn.affine_act_(z.transpose(0, 2, 1), np.ones(4), np.zeros(4), "relu")


@pytest.mark.parametrize("act,slope", [("linear", 0.1), ("relu", 0.1), ("leaky", 0.1), ("leaky", 1.3), ("leaky", -0.2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_act_is_the_engine_activation_on_both_paths(act, slope, dtype, rng):
    """σ of the folded tail is activation.py's (one home): the NumPy path calls ``leaky_relu_into`` (ReLU its
    slope 0), the numba kernel ``_norm_numba._affine_sigma`` (held equal to it by tests/test_single_home.py);
    both give the affine map then ``leaky_relu_into``'s numbers exactly."""
    from deltaprop.runtime import jit as _numba
    from deltaprop.functional.activation import leaky_relu_into
    t = np.dtype(dtype).type
    z = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    z[0, 0, 0] = 0.0
    scale, shift = rng.uniform(0.5, 2, 4).astype(dtype), rng.normal(0, 0.3, 4).astype(dtype)
    y = z * scale[:, None, None]
    y += shift[:, None, None]
    want = y if act == "linear" else leaky_relu_into(y, slope if act == "leaky" else 0.0, np.empty_like(y))
    assert (y < 0).any() and (y > 0).any()
    before = _numba.enabled()
    try:
        for on in ([False, True] if before or _numba.numba_module() is not None else [False]):
            _numba.set_enabled(on)
            got = conv_bn.affine_act_(z.copy(), scale, shift, act, t(slope))
            np.testing.assert_array_equal(got, want, err_msg=f"numba={on}")
    finally:
        _numba.set_enabled(before)


@pytest.mark.parametrize("numerics", ["darknet", "standard"])
@pytest.mark.parametrize("act", ["leaky", "logistic"])
@pytest.mark.parametrize("bn", [1, 0])
def test_the_layer_calls_its_tail_module(rng, numerics, act, bn):
    """[convolutional] is its convolution, then its tail (``bn``: batch norm + activation; else ``act``), called
    through the tail's attributes: a wrapper of the tail (hooks, the synchronised batch norm) sees every call,
    the folded evaluation included (``infer``)."""
    net = darknet.load_cfg_text(CFG.format(bn=bn, stride=1, act=act), numerics=numerics, dtype=np.float64)
    layer = net.layers[0]
    tail = layer.bn if bn else layer.act
    assert (layer.act is None) == bool(bn) and (layer.bn is None) == (not bn)
    seen = []
    for name in ("forward", "backward", "infer"):
        inner = getattr(tail, name, None)
        if inner is not None:
            object.__setattr__(tail, name, lambda a, _f=inner, _n=name: seen.append(_n) or _f(a))
    x = rng.normal(size=(2, 3, 6, 7))
    layer.train()
    y = layer.forward(x)
    layer.backward(np.ones_like(y))
    layer.eval()
    with backend.no_grad():
        layer.forward(x)
    # evaluation without a cache: the one-pass fold for a linear, ReLU or leaky σ (``bn.infer``; without batch norm
    # σ alone, in place, as before), else the tail's forward
    in_eval = ["forward"] if act != "leaky" else (["infer"] if bn else [])
    assert seen == ["forward", "backward"] + in_eval
