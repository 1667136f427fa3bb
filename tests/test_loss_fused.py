"""The one-pass numba cross-entropy (2-D logits, integer labels) agrees with the validating NumPy path,
and bad input still gets the NumPy path's named errors."""
import numpy as np
import pytest

from deltaprop import nn
from deltaprop.errors import LabelError, NonFiniteError
from deltaprop.runtime import jit as _numba
from deltaprop.functional import loss as F

from conftest import rel_err, require_numba


def _both(logits, labels, **kw):
    out = []
    was = _numba.enabled()
    for flag in (True, False):
        _numba.set_enabled(flag)
        try:
            crit = nn.CrossEntropyLoss(**kw)
            value = crit(logits, labels)
            out.append((value, crit.backward(2.5)))
        finally:
            _numba.set_enabled(was)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_path_matches_numpy_path(dtype, reduction, rng):
    require_numba()
    x = (rng.standard_normal((37, 10)) * 4).astype(dtype)
    y = rng.integers(0, 10, 37)
    y[[3, 8]] = -100                                          # ignored rows
    (v1, g1), (v0, g0) = _both(x, y, reduction=reduction)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert abs(v1 - v0) <= tol * max(1.0, abs(v0))
    assert g1.dtype == g0.dtype == dtype
    assert rel_err(g1, g0) < tol
    assert not g1[[3, 8]].any()


def test_fast_path_is_taken_and_declines_other_cases(rng):
    """With numba the checked op runs the one-pass variant; outside its case, and on input it rejects, the variant
    and the reference both return None (the layer then checks and names the problem)."""
    require_numba()
    from deltaprop.fast import loss_numba as LN
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.integers(0, 4, 5)
    value, cache = F.cross_entropy_checked_forward(x, y)
    assert type(cache) is LN.CrossEntropyFastCache and np.isclose(value, F.cross_entropy_forward(x, y)[0], rtol=1e-6)
    ref = F.cross_entropy_checked_forward.reference
    assert type(ref(x, y)[1]) is F.CrossEntropyLabelCache
    for args, kw in [((x, y), dict(reduction="none")),
                     ((x, y.astype(np.float32)), {}),                   # probabilities
                     ((x[None], y[None]), {})]:                         # 3-D scores
        assert F.cross_entropy_checked_forward(*args, **kw) is None and ref(*args, **kw) is None
    bad_x = x.copy()
    bad_x[1, 2] = np.inf
    for args in [(x, np.full(5, -100)),                                 # nothing to average
                 (x, np.array([0, 1, 4, 2, 3])), (x, np.array([0, -1, 1, 2, 3])),   # labels out of range
                 (bad_x, y)]:                                           # a logit that is not finite
        assert LN.cross_entropy_fast_forward(*args) is None and ref(*args) is None
        assert F.cross_entropy_checked_forward(*args) is None


def test_bad_labels_and_nan_logits_keep_their_errors(rng):
    require_numba()
    x = rng.standard_normal((6, 3)).astype(np.float32)
    with pytest.raises(LabelError, match="label 3 at index"):
        nn.CrossEntropyLoss()(x, np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(LabelError, match="label -1"):
        nn.CrossEntropyLoss()(x, np.array([0, 1, 2, -1, 0, 1]))
    x[2, 1] = np.nan
    with pytest.raises(NonFiniteError):
        nn.CrossEntropyLoss()(x, np.array([0, 1, 2, 0, 0, 1]))
    x[2, 1] = np.inf
    with pytest.raises(NonFiniteError):
        nn.CrossEntropyLoss()(x, np.array([0, 1, 2, 0, 0, 1]))


def test_fast_path_matches_torch(torch_ref, rng):
    require_numba()
    torch = torch_ref
    x = rng.standard_normal((64, 10))
    y = rng.integers(0, 10, 64)
    crit = nn.CrossEntropyLoss()
    value = crit(x, y)
    grad = crit.backward()
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(xt, torch.tensor(y))
    ref.backward()
    assert abs(value - ref.item()) < 1e-12
    assert rel_err(grad, xt.grad.numpy()) < 1e-12
