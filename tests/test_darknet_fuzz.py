"""Bounded fuzzing (hypothesis) of cfg text and .weights bytes: the only exceptions are the project's own
(ConfigError, WeightsError, ...), nothing beyond the memory budget is allocated, and whatever loads
round-trips."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from darknet_testutil import CLS_CFG, WEIGHTS_VERSIONS, weights_bytes  # noqa: E402
from deltaprop import darknet  # noqa: E402
from deltaprop.darknet.cfg import SECTION_KEYS  # noqa: E402
from deltaprop.errors import ConfigError, DeltapropError, WeightsError  # noqa: E402

BUDGET = 8 * 2 ** 20
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

values = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "1", "2", "3", "255", "100000", "99999999999", "-1", "0.5", ".1", "1e3", "nan", "inf",
                     "leaky", "linear", "logistic", "relu", "tanh", "swish", "sse", "L1", "steps", "poly",
                     "-1,0", "-1,-3", "0,1,2", "3,4,5", "1,2,3,4,5,6", "10,14,23,27", "a,b", "", "=", "[x]"]),
)


ACTS = st.sampled_from(["leaky", "linear", "logistic", "relu", "tanh", "elu", "ramp", "plse", "lhtan"])
# per section kind: key -> strategy of mostly valid values
KEYS = {
    "convolutional": {"filters": st.integers(1, 8), "size": st.integers(1, 5), "stride": st.integers(1, 3),
                      "pad": st.integers(0, 1), "padding": st.integers(0, 2), "groups": st.integers(1, 2),
                      "batch_normalize": st.integers(0, 1), "activation": ACTS},
    "connected": {"output": st.integers(1, 8), "batch_normalize": st.integers(0, 1), "activation": ACTS},
    "maxpool": {"size": st.integers(1, 4), "stride": st.integers(1, 3), "padding": st.integers(0, 3)},
    "avgpool": {}, "logistic": {},
    "softmax": {"groups": st.integers(1, 2), "temperature": st.sampled_from(["1", "0.5", "2"]),
                "spatial": st.integers(0, 1)},
    "cost": {"type": st.sampled_from(["sse", "L1", "smooth", "masked"]), "scale": st.sampled_from(["1", ".5"])},
    "dropout": {"probability": st.sampled_from(["0", ".2", ".5", ".9"])},
    "route": {"layers": st.sampled_from(["-1", "-2", "-1,-3", "0", "1,-1", "-1,0"])},
    "shortcut": {"from": st.integers(-4, -1), "activation": ACTS},
    "upsample": {"stride": st.integers(1, 3), "scale": st.sampled_from(["1", "0.5"])},
}
KINDS = sorted(KEYS) + ["yolo"]


@st.composite
def cfg_texts(draw):
    """Mostly valid cfgs (so that many build), each key and section perturbed now and then."""
    lines = ["[net]"]
    net = {"width": st.integers(1, 20), "height": st.integers(1, 20), "channels": st.integers(1, 3),
           "batch": st.integers(1, 3)}
    for key, strat in net.items():
        if draw(st.integers(0, 30)):
            big = draw(st.integers(0, 40)) == 0
            lines.append(f"{key}={draw(st.sampled_from([100000, 0, -2])) if big else draw(strat)}")
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(KINDS + ["region", "bogus"] if draw(st.integers(0, 30)) == 0 else KINDS))
        if kind == "yolo":  # a conv giving exactly the channels it needs (mostly)
            classes, num = draw(st.integers(0, 3)), draw(st.integers(1, 3))
            mask = draw(st.lists(st.integers(0, num - 1), min_size=1, max_size=num, unique=True))
            filters = len(mask) * (classes + 5) + (draw(st.integers(0, 30)) == 0)
            lines += ["[convolutional]", f"filters={filters}", "size=1", "activation=linear", "[yolo]",
                      f"classes={classes}", f"num={num}", "mask=" + ",".join(map(str, mask))]
            if draw(st.booleans()):
                lines.append("anchors=" + ",".join(str(draw(st.integers(1, 30))) for _ in range(2 * num)))
        else:
            lines.append(f"[{kind}]")
            keys = KEYS.get(kind, {})
            chosen = draw(st.lists(st.sampled_from(sorted(keys)), max_size=len(keys), unique=True)) if keys else []
            for key in chosen + [k for k in ("layers", "from") if k in keys and k not in chosen]:
                lines.append(f"{key}={draw(keys[key])}")
        if draw(st.integers(0, 12)) == 0:  # a perturbation: any whitelisted or bogus key, any value, or no '='
            pool = sorted(SECTION_KEYS.get(kind, {"classes"})) + ["bogus_key"]
            key = draw(st.sampled_from(pool))
            lines.append(f"{key}={draw(values)}" if draw(st.integers(0, 5)) else key)
    sep = draw(st.sampled_from(["\n", "\n\n", " \n", "\r\n"]))
    return sep.join(lines) + "\n"


def _check_built(net):
    assert net.plan.memory_bytes(1, 4) <= BUDGET
    text = net.cfg_text()
    net2 = darknet.load_cfg_text(text, budget=BUDGET)
    assert net2.cfg_text() == text                       # cfg → net → cfg → net → same text
    x = np.random.default_rng(0).random((1,) + net.input_shape, dtype=np.float32)
    net.set_numerics("standard")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = net.predict(x)
    for spec, o in zip(net.plan.specs, net.layer_outputs):
        assert o.shape == (1,) + spec.out_shape


@FUZZ
@given(cfg_texts())
def test_fuzz_structured_cfg(text):
    tracemalloc.start()
    try:
        net = darknet.load_cfg_text(text, budget=BUDGET)
    except ConfigError:
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= BUDGET, f"building allocated {peak} bytes, budget {BUDGET}"
    _check_built(net)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("[]=#;, \t\n.-0123456789abcdefilnoprstuvwyz_")), max_size=300))
def test_fuzz_raw_cfg_text(text):
    try:
        net = darknet.load_cfg_text("[net]\nwidth=8\nheight=8\nchannels=2\n" + text, budget=BUDGET)
    except ConfigError:
        return
    _check_built(net)


def _net():
    return darknet.load_cfg_text(CLS_CFG)


HEADERS = WEIGHTS_VERSIONS + [(-1, 5, 0)]


@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=400), st.integers(0, 3))
def test_fuzz_weights_bytes(version, body, mode):
    valid = weights_bytes(version)
    if mode == 0:
        data = body                                           # anything at all
    elif mode == 1:
        data = valid[:len(body) % (len(valid) + 1)]           # truncated at any point
    elif mode == 2:
        data = valid + body[:max(len(body), 1)]               # oversized
    else:                                                     # corrupted in place
        b = bytearray(valid)
        for i, v in enumerate(body[:8]):
            b[(i * 97 + v * 13) % len(b)] = v
        data = bytes(b)
    net = _net()
    try:
        darknet.load_weights_bytes(net, data)
    except WeightsError as e:
        assert "expected" in str(e) or "NaN" in str(e) or "header" in str(e)
        return
    assert darknet.weights_to_bytes(net) == data              # what loads writes back byte for byte


@FUZZ
@given(st.integers(0, 6), st.binary(max_size=64))
def test_fuzz_weights_upto(upto, tail):
    full = _net()
    darknet.load_weights_bytes(full, weights_bytes())
    part = darknet.weights_to_bytes(full, upto=upto)
    net = _net()
    darknet.load_weights_bytes(net, part, upto=upto)
    assert darknet.weights_to_bytes(net, upto=upto) == part
    if tail:
        # a tail that ends on a later layer's boundary is a file of more whole layers: its first `upto` load
        # (as Darknet reads them); any other tail is an error
        floats = darknet.weights.expected_floats(full, upto) + len(tail) // 4
        if len(tail) % 4 == 0 and floats in darknet.weights._prefix_sizes(full)[upto:]:
            longer = _net()
            darknet.load_weights_bytes(longer, part + tail, upto=upto)
            assert darknet.weights_to_bytes(longer, upto=upto) == part
        else:
            with pytest.raises(WeightsError):
                darknet.load_weights_bytes(_net(), part + tail, upto=upto)
    if darknet.weights.expected_floats(full, upto) < darknet.weights.expected_floats(full):
        with pytest.raises(WeightsError, match="truncated"):
            darknet.load_weights_bytes(_net(), part)


def test_fuzz_errors_are_project_errors():
    """A handful of nasty inputs by hand: each is a DeltapropError, never anything else."""
    for text in ["", "[", "[]", "[net", "[net]\n[convolutional]\nsize=0", "\x00", "[net]\nwidth=8\n" * 2,
                 "[net]\nwidth=99999999999\n", "[NET]\nwidth=2\nheight=2\nchannels=1\n[CONV]\n"]:
        try:
            darknet.load_cfg_text(text, budget=BUDGET)
        except DeltapropError:
            pass
