"""deltaprop/commands/explain.py (``deltaprop explain``), driven through its own parser: tables, PNGs,
--class, --no-plot, a Darknet softmax classifier, bad arguments. The tables and pictures need MNIST from
../shared; the bad arguments are checked on a tiny MNIST-format set written here (no data needed)."""
from __future__ import annotations

import argparse
import json

import pytest

from cli_testutil import write_tiny_mnist
import deltaprop as dp
from deltaprop import io, models
from deltaprop.commands import explain as cmd
from deltaprop.errors import DataError


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    return cmd.run(parser.parse_args(["explain", *argv]))


@pytest.fixture
def mnist(shared_dir):
    return str(shared_dir / "data" / "mnist")


@pytest.fixture
def saved_mlp(tmp_path):
    dp.manual_seed(0)
    path = tmp_path / "model.npz"
    io.save_model(path, models.build("mlp", hidden=(16,)))
    recs = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "train_acc": 0.5 + e / 10,
             "val_acc": 0.45 + e / 10} for e in (1, 2, 3)]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_tables_and_pictures(saved_mlp, mnist, capsys):
    pytest.importorskip("matplotlib")
    assert _run(str(saved_mlp), "--data", mnist, "--index", "0", "3") == 0
    out = capsys.readouterr().out
    assert "test digit 0: label 7, predicted" in out and "test digit 3: label 0" in out
    assert "CrossEntropyLoss of the true labels over 2 digit(s)" in out
    for name in ("input (input)", "0 (Flatten)", "1 (Linear)", "3 (Linear)"):
        assert name in out
    d = saved_mlp.parent / "explain"
    for f in ("sensitivity_test_0.png", "sensitivity_test_3.png", "history.png"):
        assert (d / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f


def test_class_score_and_no_plot(saved_mlp, mnist, tmp_path, capsys):
    assert _run(str(saved_mlp), "--data", mnist, "--class", "3", "--no-plot", "--out", str(tmp_path / "o")) == 0
    out = capsys.readouterr().out
    assert "C = the score of class 3 over 1 digit(s)" in out
    row = next(line for line in out.splitlines() if line.startswith("3 (Linear)"))
    assert row.split()[4] == "1.000e+00"            # δ of the output is the one-hot row: ‖δ‖ = 1
    assert not (tmp_path / "o").exists()


def test_darknet_softmax_classifier_uses_probability_cross_entropy(tmp_path, mnist, capsys):
    from deltaprop import darknet
    dp.manual_seed(1)
    path = tmp_path / "dk.npz"
    io.save_model(path, darknet.load("mnist-tiny", numerics="standard"))
    assert _run(str(path), "--data", mnist, "--no-plot") == 0
    out = capsys.readouterr().out
    assert "ProbabilityCrossEntropyLoss" in out and "(SoftmaxLayer)" in out


def test_bad_arguments(saved_mlp, tmp_path):
    mnist = str(write_tiny_mnist(tmp_path / "mnist", n_train=20, n_test=12))
    assert _run(str(saved_mlp), "--data", mnist, "--index", "11", "--no-plot") == 0     # the last image is fine
    with pytest.raises(DataError, match=r"--index 12 out of range \(MNIST test has 12 images\)"):
        _run(str(saved_mlp), "--data", mnist, "--index", "12")
    with pytest.raises(DataError, match="--index -13 out of range"):
        _run(str(saved_mlp), "--data", mnist, "--index", "-13")
    with pytest.raises(DataError, match="--class 10 out of range"):
        _run(str(saved_mlp), "--data", mnist, "--class", "10")
    with pytest.raises(DataError, match="no such history"):
        _run(str(saved_mlp), "--data", mnist, "--history", str(saved_mlp.parent / "nope.jsonl"))
