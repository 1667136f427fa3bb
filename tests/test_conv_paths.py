"""The convolution's fast variants run the same work as the code before the references and variants were
separated (issue 26): for the layers of LeNet (batch 64), the conv-BN net (batch 16) and yolov3-tiny at 416 as a
cfg network builds them (``keep_cols=False``; batches 1, 8 and 16), with numba on and off and each choice the
direct loops' calibration can make, the variants that ``deltaprop.dispatch`` picks (forward, the backward its
cache routes to, Conv-3's product orientation, Conv-1's form, the column copy) are the paths the old module
constants chose. ``_old_paths`` is that old logic, written out with the old constants' values (THIN_FILTERS 16 on
≥ 64 positions, PER_SAMPLE_POSITIONS 256, COLS_CHUNK_BYTES 32 MiB, WIDE_WEIGHT 2^16, the direct loops' 160 taps
on ≥ 64·64 positions); speed is held by taking the same paths, which this checks without timing."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import pytest

import deltaprop as dp
from deltaprop import dispatch, models
from deltaprop.darknet import plan_cfg
from deltaprop.fast import conv_chunked as K
from deltaprop.fast import conv_direct
from deltaprop.fast import conv_products as P
from deltaprop.functional import conv as C
from deltaprop.functional.im2col import ConvGeometry, conv_geometry
from deltaprop.runtime import jit as _numba

pytestmark = pytest.mark.skipif(_numba.numba_module() is None and not _numba.enabled(),
                                reason="numba absent: the numba half of the comparison cannot run")


def _old_paths(g: ConvGeometry, keep_cols: bool, numba: bool, max_taps: int, itemsize: int) -> Dict[str, str]:
    """The paths of /work/base's functional/conv.py and im2col.py for one call."""
    thin = g.groups == 1 and g.f < 16 and g.ho * g.wo >= 64
    per_sample = g.groups == 1 and (thin or g.ho * g.wo >= 256)
    chunk = max(1, min(g.n, (32 << 20) // max(1, g.taps * g.ho * g.wo * itemsize)))
    direct = (numba and g.groups == 1 and g.sh == g.sw == 1 and g.dh == g.dw == 1 and g.taps <= 160
              and g.ho * g.wo >= 64 * 64 and g.taps <= max_taps)
    if not keep_cols and direct:
        forward = "direct loops"
    elif not keep_cols and per_sample and chunk < g.n:
        forward = "per-sample products in chunks"
    elif per_sample:
        forward = "per-sample products"
    else:
        forward = "one product"
    if not keep_cols and g.groups == 1 and not thin and chunk < g.n:
        backward = "chunked"
    elif thin:
        backward = "thin per-sample"
    else:
        backward = "one product"
    if backward == "thin per-sample":
        conv3 = "per sample"
    elif g.groups > 1 or g.f * g.taps < (1 << 16):
        conv3 = "transposed"
    else:
        conv3 = "in place"
    conv1 = "wide rows" if g.sh == g.sw == 1 and not numba else "col2im loops" if numba else "col2im"
    return dict(forward=forward, backward=backward, conv3=conv3, conv1=conv1, im2col="loops" if numba else "numpy")


def _shaped(shape, dtype) -> np.ndarray:
    """An array of the shape and dtype that holds no memory (``applies`` reads shapes only)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _first(op: str, *args, **kwargs) -> str:
    """The name of the variant ``dispatch`` runs for this call of ``op`` (its first switched-on variant that
    applies), or "reference"."""
    for v in dispatch.variants(op):
        if dispatch.enabled(v.key) and v.applies(*args, **kwargs):
            return v.name
    return "reference"


def _new_paths(g: ConvGeometry, call: Tuple, keep_cols: bool, dt) -> Dict[str, str]:
    """The same paths as the variants take them now."""
    x, w = _shaped((g.n, g.c, g.h, g.w), dt), _shaped((g.f, g.c // g.groups, g.kh, g.kw), dt)
    stride, padding, dilation = call
    variant = _first("conv2d", x, w, None, stride, padding, dilation, g.groups, keep_cols=keep_cols)
    forward = {"direct loops": "direct loops", "per-sample products": "per-sample products",
               "chunked columns": "per-sample products in chunks" if P.per_sample_forward(g) else "one product",
               "reference": "one product"}[variant]
    chunks = K.chunk_samples(g, np.dtype(dt).itemsize) < g.n
    if P.thin(g) and variant != "reference":        # the per-sample and chunked backwards' thin branch
        backward = "thin per-sample"
    elif variant == "chunked columns" or (variant == "direct loops" and chunks):
        backward = "chunked"
    else:
        backward = "one product"
    if backward == "thin per-sample":
        conv3 = "per sample"
    else:
        cols, d = _shaped((g.taps // g.groups * g.groups, 1), dt), _shaped((g.f, 1), dt)
        conv3 = {"transposed product": "transposed", "reference": "in place"}[_first("conv2d_weight_grad", cols, d,
                                                                                     g.groups)]
    dout = _shaped((g.n, g.f, g.ho, g.wo), dt)
    w2 = _shaped((g.groups, g.f // g.groups, g.taps // g.groups), dt)
    conv1 = {"numba col2im": "col2im loops", "wide rows": "wide rows", "reference": "col2im"}[
        _first("conv2d_input_grad", dout, w2, g)]
    if conv1 == "col2im" and _first("col2im", _shaped((g.taps, g.positions), dt), g) == "numba loops":
        conv1 = "col2im loops"
    im2col = "loops" if _first("im2col", x, g) == "numba loops" else "numpy"
    return dict(forward=forward, backward=backward, conv3=conv3, conv1=conv1, im2col=im2col)


def _nn_calls(model_name: str, input_shape: Tuple[int, ...]) -> List[Tuple[ConvGeometry, Tuple]]:
    """(geometry for batch 1, (stride, padding, dilation)) of every convolution a forward of the model makes."""
    calls = []
    real = C.conv2d_forward

    def spy(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, mode="cross_correlation",
            keep_cols=True):
        calls.append((conv_geometry(x.shape, w.shape, stride, padding, dilation, groups), (stride, padding, dilation)))
        return real(x, w, b, stride, padding, dilation, groups, mode, keep_cols)
    mp = pytest.MonkeyPatch()
    mp.setattr(C, "conv2d_forward", spy)
    try:
        dp.manual_seed(0)
        model = models.build(model_name)
        model.eval()
        model(np.zeros((1,) + input_shape, np.float32))
    finally:
        mp.undo()
    assert calls, f"{model_name}: no convolution seen"
    return calls


def _yolo_calls() -> List[Tuple[ConvGeometry, Tuple]]:
    plan = plan_cfg("yolov3-tiny", width=416, height=416)
    out = []
    for s in plan.specs:
        if s.type == "convolutional":
            a = s.attrs
            k, c = a["size"], s.in_shape[0]
            g = conv_geometry((1,) + tuple(s.in_shape), (a["filters"], c // a["groups"], k, k), a["stride"],
                              a["padding"], 1, a["groups"])
            out.append((g, (a["stride"], a["padding"], 1)))
    assert len(out) == 13
    return out


# (x shape, w shape, stride, padding, dilation, groups) on each side of every threshold: 63/64 positions with 15
# and 16 filters, 255/256 positions, a weight of 2^16 entries and one column less, 8 MiB of columns per sample
# (4 samples fill a chunk, 5 do not), 144/153/162 taps and 4096/3843 positions for the direct loops, groups,
# stride, dilation, a 5×4 kernel, and a small map whose columns fill more than a chunk
THRESHOLDS = [((1, 3, 9, 7), (15, 3, 1, 1), 1, 0, 1, 1), ((1, 3, 8, 8), (15, 3, 1, 1), 1, 0, 1, 1),
              ((1, 3, 8, 8), (16, 3, 1, 1), 1, 0, 1, 1), ((1, 4, 15, 17), (32, 4, 1, 1), 1, 0, 1, 1),
              ((1, 4, 16, 16), (32, 4, 1, 1), 1, 0, 1, 1), ((1, 1024, 4, 4), (64, 1024, 1, 1), 1, 0, 1, 1),
              ((1, 1023, 4, 4), (64, 1023, 1, 1), 1, 0, 1, 1), ((1, 128, 128, 128), (32, 128, 1, 1), 1, 0, 1, 1),
              ((1, 16, 64, 64), (8, 16, 3, 3), 1, 1, 1, 1), ((1, 17, 64, 64), (20, 17, 3, 3), 1, 1, 1, 1),
              ((1, 18, 64, 64), (20, 18, 3, 3), 1, 1, 1, 1), ((1, 3, 63, 65), (16, 3, 3, 3), 1, 0, 1, 1),
              ((1, 1, 66, 65), (3, 1, 5, 4), 1, (2, 1, 0, 2), 1, 1), ((1, 8, 40, 40), (12, 4, 3, 3), 1, 1, 1, 2),
              ((1, 8, 40, 40), (12, 8, 3, 3), 2, 1, 1, 1), ((1, 8, 70, 70), (6, 8, 3, 3), 1, 2, 2, 1),
              ((1, 8192, 15, 15), (16, 8192, 1, 1), 1, 0, 1, 1)]


def _threshold_calls() -> List[Tuple[ConvGeometry, Tuple]]:
    return [(conv_geometry(xs, ws, s, p, d, gr), (s, p, d)) for xs, ws, s, p, d, gr in THRESHOLDS]


CASES = {  # name: (calls, batches, keep_cols)
    "lenet": (lambda: _nn_calls("lenet", (1, 28, 28)), (64,), True),
    "convbn": (lambda: _nn_calls("convbn", (3, 64, 64)), (16,), True),
    "yolov3-tiny-416": (_yolo_calls, (1, 8, 16), False),
    "thresholds, columns kept": (_threshold_calls, (1, 4, 5), True),
    "thresholds, x kept": (_threshold_calls, (1, 4, 5), False),
}


@pytest.fixture
def restore():
    numba_before, taps_before = _numba.enabled(), conv_direct._max_taps
    yield
    _numba.set_enabled(numba_before)
    conv_direct.set_max_taps(taps_before)


@pytest.mark.parametrize("case", list(CASES))
def test_the_variants_take_the_old_paths(case, restore):
    make_calls, batches, keep_cols = CASES[case]
    calls = make_calls()
    seen = set()
    for numba in (False, True):
        _numba.set_enabled(numba)
        for max_taps in ((0, 27, conv_direct.MAX_TAPS) if not keep_cols else (0,)):
            conv_direct.set_max_taps(max_taps)
            for n in batches:
                for g1, call in calls:
                    g = g1._replace(n=n)
                    old = _old_paths(g, keep_cols, numba, max_taps, 4)
                    new = _new_paths(g, call, keep_cols, np.float32)
                    assert new == old, f"{case} {g} numba={numba} max_taps={max_taps}"
                    seen.add(old["forward"] + " / " + old["backward"])
    # the cases reach the paths they are here for
    want = {"lenet": {"per-sample products / thin per-sample", "one product / one product"},
            "convbn": {"per-sample products / one product"},
            "yolov3-tiny-416": {"direct loops / chunked", "direct loops / one product",
                                "per-sample products in chunks / chunked", "per-sample products / one product",
                                "one product / one product", "one product / chunked"},
            "thresholds, columns kept": {"per-sample products / thin per-sample", "per-sample products / one product",
                                         "one product / one product"},
            "thresholds, x kept": {"direct loops / chunked", "direct loops / thin per-sample",
                                   "per-sample products in chunks / chunked", "one product / chunked",
                                   "per-sample products / one product", "one product / one product"}}[case]
    assert want <= seen, sorted(seen)


def test_the_direct_loops_follow_the_machines_choice(restore):
    """The direct loops' variant is switched by the machine's choice (``set_max_taps``), never by measuring:
    nothing chosen (auto, the test suite) leaves it off; a choice of 27 taps serves yolov3-tiny's first layer only."""
    g = _yolo_calls()[0][0]
    x, w = _shaped((1, 3, 416, 416), np.float32), _shaped((16, 3, 3, 3), np.float32)
    _numba.set_enabled(True)
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 0 and "conv2d/direct loops" in dispatch.disabled_variants()
    assert _first("conv2d", x, w, None, 1, 1, keep_cols=False) == "per-sample products"
    conv_direct.set_max_taps(27)
    assert conv_direct.max_taps() == 27 and conv_direct.applies(g)
    assert _first("conv2d", x, w, None, 1, 1, keep_cols=False) == "direct loops"
    assert _first("conv2d", x, w, None, 1, 1, keep_cols=True) == "per-sample products"
    second = _yolo_calls()[1][0]                                   # 16 → 32 channels: 144 taps
    assert second.taps == 144 and not conv_direct.applies(second)


def test_a_bad_setting_is_named_where_the_loops_are_asked_for(restore, monkeypatch):
    """A bad DELTAPROP_CONV_DIRECT does not stop ``import deltaprop``: it raises ConfigError, naming the variable
    and its values, from ``max_taps`` and from the first convolution the loops could serve (inside a command, where
    the command line reports a user's mistake in one line); other convolutions run."""
    from deltaprop.errors import ConfigError
    monkeypatch.setenv("DELTAPROP_CONV_DIRECT", "sometimes")
    _numba.set_enabled(True)
    conv_direct._setting_at_import()
    x, w = np.zeros((1, 3, 64, 64), np.float32), np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ConfigError, match="DELTAPROP_CONV_DIRECT='sometimes': expected one of auto, on, off"):
        conv_direct.max_taps()
    with pytest.raises(ConfigError, match="DELTAPROP_CONV_DIRECT"):
        C.conv2d_forward(x, w, None, 1, 1, keep_cols=False)
    assert C.conv2d_forward(x, w, None, 1, 1)[0].shape == (1, 4, 64, 64)          # columns kept: not the loops
    monkeypatch.setenv("DELTAPROP_CONV_DIRECT", "off")
    conv_direct.set_max_taps(None)
    assert conv_direct.max_taps() == 0
    assert C.conv2d_forward(x, w, None, 1, 1, keep_cols=False)[0].shape == (1, 4, 64, 64)
