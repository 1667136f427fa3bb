"""The deltaprop command: --help everywhere, train/eval/predict smoke runs on a tiny MNIST, gradcheck."""
import sys
import types

import numpy as np
import pytest
from cli_testutil import write_tiny_mnist

from deltaprop import io
from deltaprop.cli import main


@pytest.mark.parametrize("cmd,words", [
    ("train", ["--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--momentum", "--weight-decay",
               "--seed", "--out", "--resume", "--data", "--val-split", "--patience", "--limit", "--cfg",
               "--weights", "--clear", "lenet if registered"]),
    ("eval", ["MODEL.npz", "--data", "--split", "--limit"]),
    ("predict", ["MODEL.npz", "IMAGE", "--index", "--top", "--invert"]),
    ("gradcheck", ["--only", "--tol"]),
])
def test_help(capsys, cmd, words):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in out, (cmd, w)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A tiny learnable MNIST (tests/cli_testutil.py) gzipped as the real files are: these smoke runs need the
    format, not the data set, so they run on any clone."""
    import gzip
    d = write_tiny_mnist(tmp_path_factory.mktemp("mnist"))
    for f in list(d.iterdir()):
        with open(f, "rb") as src, gzip.open(f"{f}.gz", "wb") as dst:
            dst.write(src.read())
        f.unlink()
    return str(d)


def _train(out, mnist_dir, *extra):
    return main(["train", "--model", "mlp", "--limit", "300", "--batch-size", "32", "--out", str(out),
                 "--data", mnist_dir, "--no-progress", *extra])


def test_train_eval_predict(tmp_path, mnist_dir, capsys):
    assert _train(tmp_path / "run", mnist_dir, "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "test accuracy:" in out
    for f in ("last.npz", "best.npz", "model.npz", "history.jsonl", "result.json"):
        assert (tmp_path / "run" / f).is_file(), f
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 2

    assert main(["eval", str(tmp_path / "run" / "model.npz"), "--data", mnist_dir, "--limit", "200"]) == 0
    assert "test accuracy" in capsys.readouterr().out

    Image = pytest.importorskip("PIL.Image")
    from deltaprop.data import load_mnist
    imgs, labels = load_mnist(mnist_dir, "test")
    big = np.kron(255 - imgs[0], np.ones((3, 3), np.uint8))        # a dark-on-white 84x84 digit
    Image.fromarray(big).save(tmp_path / "seven.png")
    assert main(["predict", str(tmp_path / "run" / "model.npz"), str(tmp_path / "seven.png"),
                 f"{mnist_dir}/t10k-images-idx3-ubyte.gz", "--index", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(tmp_path / "seven.png"))
    assert all(line.count("%") == 3 for line in lines)
    assert "gz[1]:" in lines[2]

    assert main(["predict", str(tmp_path / "run" / "model.npz"), f"{mnist_dir}/t10k-labels-idx1-ubyte.gz"]) == 1
    assert "not an image stack" in capsys.readouterr().err


def test_resume_via_cli_matches_one_run(tmp_path, mnist_dir, capsys, monkeypatch):
    assert _train(tmp_path / "a", mnist_dir, "--epochs", "2") == 0
    import deltaprop.training.supervised as T
    line = T.epoch_line

    def interrupt_after_first_epoch(rec, epochs):   # Ctrl-C right after epoch 1's checkpoint
        if rec["epoch"] == 1:
            raise KeyboardInterrupt
        return line(rec, epochs)
    monkeypatch.setattr(T, "epoch_line", interrupt_after_first_epoch)
    assert _train(tmp_path / "b", mnist_dir, "--epochs", "2") == 130
    monkeypatch.setattr(T, "epoch_line", line)
    assert not (tmp_path / "b" / "model.npz").exists()
    assert main(["train", "--resume", str(tmp_path / "b" / "last.npz"), "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().out
    a = io.read_checkpoint(tmp_path / "a" / "model.npz").model_state
    b = io.read_checkpoint(tmp_path / "b" / "model.npz").model_state
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_eval_rejects_corrupt_file(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 garbage")
    assert main(["eval", str(tmp_path / "bad.npz")]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_unknown_model(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "nosuchnet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "nosuchnet" in err and "lenet" in err and "mlp" in err


def test_gradcheck_table(capsys):
    assert main(["gradcheck", "--only", "Linear", "ReLU", "CrossEntropyLoss"]) == 0
    out = capsys.readouterr().out
    assert "Linear [4->3]" in out and "CrossEntropyLoss" in out and "FAIL" not in out and "PASS" in out


def test_gradcheck_fails_on_a_wrong_backward(monkeypatch, capsys):
    from deltaprop import nn
    monkeypatch.setattr(nn.Tanh, "_bwd", staticmethod(lambda dy, cache: dy * 2.0))
    assert main(["gradcheck", "--only", "Tanh"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_train_cfg_dispatches_to_darknet_trainer(monkeypatch, tmp_path):
    seen = {}
    fake = types.ModuleType("deltaprop.darknet.trainer_cli")

    def run(args):
        seen["cfg"], seen["weights"], seen["clear"] = args.cfg, args.weights, args.clear
        return 0
    fake.run = run
    import deltaprop.darknet as darknet_pkg
    monkeypatch.setitem(sys.modules, "deltaprop.darknet.trainer_cli", fake)
    monkeypatch.setattr(darknet_pkg, "trainer_cli", fake, raising=False)
    assert main(["train", "--cfg", "x.cfg", "--weights", "w.weights", "--clear"]) == 0
    assert seen == {"cfg": "x.cfg", "weights": "w.weights", "clear": True}


def test_gradcheck_covers_every_class(capsys):
    from deltaprop import nn
    from deltaprop.commands.gradcheck import discover
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    layers, losses = discover(nn)
    assert "Linear" in layers and "CrossEntropyLoss" in losses and "Module" not in layers
    table = {line.split()[0] for line in out.splitlines() if line and not line.startswith("-")}
    assert set(layers + losses) <= table
    assert "FAIL" not in out and "ERROR" not in out


def test_docs_cli_md_names_every_subcommand_and_option():
    """docs/cli.md documents every option of every subcommand (a new option must be added there)."""
    import argparse
    from pathlib import Path

    from deltaprop.cli import build_parser
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sp in action.choices.items():
                    yield f"{name} {sub}".strip(), None
                    yield from walk(sp, f"{name} {sub}".strip())
            else:
                for opt in action.option_strings:
                    if opt not in ("-h", "--help"):
                        yield name, opt
    missing = [(cmd, opt) for cmd, opt in walk(build_parser(), "")
               if (opt is None and f"`{cmd}" not in doc) or (opt and f"`{opt}" not in doc)]
    assert not missing, missing
