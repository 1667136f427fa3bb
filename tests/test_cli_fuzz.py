"""Issue 16's fuzz test of the command line: hypothesis draws option values (numbers in and out of range,
``nan``, text, paths of every kind: missing, a directory, the wrong kind of file, a path under a regular file),
drops or adds positional arguments, for every subcommand, and runs ``deltaprop.cli.main`` in-process. No run
may end in a traceback or an "internal error" (an exception that is not the project's), exit with a status
other than 0, 1 or 2, leave a temporary file of an interrupted write, or, when it fails, change or add any
file. Each example starts from a fresh copy of one small world (a tiny MNIST, a trained MLP and its
checkpoint, Darknet classifier and detector weights, pictures, a digit-scene detection set, odd files), with
the working directory inside it, no network (MNIST downloads fail at once) and a small Darknet memory budget
(so a drawn ``--width 99999999`` is refused, not allocated). Derandomized: the same examples on every run;
``DELTAPROP_CLI_FUZZ=N`` draws N random examples per subcommand instead."""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st  # noqa: E402

from cli_testutil import cli, leftovers, snapshot, write_tiny_mnist  # noqa: E402
from conftest import fixture_dir  # noqa: E402
from darknet_testutil import seeded_weights  # noqa: E402

TINY_YOLO = fixture_dir("darknet", "reference", "tiny_yolo", "tiny_yolo.cfg")
_RANDOM = int(os.environ.get("DELTAPROP_CLI_FUZZ", "0") or 0)


def fuzz(examples: int):
    """Hypothesis settings: ``examples`` derandomized examples (or $DELTAPROP_CLI_FUZZ random ones); no
    shrinking (each example is a whole command; the failing line is printed as drawn)."""
    return settings(max_examples=_RANDOM or examples, deadline=None, derandomize=not _RANDOM, database=None,
                    suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))


# --- the world every example starts from ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The small world, built once; each example works on a copy of it."""
    import deltaprop.data.mnist as mnist
    from PIL import Image

    from deltaprop import darknet
    base = tmp_path_factory.mktemp("cli_fuzz") / "world"
    data = write_tiny_mnist(base / "mnist", n_train=60, n_test=20)
    rc, _, err = cli("train", "--model", "mlp", "--data", data, "--out", base / "run", "--limit", "40",
                     "--epochs", "1", "--batch-size", "20", "--no-progress")
    assert rc == 0, err
    net = darknet.load("mnist-tiny")
    seeded_weights(net, 1)
    darknet.save_weights(net, base / "cls.weights")
    yolo = darknet.load(TINY_YOLO)
    seeded_weights(yolo, 3)
    darknet.save_weights(yolo, base / "yolo.weights")
    shutil.copy(TINY_YOLO, base / "yolo.cfg")
    text = Path(TINY_YOLO).read_text().replace("classes=2", "classes=10").replace("filters=21", "filters=45")
    (base / "digits.cfg").write_text(text)           # the same net for the digit scenes' 10 classes
    darknet.save_weights(darknet.load(base / "digits.cfg"), base / "digits.weights")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(base / "img.png")
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(base / "blank.png")
    (base / "notes.txt").write_text("not a model\n")
    (base / "empty.bin").write_bytes(b"")
    (base / "dir").mkdir()
    (base / "dir" / "f").write_text("x")
    rc, _, err = cli("data", "digits", "--out", base / "digits", "--train", "3", "--test", "2", "--size", "32",
                     "--digit-size", "8", "16", "--mnist", data, "--format", "png")
    assert rc == 0, err
    assert mnist.find_mnist(data, download=False)
    return base


# name -> path relative to the world ("" marks a path outside it: missing, or under a regular file)
FILES = {"MODEL": "run/model.npz", "LAST": "run/last.npz", "HISTORY": "run/history.jsonl",
         "RESULT": "run/result.json", "CLSW": "cls.weights", "YW": "yolo.weights", "YCFG": "yolo.cfg",
         "DCFG": "digits.cfg", "DW": "digits.weights",
         "IMG": "img.png", "BLANK": "blank.png", "TEXT": "notes.txt", "EMPTY": "empty.bin", "DIR": "dir",
         "DATA": "mnist", "IDX": "mnist/t10k-images-idx3-ubyte", "DETDATA": "digits/digits.data",
         "TRAINLIST": "digits/train.txt", "MISSING": "no/such/file", "UNDERFILE": "notes.txt/below",
         "NEW": "new/out", "NEWFILE": "new.npz", "NEWW": "new.weights", "NEWONNX": "new.onnx"}

