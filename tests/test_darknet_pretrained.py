"""A pretrained start as Darknet users have them: a ``.conv.N`` file of the first N whole layers (``darknet
partial``), whatever its name, loads those layers, the rest start fresh, and the load says so; ``detector train``
fine-tunes from it on the digit scenes."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cli_testutil import cli
from deltaprop import backend, darknet

pytest.importorskip("PIL", reason="the digit scenes are images (Pillow, the images extra)")

CFG = Path(darknet.__file__).resolve().parent.parent / "cfg" / "digits-tiny.cfg"


def fake_digits(n):
    x = np.zeros((n, 28, 28), np.uint8)
    y = np.arange(n) % 10
    for i, k in enumerate(y):
        x[i, 4:24, 4 + k:8 + k] = 255
    return x, y


def test_fine_tune_from_a_conv_n_file(tmp_path):
    from deltaprop.data.digits import DigitScenes, write_digit_scenes
    data = write_digit_scenes(tmp_path / "set", DigitScenes(train=4, test=2, size=64, digit_min=14, digit_max=30,
                                                            max_digits=2), fake_digits(20), fake_digits(10), workers=1)
    cfg = tmp_path / "digits-tiny-64.cfg"
    cfg.write_text(re.sub(r"burn_in=\d+", "burn_in=0", CFG.read_text()).replace("width=128", "width=64")
                   .replace("height=128", "height=64"))
    backend.manual_seed(1)
    pretrained = darknet.load(cfg)
    darknet.save_weights(pretrained, tmp_path / "digits-tiny.conv.12", upto=12)     # the backbone: layers 0..11
    backend.manual_seed(2)
    net = darknet.load(cfg, tmp_path / "digits-tiny.conv.12")
    assert net.weights_report.message == (f"loaded layers 0..11 of 24 from {tmp_path / 'digits-tiny.conv.12'}; "
                                          f"the rest start fresh")
    assert np.array_equal(net.layers[10].weight.data, pretrained.layers[10].weight.data)
    assert not np.array_equal(net.layers[12].weight.data, pretrained.layers[12].weight.data)
    rc, out, err = cli("detector", "train", data, cfg, tmp_path / "digits-tiny.conv.12", "--max-batches", "2",
                       "--batch", "2", "--subdivisions", "1", "--workers", "0", "--save-every", "0",
                       "--backup", tmp_path / "backup", "--no-progress")
    assert rc == 0, err
    final = tmp_path / "backup" / f"{cfg.stem}_final.weights"
    tuned = darknet.load(cfg, final)
    assert tuned.seen == 4 and tuned.weights_report.message is None
    # trained from the file's backbone: two steps move layer 0 away from it, far less than another start differs
    start, now = pretrained.layers[0].weight.data, tuned.layers[0].weight.data
    backend.manual_seed(3)
    fresh = darknet.load(cfg).layers[0].weight.data
    assert 0 < np.abs(now - start).mean() < 0.3 * np.abs(fresh - start).mean()
