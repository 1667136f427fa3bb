"""Hostile Darknet cfgs (issue 19): a typo never costs gigabytes, sizes never wrap or overflow, and every
failure is a ConfigError naming the file, line and key."""
from __future__ import annotations

import numpy as np
import pytest

from deltaprop import darknet
from deltaprop.darknet.network import MAX_ELEMENTS, mib
from deltaprop.errors import ConfigError
from deltaprop.functional import pool as P, pool_naive as PN
from deltaprop.functional.pool_geometry import darknet_maxpool_padding, pool_geometry

from hostile_testutil import cheaply, raises_cheaply

YOLO = "[net]\nwidth=1\nheight=1\nchannels=6\n[yolo]\nclasses=1\nnum={num}\nmask=0\nanchors=1,1\n"


@pytest.mark.parametrize("num", [50_000_000, 2_147_483_647])
def test_yolo_num_typo_costs_nothing(num):
    err = raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(YOLO.format(num=num), name="typo.cfg"))
    assert "typo.cfg:7" in str(err) and "'num'" in str(err)


@pytest.mark.parametrize("key,value,line", [("classes", 10 ** 9, 6), ("max", 10 ** 9, 10)])
def test_yolo_counts_have_upper_bounds(key, value, line):
    text = YOLO.format(num=1).replace("classes=1", f"classes={value}" if key == "classes" else "classes=1")
    if key == "max":
        text += f"max={value}\n"
    err = raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(text, name="big.cfg"))
    assert f"big.cfg:{line}" in str(err) and f"'{key}'" in str(err)


def test_yolo_defaults_still_apply_when_absent():
    net = darknet.load_cfg_text("[net]\nwidth=2\nheight=2\nchannels=18\n[yolo]\nclasses=1\nnum=3\n")
    yolo = net.layers[0]
    assert yolo.mask == [0, 1, 2] and yolo.anchors == [(0.5, 0.5)] * 3


def up(n, then=""):
    return "[net]\nwidth=1\nheight=1\nchannels=1\n" + "[upsample]\nstride=2147483647\n" * n + then


OVERSIZED = {"33 upsamples": up(33), "17 upsamples, connected": up(17, "[connected]\noutput=1\n"),
             "17 upsamples, conv": up(17, "[convolutional]\nfilters=1\nsize=1\n"),
             "2^64 inputs, avgpool": "[net]\nwidth=2097152\nheight=4194304\nchannels=2097152\n[avgpool]\n"}


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_sizes_do_not_overflow(name):
    """Outputs beyond 2⁴⁸ elements are refused while planning (their costs would overflow a float, their
    int64 products wrap), with the file and line, before any cost or budget is computed."""
    text = OVERSIZED[name]
    raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(text, name="huge.cfg"), match=r"huge\.cfg:\d+")
    raises_cheaply(ConfigError, lambda: darknet.plan_network(darknet.parse_cfg_text(text, "huge.cfg")),
                   match=r"huge\.cfg:\d+")


def test_huge_parameter_count_refused_by_the_budget():
    text = "[net]\nwidth=65536\nheight=32768\nchannels=1\n[connected]\noutput=2147483647\n"  # 2⁶² weights
    assert darknet.plan_network(darknet.parse_cfg_text(text)).n_params > 2 ** 61
    raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(text), match="memory budget")


def test_memory_bytes_in_python_integers():
    """65536×65536×4096 = 2⁴⁴ inputs: np.prod in int64 is right here, but the budget sum must be too."""
    text = "[net]\nwidth=65536\nheight=65536\nchannels=4096\n[avgpool]\n"
    plan = darknet.plan_network(darknet.parse_cfg_text(text))
    assert plan.memory_bytes() == 4 * (2 ** 44 + 4096)
    err = raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(text))
    assert mib(plan.memory_bytes()) in str(err)
    big = "[net]\nwidth=2097152\nheight=2097152\nchannels=64\n[avgpool]\n"  # 2⁴⁸ exactly: plans
    assert darknet.plan_network(darknet.parse_cfg_text(big)).memory_bytes() > 2 ** 50
    assert MAX_ELEMENTS == 2 ** 48


def test_mib_is_exact_for_any_size():
    assert mib(3 * 2 ** 19) == "1.5" and mib(2 ** 2000) == f"{2 ** 1980:,}.0"


@pytest.mark.parametrize("layer", ["[maxpool]\nsize=100000\nstride=2\n",
                                   "[convolutional]\nfilters=1\nsize=1\nstride=100000\npadding=50000\n"])
def test_padding_counted_in_the_budget(layer):
    """Found by the campaign: a window of 100000 on a 12×7 input plans a 6×4 output, but its forward pass
    pads the input to 100010×100006 (112 GiB). The padded copy is the layer's workspace in the plan."""
    text = "[net]\nwidth=7\nheight=12\nchannels=3\n" + layer
    raises_cheaply(ConfigError, lambda: darknet.load_cfg_text(text), match="memory budget")