ODD_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
paths = st.one_of(st.sampled_from(sorted(FILES)).map(lambda k: "{" + k + "}"),
                  st.sampled_from(["", "-", ".", "..", "mnist", "mnist-tiny", "yolov3-tiny", "lenet"]), ODD_TEXT)
BAD_NUMBERS = ["0", "-1", "-5", "1.5", "nan", "inf", "-inf", "1e3", "0x10", "", "abc", "--", "99999999999999999999"]


def mostly(good, bad):
    """``good`` three times in four, else ``bad`` (so that most lines get past the parser)."""
    return st.integers(0, 3).flatmap(lambda k: good if k else bad)


def ints(lo: int, hi: int, big: bool = False):
    """Mostly a small valid integer in [lo, hi] (as text), else a value that is often out of range or not a
    number; ``big``: also huge valid values (for options where a huge value is cheap)."""
    bad = [b for b in BAD_NUMBERS if big or b != "99999999999999999999"]
    return mostly(st.integers(lo, hi).map(str), st.one_of(st.integers(-10, 10).map(str), st.sampled_from(bad)))


def numbers(lo: float, hi: float):
    """Mostly a number in [lo, hi] as text, else any float (nan, ±inf, huge) or text."""
    return mostly(st.floats(lo, hi).map(repr), st.one_of(st.floats().map(repr), st.sampled_from(BAD_NUMBERS)))


def flag():
    return st.just(None)      # an option without a value


