"""Every registered fast variant (``deltaprop.fast``) against the reference it replaces (``deltaprop.functional``):
on each of the variant's own examples, the forward's outputs and every gradient of the backward equal the
reference's, bit for bit when the variant says ``exact``, else within its stated tolerances
(docs/architecture.md#variants)."""
from __future__ import annotations

from typing import Any, List

import numpy as np
import pytest

import deltaprop  # noqa: F401  (imports deltaprop.fast: every variant registers)
import deltaprop.functional  # noqa: F401  (every reference declares its op)
from deltaprop import dispatch

VARIANTS = dispatch.variants()


def _arrays(x: Any) -> List[Any]:
    """The arrays and scalars of a result, in order (tuples and lists flattened; caches are not passed here)."""
    if isinstance(x, (tuple, list)):
        return [a for item in x for a in _arrays(item)]
    return [x]


def _compare(got: Any, want: Any, v: dispatch.Variant, what: str) -> None:
    g, w = _arrays(got), _arrays(want)
    assert len(g) == len(w), f"{v.key} {what}: {len(g)} results, the reference gives {len(w)}"
    for i, (a, b) in enumerate(zip(g, w)):
        if b is None or a is None:
            assert a is None and b is None, f"{v.key} {what}[{i}]: {a!r} vs the reference's {b!r}"
            continue
        if not isinstance(b, np.ndarray) and not isinstance(a, np.ndarray):
            if v.exact:
                assert a == b or (a != a and b != b), f"{v.key} {what}[{i}]: {a!r} vs {b!r}"
            else:
                assert np.allclose(a, b, rtol=v.rtol, atol=v.atol), f"{v.key} {what}[{i}]: {a!r} vs {b!r}"
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{v.key} {what}[{i}]: shape {a.shape} vs the reference's {b.shape}"
        assert a.dtype == b.dtype, f"{v.key} {what}[{i}]: dtype {a.dtype} vs the reference's {b.dtype}"
        if v.exact:
            assert np.array_equal(a, b, equal_nan=True), \
                f"{v.key} {what}[{i}]: not bit-identical (max |diff| {np.max(np.abs(a - b))})"
        else:
            np.testing.assert_allclose(a, b, rtol=v.rtol, atol=v.atol, err_msg=f"{v.key} {what}[{i}]")


def test_variants_are_registered():
    """Each registered variant names an op that a reference declares."""
    declared = set(dispatch.ops())
    for v in VARIANTS:
        assert v.op in declared
        dispatch.reference_of(v.op)          # raises when no reference declared the op


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.key for v in VARIANTS])
def test_variant_equals_its_reference(variant: dispatch.Variant):
    v = variant
    assert v.examples is not None, f"{v.key} has no examples: nothing holds it to its reference"
    ref_examples, var_examples = v.examples(), v.examples()   # fresh arrays: some ops write in place
    assert ref_examples, f"{v.key}: examples() returned none"
    forward_ref = dispatch.reference_of(v.op)
    backward_ref = dispatch.backward_reference_of(v.op)
    for k, (er, ev) in enumerate(zip(ref_examples, var_examples)):
        applies = v.applies(*ev.args, **ev.kwargs)     # a variant this machine switched off is still compared
        assert applies or not dispatch.enabled(v.key), f"{v.key} example {k}: the variant does not apply to it"
        want = forward_ref(*er.args, **er.kwargs)
        got = v.forward(*ev.args, **ev.kwargs)
        if v.backward is None:
            _compare(got, want, v, f"example {k} forward")
            continue
        assert isinstance(got[1], v.caches), f"{v.key}: its forward left a {type(got[1]).__name__}"
        _compare((got[0],) + tuple(got[2:]), (want[0],) + tuple(want[2:]), v, f"example {k} forward")
        out = np.asarray(want[0])
        dout = np.random.default_rng(k).standard_normal(out.shape).astype(out.dtype)
        grads_want = backward_ref(dout.copy(), want[1], **er.backward_kwargs)
        grads_got = v.backward(dout.copy(), got[1], **ev.backward_kwargs)
        _compare(grads_got, grads_want, v, f"example {k} backward")
