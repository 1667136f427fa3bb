"""The compiled inference plan (issue 27, docs/inference.md): each fusion against today's evaluation forward (the
reference program, which is that forward bit for bit), yolov3-tiny against the real Darknet's outputs, refolding
when the weights change, buffers reused from call to call, the hooks taken in evaluation inside ``no_grad`` and
only there.

Tolerances (float32): a convolution computed another way (Winograd's F(2×2, 3×3), the batch norm folded into the
weights, the products split over threads) differs from the reference by float rounding: measured at most 6e-6 of
the output's largest magnitude on these layers; checked at 2e-5 (one layer) and 2e-5 relative for yolov3-tiny.
Max pooling, the activation, concatenation and upsampling compute the very same values: checked bit for bit where
they are alone.
"""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np
import pytest

import deltaprop as dp
from conftest import ROOT, fixture_dir, rel_err, require_numba
from deltaprop import dispatch, models
from deltaprop import darknet as dn
from deltaprop.darknet import eval_program as dep
from deltaprop.fast import inference_plan as ip
from deltaprop.functional import inference as fi
from deltaprop.nn import eval_program as nep

TOL = 2e-5
VARIANT = "eval_program/compiled plan"


@pytest.fixture(autouse=True)
def _numba_on():
    require_numba()


def plan_and_reference(program: fi.EvalProgram, x: np.ndarray):
    """(the plan's outputs, the reference's outputs, the plan)."""
    assert ip.supported(program, x)
    got = ip.run_compiled(program, x)
    want = fi.run_program.reference(program, x)
    return got, want, ip.compiled(program)


def weights(rng, *shape, dtype=np.float32):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(dtype)


def batch_norm(rng, c, darknet=False, dtype=np.float32):
    return fi.BatchNormEval(rng.uniform(0.5, 1.5, c).astype(dtype), rng.normal(0, 0.1, c).astype(dtype),
                            rng.normal(0, 0.1, c).astype(dtype), rng.uniform(0.5, 1.5, c).astype(dtype),
                            1e-6 if darknet else 1e-5, darknet)


