"""The fused SGD momentum kernel (numba) gives bit-identical numbers to the NumPy path, on its serial and
its parallel route (the (300, 130) parameter is above ``_numba.PARALLEL_MIN``)."""
import numpy as np
import pytest

from deltaprop import optim
from deltaprop.runtime import jit as _numba
from deltaprop.nn import Parameter
from conftest import require_numba


def _run(flag, dtype, steps=4, **kw):
    was = _numba.enabled()
    _numba.set_enabled(flag)
    try:
        g = np.random.default_rng(0)
        ps = [Parameter(g.standard_normal(s).astype(dtype)) for s in [(7, 5), (5,), (3, 2, 4), (300, 130)]]
        opt = optim.SGD(ps, **kw)
        for _ in range(steps):
            for p in ps:
                p.grad = g.standard_normal(p.shape).astype(dtype)
            opt.step()
        return [p.data.copy() for p in ps], opt.state_dict()
    finally:
        _numba.set_enabled(was)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.03, momentum=0.5, dampening=0.3, weight_decay=0.01),
    dict(lr=0.02, momentum=0.7, maximize=True),
])
def test_fused_equals_numpy(dtype, kw):
    require_numba()
    assert 300 * 130 >= _numba.PARALLEL_MIN > 7 * 5
    a, sa = _run(True, dtype, **kw)
    b, sb = _run(False, dtype, **kw)
    for x, y in zip(a, b):
        assert x.dtype == dtype and np.array_equal(x, y)
    for i in sa["state"]:
        assert np.array_equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
        assert sa["state"][i]["step"] == sb["state"][i]["step"] == 4


def test_fused_path_runs_and_declines_what_it_cannot_do():
    require_numba()
    from deltaprop.fast.sgd_numba import sgd_momentum_update
    w, g, b = np.ones(6, np.float32), np.full(6, 2.0, np.float32), np.ones(6, np.float32)
    assert sgd_momentum_update(w, g, b, 0.5, 0.9, 0.0, 0.0, False, False)
    np.testing.assert_array_equal(b, np.float32(0.9) + np.float32(2.0))
    np.testing.assert_array_equal(w, np.float32(1) - np.float32(0.5) * b)
    assert not sgd_momentum_update(w, g.astype(np.float64), b, 0.5, 0.9, 0.0, 0.0, False, False)
    assert not sgd_momentum_update(w[::2], g[::2], b[::2], 0.5, 0.9, 0.0, 0.0, False, False)
