"""Helpers of the ONNX export tests (tests/test_export_*.py; not a test module): ONNX Runtime on one thread, the
coco128 fixture photos letterboxed as Darknet feeds them, the nn models' batch-norm statistics made non-trivial."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest

from conftest import fixture_dir

ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime checks the exports (pip install 'deltaprop[test]')")
onnx = pytest.importorskip("onnx", reason="the onnx package writes the exports (pip install 'deltaprop[onnx]')")

#: The issue's bar: ONNX Runtime's outputs within 1e-4 of deltaprop's eval forward, relative (float32).
RTOL = 1e-4


def run_onnx(model, x: np.ndarray) -> List[np.ndarray]:
    """Every output of ``model`` (a path or a ModelProto) on ``x`` through ONNX Runtime's CPU provider."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})


def photos(w: int, h: int, n: int = 3) -> np.ndarray:
    """The first ``n`` coco128 fixture photos letterboxed to w×h (Darknet's ``letterbox_image``): (n, 3, h, w)."""
    from deltaprop.detect import letterbox_image, load_image
    paths = sorted(fixture_dir("coco128", "images").glob("*.jpg"))[:n]
    return np.stack([letterbox_image(load_image(p, channels=3), w, h) for p in paths]).astype(np.float32)


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Running statistics and affine parameters away from 0/1, so that a fold or a kept BatchNormalization that
    dropped a term would show."""
    from deltaprop import nn
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean[...] = rng.normal(0, 0.3, c)
            m.running_var[...] = rng.uniform(0.5, 2.0, c)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 1.5, c)
                m.bias.data[...] = rng.normal(0, 0.2, c)


def ops_of(proto) -> Sequence[str]:
    return [n.op_type for n in proto.graph.node]
