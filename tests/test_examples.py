"""Every script in examples/ runs in its fast mode in a subprocess, and what it prints is checked."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_data_set

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared"
MNIST = SHARED / "data" / "mnist"
NUM = r"[-+]?\d+\.\d+(?:e[-+]\d+)?"


def run_example(name: str, *args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_tested_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 6
    readme = (EXAMPLES / "README.md").read_text()
    tested = Path(__file__).read_text()
    for s in scripts:
        text = (EXAMPLES / s).read_text()
        assert text.startswith('"""') and f"examples/{s}" in text.split('"""')[1], s   # docstring: how to run
        assert len(text.splitlines()) <= 80, s
        assert s in readme and f'"{s}"' in tested, s


def test_01_engine_numbers_equal_the_hand_numbers():
    out = run_example("01_backprop_by_hand.py")
    rows = [line for line in out.splitlines()
            if re.match(r"(output a2 |cost C |delta_[oh] |dC/dW[12] |new [Wb][12] )", line)]
    assert len(rows) == 10
    for line in rows:
        nums = re.findall(NUM, line)
        half = len(nums) // 2
        assert len(nums) % 2 == 0 and half >= 1 and nums[:half] == nums[half:], line   # hand | engine
    assert "cost C           +0.298371109" in out                  # the classic worked value
    assert float(re.search(r"max difference hand vs engine: (\S+)", out).group(1)) < 1e-12
    assert "OK: the engine's backward is the hand computation" in out


def test_02_gradcheck_passes_the_layer_and_catches_the_bug():
    out = run_example("02_gradcheck_custom_layer.py")
    good = re.search(rf"^ScaledTanh\s+pass: relative errors input: ({NUM}), A: ({NUM}), S: ({NUM})", out, re.M)
    bad = re.search(rf"^BuggyScaledTanh\s+FAIL: relative errors input: ({NUM}), A: ({NUM}), S: ({NUM})", out, re.M)
    assert good and bad, out
    assert max(float(v) for v in good.groups()) < 1e-8
    assert float(bad.group(1)) > 1e-2                                  # the forgotten factor S
    assert float(bad.group(2)) < 1e-8 and float(bad.group(3)) < 1e-8   # its parameter gradients are right
    assert "<-- wrong gradient" in out and "Linear -> ScaledTanh -> Linear: pass" in out


def test_03_train_mlp_mnist(tmp_path):
    need_data_set(MNIST)
    out = run_example("03_train_mlp_mnist.py", "--limit", "1500", "--epochs", "1", "--data", str(MNIST),
                      "--out", str(tmp_path))
    assert "MNIST: 1350 training, 150 validation, 1500 test images, float32" in out
    assert "epoch 1/1: train loss" in out
    acc = float(re.search(r"test accuracy: (\S+)", out).group(1))
    assert 0.5 < acc <= 1.0                                            # far above chance after 1350 images
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 1 and hist[0]["epoch"] == 1 and (tmp_path / "last.npz").is_file()


def test_04_convolution_and_correlation_stay_flips():
    out = run_example("04_conv_vs_correlation.py", "--steps", "10")
    rows = [re.findall(NUM, line) for line in out.splitlines() if re.match(r"\s+\d+\s+\d\.\d+", line)]
    assert [len(r) for r in rows] == [3, 3, 3]                         # steps 0, 5, 10
    for loss_corr, loss_conv, diff in rows:
        assert loss_corr == loss_conv and float(diff) <= 1e-12
    assert float(rows[-1][0]) < float(rows[0][0])                      # and it did train
    by_def, layer = re.search(rf"by definition .*: ({NUM}), the layer: ({NUM})", out).groups()
    assert abs(float(by_def) - float(layer)) < 1e-9
    assert "OK: flipped kernels stay flipped" in out


def test_05_darknet_yolov3_tiny():
    pytest.importorskip("PIL")
    out = run_example("05_darknet_yolov3_tiny.py", "--size", "224")     # the photo shipped in tests/fixtures
    assert re.search(r"total \d+\.\d+ BFLOPs, 8,858,734 parameters", out)   # Darknet's table, at 224x224
    assert "letterboxed to 224x224; [yolo] outputs [(1, 255, 7, 7), (1, 255, 14, 14)]" in out
    assert "RANDOM WEIGHTS: meaningless" in out
    table = [line for line in out.splitlines()
             if re.match(r"\s+\d+ (convolutional|maxpool|yolo|route|upsample)\s+\(", line)]
    assert len(table) == 24
    assert len(re.findall(r"^ok   ", out, re.M)) == 5 and "FAIL" not in out


def test_06_sensitivity_maps(tmp_path):
    need_data_set(MNIST)
    out = run_example("06_sensitivity_maps.py", "--limit", "600", "--data", str(MNIST), "--out", str(tmp_path))
    assert re.search(r"test digit 0: label 7, predicted \d, loss C = \d", out)
    for name in ["input (input)", "0 (Conv2d)", "3 (Conv2d)", "7 (Linear)", "11 (Linear)"]:
        assert re.search(rf"^{re.escape(name)}\s+\(1, [\d, ]+\)\s+{NUM}", out, re.M), name
    art = [line for line in out.splitlines() if re.fullmatch(r"[.#]{28}   [ .:*@]{28}", line)]
    assert len(art) == 28
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no pictures" in out
        return
    for f in ("sensitivity.png", "history.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