# per subcommand: (positionals, options, fixed options that keep a valid run cheap: always present)
SPECS = {
    "train": ([], {"--model": st.sampled_from(["mlp", "lenet", "convnet", "convbn", "nosuch", ""]),
                   "--epochs": ints(1, 2), "--batch-size": ints(1, 64, big=True),
                   "--optimizer": st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]),
                   "--lr": numbers(1e-4, 0.5), "--momentum": numbers(0, 1), "--weight-decay": numbers(0, 1),
                   "--schedule": st.sampled_from(["cosine", "step", "none", "poly"]),
                   "--seed": ints(0, 3, big=True), "--out": paths, "--resume": paths, "--data": paths,
                   "--val-split": numbers(0, 1), "--patience": ints(1, 3, big=True),
                   "--limit": ints(1, 40, big=True), "--progress": flag(), "--no-progress": flag(),
                   "--threads": ints(1, 2), "--exist-ok": flag(), "--keep": st.sampled_from(["1", "all", "0", "x"]),
                   "--cfg": paths, "--weights": paths,
                   "--clear": flag(), "--subdivisions": ints(1, 4), "--numerics": st.sampled_from(["darknet", "x"]),
                   "--save-every": ints(1, 3)},
              ["--limit", "40", "--epochs", "1", "--no-progress"]),
    "eval": ([paths], {"--data": paths, "--split": st.sampled_from(["test", "train", "valid"]),
                       "--limit": ints(1, 20, big=True), "--batch-size": ints(1, 64, big=True)}, []),
    "predict": ([paths, paths], {"--index": ints(0, 3, big=True), "--top": ints(1, 12, big=True),
                                 "--invert": st.sampled_from(["auto", "yes", "no", "maybe"])}, []),
    "gradcheck": ([], {"--tol": numbers(1e-9, 1e-3), "--seed": ints(0, 3, big=True),
                       "--only": st.sampled_from(["ReLU", "Linear", "MSELoss", "linear", "Nope", ""])},
                  ["--only", "ReLU"]),
    "explain": ([paths], {"--data": paths, "--split": st.sampled_from(["test", "train", "x"]),
                          "--index": ints(0, 3, big=True), "--class": ints(0, 9, big=True), "--history": paths,
                          "--out": paths, "--no-plot": flag()}, []),
    "summary": ([paths], {"--width": ints(16, 96, big=True), "--height": ints(16, 96, big=True),
                          "--channels": ints(1, 3, big=True)}, []),
    "detect": ([paths], {"--cfg": paths, "--weights": paths, "--random-weights": flag(), "--names": paths,
                         "--thresh": numbers(0, 1), "--nms": numbers(0, 1), "--width": ints(16, 96, big=True),
                         "--height": ints(16, 96, big=True), "--numerics": st.sampled_from(["darknet", "std"]),
                         "--out": paths, "--no-draw": flag()}, []),
    "convert": ([paths, paths], {"--cfg": paths, "--upto": ints(1, 12, big=True)}, []),
    "export": ([paths, paths], {"--cfg": paths, "--weights": paths, "--size": ints(16, 96, big=True),
                                "--batch": ints(1, 3, big=True), "--dynamic-batch": flag(),
                                "--opset": ints(7, 30, big=True), "--no-fold": flag(),
                                "--numerics": st.sampled_from(["darknet", "x"])}, []),
    "data check": ([paths], {"--classes": ints(1, 12, big=True)}, []),
    "data digits": ([], {"--out": paths, "--train": ints(1, 3), "--test": ints(1, 2), "--size": ints(16, 40),
                         "--digit-size": ints(4, 16), "--digits": ints(1, 3), "--noise": numbers(0, 0.5),
                         "--format": st.sampled_from(["jpg", "png", "gif"]), "--seed": ints(0, 3, big=True),
                         "--mnist": paths, "--force": flag()},
                    ["--out", "{NEW}", "--train", "2", "--test", "1", "--size", "32", "--digit-size", "8", "16",
                     "--format", "png"]),
    "anchors": ([paths], {"-n": ints(1, 4), "--size": ints(8, 64), "--classes": ints(1, 12, big=True),
                          "--seed": ints(0, 3, big=True), "--restarts": ints(1, 2),
                          "--skip-bad-labels": flag()}, ["-n", "2", "--restarts", "1", "--size", "32", "32"]),
    "detector train": ([paths, paths], {"--width": ints(32, 64, big=True), "--height": ints(32, 64, big=True),
                                        "--clear": flag(), "--max-batches": ints(1, 2), "--batch": ints(1, 4),
                                        "--subdivisions": ints(1, 2), "--lr": numbers(1e-5, 1e-2),
                                        "--save-every": ints(0, 2), "--log-every": ints(1, 2), "--map": flag(),
                                        "--map-every": ints(1, 2), "--map-images": ints(1, 2),
                                        "--backup": paths, "--workers": ints(0, 1), "--seed": ints(0, 3),
                                        "--skip-bad-labels": flag(), "--keep": st.sampled_from(["1", "3", "all", "0", "x"]),
                                        "--exist-ok": flag()},
                       ["--max-batches", "1", "--workers", "0", "--no-progress"]),
    "detector test": ([paths, paths, paths, paths], {"--thresh": numbers(0, 1), "--nms": numbers(0, 1),
                                                     "--width": ints(16, 64, big=True),
                                                     "--height": ints(16, 64, big=True), "--out": paths,
                                                     "--scale": ints(1, 2), "--no-draw": flag()}, []),
    "detector map": ([paths, paths, paths], {"--thresh": numbers(0, 1), "--nms": numbers(0, 1),
                                             "--batch": ints(1, 4, big=True), "--limit": ints(1, 2, big=True),
                                             "--json": paths}, []),
    "detector valid": ([paths, paths, paths], {"--thresh": numbers(0, 1), "--out": paths,
                                               "--coco-ids": flag()}, []),
    "info": ([], {"--json": flag()}, []),
}
CHECKERS = {"gradcheck", "data"}        # exit 1 when they find a problem, listed on stdout (not an error line)
TWO_VALUES = {"--digit-size", "--digits", "--size"}     # options taking two numbers (data digits, anchors)
# the positionals that make a run valid (drawn often, so that the options are reached)
GOOD = {"eval": ["{MODEL}"], "predict": ["{MODEL}", "{IMG}"], "explain": ["{MODEL}"], "summary": ["{YCFG}"],
        "detect": ["{IMG}"], "convert": ["{CLSW}", "{NEWFILE}"], "export": ["{MODEL}", "{NEWONNX}"],
        "data check": ["{DETDATA}"],
        "anchors": ["{DETDATA}"], "detector train": ["{DETDATA}", "{DCFG}"],
        "detector test": ["{DETDATA}", "{DCFG}", "{DW}", "{IMG}"], "detector map": ["{DETDATA}", "{DCFG}", "{DW}"],
        "detector valid": ["{DETDATA}", "{DCFG}", "{DW}"]}
GOOD_OPTIONS = {"detect": ["--cfg", "{YCFG}", "--weights", "{YW}"], "convert": ["--cfg", "mnist-tiny"],
                "explain": ["--data", "{DATA}"], "eval": ["--data", "{DATA}"]}