def one_conv(c, f, k, hw, n=1, pool=False, bias=False, bn=True, act="leaky", stride=1, pad=None, groups=1,
             dtype=np.float32, seed=0):
    """A program of one convolution step (and a 2×2/2 max pooling after it), with its input."""
    rng = np.random.default_rng(seed)
    p = k // 2 if pad is None else pad
    steps = [fi.ConvStep(fi.INPUT, weights(rng, f, c // groups, k, k, dtype=dtype),
                         rng.normal(0, 0.1, f).astype(dtype) if bias else None,
                         batch_norm(rng, f, dtype=dtype) if bn else None, act, 0.1 if act == "leaky" else 0.0,
                         (stride, stride), (p, p, p, p), groups)]
    if pool:
        steps.append(fi.MaxPoolStep(0, (2, 2), (2, 2), (0, 1, 0, 1) if hw % 2 else (0, 0, 0, 0)))
    x = rng.standard_normal((n, c, hw, hw)).astype(dtype)
    return fi.EvalProgram(steps, (len(steps) - 1,), (c, hw, hw)), x


def close(got, want, tol=TOL):
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert rel_err(a, b) <= tol, rel_err(a, b)


# --- one fusion at a time ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("c,f,hw,n,pool", [(16, 32, 20, 1, True), (32, 64, 13, 2, True), (16, 16, 9, 3, False)])
def test_winograd_by_blocks_with_fused_pooling(c, f, hw, n, pool):
    """Winograd F(2×2, 3×3) block by block (small filters, large maps), the batch norm folded, leaky and the
    2×2/2 max pooling in its output transform; odd maps pool the last row and column alone (Darknet's padding)."""
    program, x = one_conv(c, f, 3, hw, n, pool=pool)
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "winograd" and plan._blocked(plan.convs[0], n)
    assert (plan.convs[0].pool == 1) == pool
    close(got, want)


@pytest.mark.parametrize("n,dtype", [(1, np.float32), (2, np.float32), (1, np.float64)])
def test_winograd_whole_by_filter_blocks(n, dtype):
    """Winograd with filters too large to block (16·F·C > BLOCK_FILTERS): the input transform, then products
    and output transform by filter blocks; float64 to 1e-12."""
    program, x = one_conv(128, 96, 3, 13, n, bias=True, bn=False, act="relu", dtype=dtype)
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "winograd" and not plan._blocked(plan.convs[0], n)
    close(got, want, TOL if dtype == np.float32 else 1e-12)


def test_winograd_error_against_float64():
    """The F(2×2, 3×3) error in float32 is the direct product's: both within 1e-6 of a float64 product."""
    program, x = one_conv(64, 64, 3, 26, bn=False, bias=True, act="linear")
    program64 = fi.EvalProgram([fi.ConvStep(fi.INPUT, program.steps[0].weight.astype(np.float64),
                                            program.steps[0].bias.astype(np.float64), None, "linear", 1.0,
                                            (1, 1), (1, 1, 1, 1))], (0,), program.input_shape)
    exact = fi.run_program.reference(program64, x.astype(np.float64))[0]
    assert rel_err(ip.run_compiled(program, x)[0], exact) < 1e-6
    assert rel_err(fi.run_program.reference(program, x)[0], exact) < 1e-6


@pytest.mark.parametrize("pool,hw", [(True, 16), (True, 15), (False, 12)])
def test_direct_first_layer_with_epilogue_and_pooling(pool, hw):
    """A 3-channel 3×3 layer: the direct loops with bias, leaky and pooling in the same pass."""
    program, x = one_conv(3, 16, 3, hw, 2, pool=pool)
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "direct"
    close(got, want)


def test_1x1_product_with_its_epilogue():
    program, x = one_conv(64, 48, 1, 7, 2, bias=True, bn=False, act="linear")
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "gemm1x1"
    close(got, want)


def test_strided_grouped_convolution_by_im2col():
    program, x = one_conv(8, 12, 5, 11, 3, stride=2, pad=2, groups=2, bias=True, bn=True, act="relu")
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "im2col"
    close(got, want)


@pytest.mark.parametrize("c,f,k,hw,n,pool,stride,pad", [(1, 6, 5, 28, 4, True, 1, 2), (6, 16, 5, 13, 3, True, 1, 0),
                                                         (3, 8, 3, 9, 2, False, 2, 1), (4, 8, 5, 8, 5, False, 1, 1)])
def test_convolution_sample_by_sample(c, f, k, hw, n, pool, stride, pad):
    """LeNet's layers at a batch of several samples: each sample's columns, product and epilogue (the pooling
    fused, an odd map's last row and column included) on one thread; at batch 1 the whole-batch im2col."""
    program, x = one_conv(c, f, k, hw, n, pool=pool, stride=stride, pad=pad, bias=True, bn=pool, act="relu")
    got, want, plan = plan_and_reference(program, x)
    assert plan.convs[0].kind == "im2col" and plan._per_sample(plan.convs[0], n)
    assert not plan._per_sample(plan.convs[0], 1) or dp.runtime.threads.kernel_threads() <= 1
    close(got, want)
    close(ip.run_compiled(program, x[:1]), fi.run_program.reference(program, x[:1]))


def test_products_split_over_numbas_threads_whatever_the_librarys_setting(monkeypatch):
    """Inside ``cblas.one_thread()`` MKL's own thread setting is 1: a product of one sample must still be split
    over numba's threads (it ran on one thread with MKL: the 1×1 layers 1.6× slower than with OpenBLAS)."""
    from deltaprop.fast import cblas, split_products
    from deltaprop.runtime import threads
    if cblas.library() is None:
        pytest.skip("no callable cblas library: the products go to runtime.blas")
    monkeypatch.setitem(threads._record, "numba_threads", 2)
    monkeypatch.setattr(threads, "max_threads", lambda: 1)            # what MKL says inside one_thread()
    a, b = np.ones((64, 32), np.float32), np.ones((1, 32, 40), np.float32)
    out = np.empty((1, 64, 40), np.float32)
    plan = split_products._plan(a, b, out, 0)
    assert plan[-2] == 2                                              # blocks
    split_products.matmul(a, b, out)
    assert np.array_equal(out[0], a @ b[0])


def test_fold_equals_conv_then_batch_norm_in_float64():
    """W' = W·scale, b' = b·scale + shift computes conv → batch norm (BN forward in evaluation) to float64
    rounding."""
    rng = np.random.default_rng(3)
    step = fi.ConvStep(fi.INPUT, weights(rng, 6, 4, 3, 3, dtype=np.float64), rng.normal(size=6),
                       batch_norm(rng, 6, darknet=True, dtype=np.float64), "linear", 1.0, (1, 1), (1, 1, 1, 1))
    x = rng.standard_normal((2, 4, 7, 7))
    w, b = ip.fold(step, np.float64)
    folded = fi.conv_step(fi.ConvStep(fi.INPUT, w, b, None, "linear", 1.0, (1, 1), (1, 1, 1, 1)), x)
    assert rel_err(folded, fi.conv_step(step, x)) < 1e-13


@pytest.mark.parametrize("hw,size,stride,pads", [(13, 2, 1, (0, 1, 0, 1)), (12, 2, 2, (0, 0, 0, 0)),
                                                 (9, 3, 2, (1, 1, 1, 1)), (7, 2, 2, (0, 1, 0, 1))])
def test_max_pooling_without_a_padded_copy_is_exact(hw, size, stride, pads):
    """Darknet's 2×2/1 pooling (right and bottom hanging over) and others: bit for bit the reference's."""
    x = np.random.default_rng(4).standard_normal((2, 5, hw, hw)).astype(np.float32)
    steps = [fi.MaxPoolStep(fi.INPUT, (size, size), (stride, stride), pads)]
    program = fi.EvalProgram(steps, (0,), (5, hw, hw))
    got, want, _ = plan_and_reference(program, x)
    assert np.array_equal(got[0], want[0])


def test_concatenation_written_in_place_upsampling_logistic_dense():
    """The producers of a concatenation write their slice of it (no copy), the upsampling too; the logistic on
    some channels and the dense layer equal the reference's."""
    rng = np.random.default_rng(5)
    steps = [fi.ConvStep(fi.INPUT, weights(rng, 8, 16, 1, 1), None, batch_norm(rng, 8), "leaky", 0.1),
             fi.UpsampleStep(0, 2, 0.5),
             fi.ConvStep(fi.INPUT, weights(rng, 4, 16, 3, 3), None, batch_norm(rng, 4), "leaky", 0.1, (2, 2),
                         (1, 1, 1, 1)),
             fi.UpsampleStep(2, 4),
             fi.ConcatStep((1, 3)),
             fi.LogisticStep(4, tuple(c % 3 != 2 for c in range(12))),
             fi.DenseStep(5, weights(rng, 5, 12 * 16 * 16), rng.normal(size=5).astype(np.float32), "leaky", 0.1)]
    program = fi.EvalProgram(steps, (5, 6), (16, 8, 8))
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    got, want, plan = plan_and_reference(program, x)
    assert set(plan.slices) == {1, 3}
    close(got, want)


def test_outputs_are_fresh_arrays():
    """A caller may keep an output: the next call does not write into it."""
    program, x = one_conv(16, 16, 3, 8, 1)
    first = ip.run_compiled(program, x)[0]
    kept = first.copy()
    ip.run_compiled(program, x * 2)
    assert np.array_equal(first, kept)


def test_buffers_are_reused_between_calls():
    """After the first call for a batch size, the plan allocates no buffer: the same arrays, and memory that
    does not grow over calls; another batch size gets its own."""
    program = ip.example_program()
    x = np.random.default_rng(6).standard_normal((2, 3, 12, 12)).astype(np.float32)
    plan = ip.compiled(program)
    plan.run(x)
    bufs = [id(b) for b in plan._bufs]
    tracemalloc.start()
    plan.run(x)
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(5):
        plan.run(x)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert [id(b) for b in plan._bufs] == bufs
    assert grown < 64 * 1024, grown           # the fresh outputs of the last call, nothing per layer
    plan.run(x[:1])
    assert plan._batch == 1


# --- networks ----------------------------------------------------------------------------------------------------

def yolov3_tiny_with_darknets_statistics():
    """yolov3-tiny with the real Darknet harness's start (hash_init) whose rolling statistics are the batch
    statistics Darknet computed in its training forward on the two fixture photos: in evaluation the network then
    computes what that forward computed (Darknet's normalisation divides by √σ² + 1e-6 in both)."""
    sys.path.insert(0, str(ROOT / "tools" / "darknet_harness"))
    import hash_init
    from make_inputs import inputs_and_truths
    d = fixture_dir("darknet", "reference", "yolov3_tiny_416")
    ref = np.load(d / "step.npz")
    net = dn.load(d / "net.cfg")
    hash_init.fill(net)
    for i, layer in enumerate(net.layers):
        if getattr(layer, "bn", None) is not None:
            layer.bn.running_mean = ref[f"forward/L{i:02d}_bn_mean"].copy()
            layer.bn.running_var = ref[f"forward/L{i:02d}_bn_variance"].copy()
    photos = [fixture_dir("coco128", "images", f) for f in ("000000002592.jpg", "000000008762.jpg")]
    x, _ = inputs_and_truths(photos, 416, 416, 90, 5)
    return net, x, ref


def test_yolov3_tiny_planned_equals_the_real_darknet():
    """yolov3-tiny at 416 end to end through the plan: both [yolo] outputs equal the real pjreddie Darknet's
    (its forward with these statistics, tests/fixtures/darknet/reference/yolov3_tiny_416) to 2e-5 relative
    (measured 5e-6, as today's evaluation forward), and today's forward to the same."""
    net, x, ref = yolov3_tiny_with_darknets_statistics()
    net.eval()
    today = net(x)                                  # evaluation without no_grad: the layers one by one
    with dp.no_grad():
        planned = net(x)
    assert isinstance(nep.kept(net), fi.EvalProgram)
    for i, a, b in zip((16, 23), today, planned):
        k = f"forward/L{i:02d}_output"
        s = int(ref[f"{k}:stride"])
        assert rel_err(b.ravel()[::s], ref[k]) < TOL
        assert rel_err(a.ravel()[::s], ref[k]) < TOL
        assert rel_err(b, a) < TOL


@pytest.mark.parametrize("numerics,size", [("standard", 320), ("darknet", 288)])
def test_yolov3_tiny_reference_program_is_todays_forward(numerics, size):
    """The program's reference is the evaluation forward bit for bit (so the plan is held to today's numbers);
    the plan equals it to float32 rounding."""
    dp.manual_seed(1)
    net = dn.load("yolov3-tiny", numerics=numerics, width=size, height=size)
    rng = np.random.default_rng(11)
    for layer in net.layers:             # rolling statistics of a trained net (Darknet's start at variance 0)
        if getattr(layer, "bn", None) is not None:
            layer.bn.running_mean = rng.normal(0, 0.1, layer.filters).astype(np.float32)
            layer.bn.running_var = rng.uniform(0.5, 1.5, layer.filters).astype(np.float32)
    net.eval()
    x = np.random.default_rng(7).random((2, 3, size, size), dtype=np.float32)
    today = net(x)
    program = dep.program(net)
    for a, b in zip(today, fi.run_program.reference(program, x)):
        assert np.array_equal(a, b)
    with dp.no_grad():
        planned = net(x)
    close(planned, today)


def test_lenet_and_convbn_planned():
    """The Sequential models: LeNet (im2col, fused pooling, dense layers) and the conv-BN net (Winograd, the
    batch norm + activation + pooling modules folded) equal their layer-by-layer evaluation."""
    for name, shape in (("lenet", (5, 1, 28, 28)), ("convbn", (3, 3, 64, 64))):
        dp.manual_seed(2)
        model = models.build(name)
        model.eval()
        x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
        today = model(x)
        with dp.no_grad():
            planned = model(x)
        kinds = [type(s).__name__ for s in nep.kept(model).steps]
        assert "CallStep" not in kinds, kinds
        assert rel_err(planned, today) < TOL


# --- refolding, hooks ----------------------------------------------------------------------------------------------

def tiny_net():
    dp.manual_seed(3)
    net = dn.load(fixture_dir("darknet", "reference", "tiny_yolo", "tiny_yolo.cfg"), numerics="standard")
    x = np.random.default_rng(9).random((2,) + tuple(net.input_shape), dtype=np.float32)
    return net, x


def planned(net, x):
    net.eval()
    with dp.no_grad():
        return net(x)


def unplanned(net, x):
    net.eval()
    with dispatch.reference_only():
        return net(x)


def test_refolds_after_loading_weights(tmp_path):
    """Loading weights replaces the layers' arrays: the next planned forward folds the new ones."""
    net, x = tiny_net()
    first = planned(net, x)
    other, _ = tiny_net()
    for layer in other.layers:
        for p in layer.parameters():
            p.data *= 1.5
    path = tmp_path / "w.weights"
    dn.save_weights(other, path)
    dn.load_weights(net, path)
    again = planned(net, x)
    close(again, unplanned(net, x))
    assert max(rel_err(a, b) for a, b in zip(again, first)) > 1e-2


def test_refolds_after_training_and_by_hand():
    """A training step (a forward that keeps caches, then the optimizer in place) drops the kept program; an edit
    in place outside training is taken after ``refold``."""
    net, x = tiny_net()
    before = planned(net, x)
    kept = nep.kept(net)
    net.train()
    opt = dp.optim.SGD(net.parameters(), lr=0.5)
    out = net(x)
    net.backward([np.ones_like(o) for o in out] if isinstance(out, list) else np.ones_like(out))
    opt.step()
    assert nep.kept(net) is None
    after = planned(net, x)
    assert nep.kept(net) is not kept
    close(after, unplanned(net, x))
    assert max(rel_err(a, b) for a, b in zip(after, before)) > 1e-3
    net.layers[0].weight.data *= 2.0                 # in place, outside training
    dep.refold(net)
    close(planned(net, x), unplanned(net, x))


def test_hook_taken_only_in_evaluation_inside_no_grad(monkeypatch):
    """The planned forward runs in eval mode inside ``no_grad`` (net.predict, detect, map/valid), and never in
    training mode, with gradients enabled, or for a layer's forward wrapped by a hook."""
    net, x = tiny_net()
    calls = []
    real = fi.run_program
    monkeypatch.setattr(dep.fi, "run_program", lambda *a, **k: calls.append(1) or real(*a, **k))
    net.train()
    with dp.no_grad():
        net(x)
    net.eval()
    net(x)
    with dp.enable_grad():
        net(x)
    assert calls == []
    net.predict(x)
    assert calls == [1]
    layer = net.layers[0]
    seen = []
    inner = layer.forward
    object.__setattr__(layer, "forward", lambda z: seen.append(z.shape) or inner(z))
    net.predict(x)
    assert seen and isinstance(dep.program(net).steps[0], fi.CallStep)


def test_training_numbers_unchanged_by_a_planned_forward():
    """A planned evaluation between two training steps changes nothing of the training: the same parameters as
    without it."""
    results = []
    for with_eval in (False, True):
        net, x = tiny_net()
        opt = dp.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for step in range(2):
            net.train()
            out = net(x)
            net.backward([np.ones_like(o) for o in out] if isinstance(out, list) else np.ones_like(out))
            opt.step()
            opt.zero_grad()
            if with_eval:
                planned(net, x)
        results.append(np.concatenate([p.data.ravel() for p in net.parameters()]))
    assert np.array_equal(results[0], results[1])


def test_sequential_hook_and_summary_see_every_layer():
    """``Module.summary`` wraps each layer's forward and runs under no_grad: a wrapped layer runs as itself."""
    dp.manual_seed(4)
    model = models.build("lenet")
    model.eval()
    rows = model.summary((2, 1, 28, 28), print_fn=lambda *_: None)
    assert len(rows) >= len(list(model))
    x = np.random.default_rng(10).standard_normal((2, 1, 28, 28)).astype(np.float32)
    with dp.no_grad():
        planned_out = model(x)
    assert [type(s).__name__ for s in nep.program(model, (1, 28, 28)).steps].count("CallStep") == 0
    assert rel_err(planned_out, model.eval()(x)) < TOL


def test_without_numba_the_reference_runs():
    from deltaprop.runtime import jit as _numba
    program, x = one_conv(16, 16, 3, 8)
    before = _numba.enabled()
    _numba.set_enabled(False)
    try:
        assert not ip.supported(program, x)
        out = fi.run_program(program, x)
    finally:
        _numba.set_enabled(before)
    assert np.array_equal(out[0], fi.run_program.reference(program, x)[0])
