"""``deltaprop convert`` with Darknet's partial files as Darknet users name them (``yolov3-tiny.conv.15``, no
``.weights`` extension): written with ``--upto``, read back by their content, the partial load said in one line."""
from __future__ import annotations

import numpy as np

import deltaprop as dp
from deltaprop import darknet
from deltaprop.cli import main


def test_a_partial_file_without_extension_is_written_and_read(tmp_path, capsys):
    dp.manual_seed(3)
    net = darknet.load("mnist-tiny")
    full = tmp_path / "full.weights"
    darknet.save_weights(net, full)
    part = tmp_path / "mnist-tiny.conv.2"
    assert main(["convert", "--cfg", "mnist-tiny", str(full), str(part), "--upto", "2"]) == 0
    assert "the first 2 of" in capsys.readouterr().out
    assert main(["convert", "--cfg", "mnist-tiny", str(part), str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert f"loaded layers 0..1 of {len(net.layers)} from {part}; the rest start fresh" in out
    back = darknet.load("mnist-tiny", part)
    for k in range(2):
        for name, _ in net.layers[k].weight_layout():
            assert np.array_equal(back.layers[k].get_darknet_array(name), net.layers[k].get_darknet_array(name))


def test_a_name_that_is_no_model_file_is_refused_in_one_line(tmp_path, capsys):
    junk = tmp_path / "notes.conv.3"
    junk.write_text("hello\n")
    assert main(["convert", "--cfg", "mnist-tiny", str(junk), str(tmp_path / "m.npz")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected IN/OUT as two of .weights, .npz and .safetensors" in err[0]
