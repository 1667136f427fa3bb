"""Caches: every functional kernel leaves a typed record (a NamedTuple, or a dataclass), and a backward follows
the path its forward chose: a cache the numba kernels made is differentiated by them, even when numba is
switched off between the forward and the backward (issue 18)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import require_numba
from deltaprop.functional import activation as A, conv as C, dense as D, loss as L, loss_binary as LB
from deltaprop.runtime import jit as _numba
from deltaprop.functional import loss_margin as LM, norm as N, norm_darknet as ND, norm_fused as NF, pool as P
from deltaprop.functional import pool_naive as PN, shape as S


def _typed(cache) -> bool:
    return (isinstance(cache, tuple) and type(cache) is not tuple and hasattr(cache, "_fields")) \
        or dataclasses.is_dataclass(cache)


def _forwards(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    m = rng.standard_normal((4, 5))
    lab = np.array([0, 2, 1, 4])
    return {
        "linear": lambda: D.linear_forward(m, rng.standard_normal((3, 5)), np.zeros(3)),
        "linear_naive": lambda: D.linear_forward_naive(m, rng.standard_normal((3, 5)), None),
        "sigmoid": lambda: A.sigmoid_forward(m),
        "relu": lambda: A.relu_forward(m),
        "leaky": lambda: A.leaky_relu_forward(m, 0.1),
        "tanh": lambda: A.tanh_forward(m),
        "softmax": lambda: A.softmax_forward(m),
        "log_softmax": lambda: A.log_softmax_forward(m),
        "flatten": lambda: S.flatten_forward(x),
        "dropout": lambda: S.dropout_forward(x, 0.5, rng),
        "upsample": lambda: S.upsample_nearest_forward(x, 2),
        "upsample_naive": lambda: S.upsample_nearest_forward_naive(x[:1, :1], 2),
        "conv2d": lambda: C.conv2d_forward(x, w, np.zeros(4), padding=1),
        "conv2d_naive": lambda: C.conv2d_forward_naive(x[:1, :, :4, :4], w, np.zeros(4), padding=1),
        "max_pool": lambda: P.max_pool2d_forward(x, 2),
        "avg_pool": lambda: P.avg_pool2d_forward(x, 2),
        "lp_pool": lambda: P.lp_pool2d_forward(x, 2.0, 2),
        "lp_pool_inf": lambda: P.lp_pool2d_forward(x, float("inf"), 2),
        "adaptive_pool": lambda: P.adaptive_avg_pool2d_forward(x, 3),
        "global_pool": lambda: P.adaptive_avg_pool2d_forward(x, 1),
        "max_pool_naive": lambda: PN.max_pool2d_forward_naive(x[:1], 2),
        "avg_pool_naive": lambda: PN.avg_pool2d_forward_naive(x[:1], 2),
        "lp_pool_naive": lambda: PN.lp_pool2d_forward_naive(x[:1], 2.0, 2),
        "lp_pool_inf_naive": lambda: PN.lp_pool2d_forward_naive(x[:1], float("inf"), 2),
        "adaptive_pool_naive": lambda: PN.adaptive_avg_pool2d_forward_naive(x[:1], 3),
        "conv1d": lambda: C.conv1d_forward(x[:, :, 0], w[:, :, 0], np.zeros(4), padding=1),
        "batch_norm": lambda: N.batch_norm_forward(x, np.ones(3), np.zeros(3))[:2],
        "batch_norm_naive": lambda: N.batch_norm_forward_naive(x[:1, :, :2], np.ones(3), np.zeros(3))[:2],
        "darknet_bn": lambda: ND.batchnorm_darknet_forward(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))[:2],
        "darknet_bn_naive": lambda: ND.batchnorm_darknet_forward_naive(x[:1, :, :2], np.ones(3), np.zeros(3),
                                                                       np.zeros(3), np.ones(3))[:2],
        "bn_act": lambda: NF.batchnorm_act_forward(x, np.ones(3), np.zeros(3), activation="relu"),
        "bn_act_pool": lambda: NF.batchnorm_act_maxpool2_forward(x, np.ones(3), np.zeros(3)),
        "mse": lambda: L.mse_forward(m, m * 0.5),
        "cross_entropy": lambda: L.cross_entropy_forward(m, lab),
        "cross_entropy_prob": lambda: L.cross_entropy_forward(m, A.softmax_forward(m)[0]),
        "half_squared_error": lambda: L.half_squared_error_forward(m, m * 0.5),
        "prob_cross_entropy": lambda: L.prob_cross_entropy_forward(A.softmax_forward(m)[0], lab),
        "bce": lambda: LB.bce_forward(A.sigmoid_forward(m)[0], (m > 0).astype(m.dtype)),
        "multiclass_hinge": lambda: LM.multiclass_hinge_forward(m, lab),
        "nll": lambda: L.nll_forward(A.log_softmax_forward(m)[0], lab),
        "bce_with_logits": lambda: LB.bce_with_logits_forward(m, (m > 0).astype(m.dtype)),
        "multi_margin": lambda: LM.multi_margin_forward(m, lab),
    }


@pytest.mark.parametrize("name", sorted(_forwards(np.random.default_rng(0))))
def test_every_kernel_leaves_a_typed_cache(name, rng, numba_mode):
    out, cache = _forwards(rng)[name]()
    assert _typed(cache), f"{name}: cache is a plain {type(cache).__name__}"
    if hasattr(cache, "act") and cache.act is not None:           # a fused kernel's activation cache too
        assert _typed(cache.act)


def _bn_act_run(x, gamma, beta, pool: bool, switch_off: bool):
    fwd = NF.batchnorm_act_maxpool2_forward if pool else NF.batchnorm_act_forward
    bwd = NF.batchnorm_act_maxpool2_backward if pool else NF.batchnorm_act_backward
    rm, rv = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
    _numba.set_enabled(True)
    y, cache = fwd(x, gamma, beta, rm, rv, True, 0.1, 1e-5, "leaky", 0.1)
    if switch_off:
        _numba.set_enabled(False)
    d = np.linspace(-1, 1, y.size).reshape(y.shape).astype(x.dtype)
    return cache, bwd(d, cache)


@pytest.mark.parametrize("pool", [False, True])
def test_a_numba_cache_is_differentiated_by_numba_when_switched_off_in_between(pool, monkeypatch, rng):
    require_numba()
    from deltaprop.fast import norm_fused as FNF, norm_numba as NB
    x = rng.standard_normal((2, 3, 6, 40)).astype(np.float32)       # pooled width 20: the fused pooled kernel
    gamma, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    before = _numba.enabled()
    try:
        cache, want = _bn_act_run(x, gamma, beta, pool, switch_off=False)
        assert type(cache) is (NB.FusedPoolCache if pool else NB.NumbaCache)

        def numpy_path(*args, **kwargs):
            raise AssertionError("the NumPy backward ran on a numba cache")
        monkeypatch.setattr(FNF, "_bn_backward", numpy_path)
        monkeypatch.setattr(N.bn_input_grad, "reference", numpy_path)
        monkeypatch.setattr(P, "max_pool2d_backward", numpy_path)
        monkeypatch.setattr(NF, "max_pool2d_backward", numpy_path)
        monkeypatch.setattr(NB, "max_pool2d_backward", numpy_path)
        _, got = _bn_act_run(x, gamma, beta, pool, switch_off=True)
    finally:
        _numba.set_enabled(before)
    for a, b in zip(got, want):
        assert np.array_equal(a, b)


def test_each_cross_entropy_path_leaves_its_own_type(rng):
    """Labels, class probabilities and the numba pass: three paths, three cache types (no string tag)."""
    m = rng.standard_normal((4, 5))
    lab = np.array([0, 2, 1, 4])
    kinds = {type(L.cross_entropy_forward(m, lab)[1]), type(L.cross_entropy_forward(m, A.softmax_forward(m)[0])[1])}
    assert kinds == {L.CrossEntropyLabelCache, L.CrossEntropyProbCache}
    if _numba.enabled():
        from deltaprop.fast.loss_numba import CrossEntropyFastCache
        assert type(L.cross_entropy_checked_forward(m, lab)[1]) is CrossEntropyFastCache


def test_every_backward_takes_the_upstream_gradient_then_the_cache():
    """One kernel signature, losses included: ``op_backward(dout, cache, ...)`` (issue 18: losses took
    ``(cache, grad)``). The numba modules' entry points (``_*``) are called by the kernels, not by users."""
    import importlib
    import inspect
    import pkgutil

    import deltaprop.functional as F
    seen = 0
    for info in pkgutil.iter_modules(F.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"deltaprop.functional.{info.name}")
        for name, fn in vars(mod).items():
            if not (inspect.isfunction(fn) and fn.__module__ == mod.__name__ and not name.startswith("_")
                    and (name.endswith("_backward") or name.endswith("_backward_naive"))):
                continue
            if name == "darknet_softmax_backward":     # Darknet's pass-through: (dout, the loss's own gradient)
                continue
            params = list(inspect.signature(fn).parameters)
            assert params[0] in ("dout", "dy", "dz") and params[1] == "cache", f"{info.name}.{name}{params}"
            seen += 1
    assert seen >= 30