@st.composite
def command_lines(draw, name: str):
    """A command line of subcommand ``name``: positionals (valid ones most of the time, else drawn, dropped
    or one extra), then options drawn from its table in any order, some twice."""
    positionals, options, fixed = SPECS[name]
    argv = name.split()
    good = GOOD.get(name, [])
    pos = list(good) if good and draw(st.integers(0, 2)) else [draw(p) for p in positionals]
    if pos and draw(st.integers(0, 6)) == 0:
        pos.pop(draw(st.integers(0, len(pos) - 1)))
    if draw(st.integers(0, 8)) == 0:
        pos.append(draw(paths))
    opts = list(GOOD_OPTIONS.get(name, [])) if draw(st.integers(0, 2)) else []
    for opt in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)):
        opts.append(opt)
        if draw(options[opt]) is None:
            continue
        for _ in range(2 if opt in TWO_VALUES and (name != "anchors" or opt == "--size") else 1):
            opts.append(draw(options[opt]))
    return argv + pos + list(fixed) + opts


@contextlib.contextmanager
def offline(monkeypatch):
    """No network: every MNIST download attempt fails as an unreachable mirror would."""
    import deltaprop.data.mnist as mnist

    def no_network(url, timeout):
        raise OSError(f"network disabled in this test ({url})")
    with monkeypatch.context() as m:
        m.setattr(mnist, "_fetch", no_network)
        yield


_counter = itertools.count()


def run_one(pristine: Path, argv: list, monkeypatch) -> None:
    """Run ``argv`` (its {NAMES} resolved in a fresh copy of the world) and check the issue's promises."""
    from deltaprop import darknet
    work = pristine.parent / f"ex{next(_counter)}"
    shutil.copytree(pristine, work)
    names = {k: str(work / v) for k, v in FILES.items()}
    line = [a.format(**names) if a.startswith("{") and a.endswith("}") and a[1:-1] in names else a for a in argv]
    before = snapshot(work)
    with offline(monkeypatch), monkeypatch.context() as m:
        m.chdir(work)
        m.setenv("DELTAPROP_DATA", names["DATA"])
        m.setattr(darknet.network, "_budget", 64 * 2 ** 20)
        rc, out, err = cli(*line)
    event(f"exit status {rc}")
    if os.environ.get("DELTAPROP_CLI_FUZZ_SHOW"):
        print(f"\n{rc} {' '.join(argv)}\n   {(err.strip().splitlines() or [''])[-1][:300]}")
    shown = f"deltaprop {' '.join(map(repr, line))}\nrc={rc}\nstdout: {out[-800:]}\nstderr: {err[-1500:]}"
    assert rc in (0, 1, 2), shown
    assert "Traceback" not in err and "internal error" not in err, shown
    assert not leftovers(work), shown
    if rc != 0:
        assert "error" in err or (rc == 1 and argv[0] in CHECKERS), shown
        assert snapshot(work) == before, shown
    shutil.rmtree(work, ignore_errors=True)


def _test(name: str, examples: int):
    @fuzz(examples)
    @given(argv=command_lines(name))
    def test(pristine, monkeypatch, argv):
        run_one(pristine, argv, monkeypatch)
    test.__name__ = f"test_fuzz_{name.replace(' ', '_')}"
    test.__doc__ = f"``deltaprop {name}`` with drawn options: no traceback, no partial or changed file."
    return test


# examples per subcommand: the whole file takes about 20 s of CPU (under 30 s on a quiet 2-core machine)
EXAMPLES = {"train": 20, "eval": 15, "predict": 15, "gradcheck": 6, "explain": 8, "summary": 15, "detect": 15,
            "convert": 15, "export": 12, "data check": 10, "data digits": 12, "anchors": 12, "detector train": 8,
            "detector test": 10, "detector map": 8, "detector valid": 8, "info": 2}
for _name, _n in EXAMPLES.items():
    globals()[f"test_fuzz_{_name.replace(' ', '_')}"] = _test(_name, _n)


def test_every_subcommand_is_fuzzed():
    """A new subcommand must get a line in SPECS (the table above)."""
    from deltaprop.cli import COMMANDS
    assert {n.split()[0] for n in SPECS} == set(COMMANDS)
    assert set(EXAMPLES) == set(SPECS)