def window_pass(text, x):
    """Load ``text`` and run a forward pass in inference, then a forward and backward pass in training."""
    net = darknet.load_cfg_text(text)
    y = net.predict(x)
    net.train()
    out = net(x)
    return net, y, net.backward(np.ones_like(out))


def test_window_far_larger_than_its_input_is_cheap():
    """Found by the campaign (tests/fuzz/corpus/cfg/49304-*, 1.14 s): ``[maxpool] stride=255`` means size 255
    and padding 254, so each window on this 14×12 input has 65,025 cells, at most 14×12 of them in the input;
    the forward pass looped over all 65,025 kernel offsets. Offsets that read padding only are skipped. The
    one window covers the whole input: its output is each channel's maximum, its delta goes there."""
    text = "[net]\nwidth=12\nheight=14\nchannels=3\n[cost]\ntype=sse\n[maxpool]\nstride=255\n"
    x = np.random.default_rng(0).standard_normal((2, 3, 14, 12)).astype(np.float32)
    window_pass(text.replace("255", "2"), x)  # first use: imports numba and loads its kernels (seconds), not timed
    with cheaply("loading it and a forward and backward pass"):
        net, y, dx = window_pass(text, x)
    assert net.layers[1].size == 255 and net.layers[1].padding == 254
    assert np.array_equal(y.reshape(2, 3), x.max(axis=(2, 3)))
    flat = x.reshape(6, -1)
    expect = np.zeros_like(flat)
    expect[np.arange(6), flat.argmax(axis=1)] = 1
    assert np.array_equal(dx.reshape(6, -1), expect)


# (h, w, size, stride, padding) of Darknet maxpools whose windows hang far off the input: padding-only
# kernel offsets before the first live one (index 0 dead), after the last, and between overlapping windows
FAR_WINDOWS = [(2, 9, 5, 1, 4), (3, 2, 7, 7, 6), (5, 4, 7, 2, 6), (4, 4, 9, 3, 8), (14, 12, 25, 25, 24)]


@pytest.mark.parametrize("h,w,size,stride,padding", FAR_WINDOWS)
def test_live_offsets_are_those_reading_the_input(h, w, size, stride, padding):
    g = pool_geometry((1, 1, h, w), size, stride, darknet_maxpool_padding(h, w, size, stride, padding))
    reads_input = [(a, b, k) for a, b, k in g.offsets
                   if any(0 <= i * g.sh - g.pt + a < h and 0 <= j * g.sw - g.pl + b < w
                          for i in range(g.ho) for j in range(g.wo))]
    assert g.live_offsets == reads_input and len(reads_input) < len(g.offsets)


@pytest.mark.parametrize("h,w,size,stride,padding", FAR_WINDOWS)
def test_far_windows_match_the_naive_loops(h, w, size, stride, padding):
    """Max and average pooling, forward and backward, on windows with padding-only offsets: the same numbers
    as the loops straight from the equations (pool_naive), which visit every cell."""
    pads = darknet_maxpool_padding(h, w, size, stride, padding)
    x = np.random.default_rng(h * w + size).standard_normal((2, 2, h, w))
    y, cache = P.max_pool2d_forward(x, size, stride, pads)
    yn, cn = PN.max_pool2d_forward_naive(x, size, stride, pads)
    d = np.random.default_rng(1).standard_normal(y.shape)
    assert np.array_equal(y, yn)
    np.testing.assert_allclose(P.max_pool2d_backward(d, cache), PN.max_pool2d_backward_naive(d, cn), rtol=1e-12)
    a, ca = P.avg_pool2d_forward(x, size, stride, pads)
    an, can = PN.avg_pool2d_forward_naive(x, size, stride, pads)
    np.testing.assert_allclose(a, an, rtol=1e-12)
    np.testing.assert_allclose(P.avg_pool2d_backward(d, ca), PN.avg_pool2d_backward_naive(d, can), rtol=1e-12)


@pytest.mark.parametrize("scale", ["1", "0.5"])
@pytest.mark.parametrize("h,w,stride", [(6, 11, 1), (1, 1, 2), (1, 1, 3), (1, 4, 1)])
def test_upsample_returns_an_array_of_its_own(h, w, stride, scale):
    """Found by the campaign (tests/fuzz/corpus/cfg/55-*, 10087-*): ``[upsample] stride=1 scale=0.5``, or any
    stride on a 1×1 input, raised NumPy's "output array is read-only" ValueError: the upsampling kernel's
    reshape needed no copy there, so it returned a read-only view of its input, which the layer then scaled
    in place. Its output is now an array of its own: each cell of x times scale in a stride×stride block."""
    text = f"[net]\nwidth={w}\nheight={h}\nchannels=3\n[upsample]\nstride={stride}\nscale={scale}\n"
    x = np.random.default_rng(0).standard_normal((2, 3, h, w)).astype(np.float32)
    net, y, dx = window_pass(text, x)
    s = np.float32(scale)
    block = np.ones((stride, stride), np.float32)
    assert np.array_equal(y, np.kron(x, block) * s) and y.flags.writeable and not np.shares_memory(y, x)
    assert np.array_equal(dx, np.full_like(x, s * stride * stride))
