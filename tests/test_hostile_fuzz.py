"""Property tests of the fuzz targets (tests/fuzz/targets.py), bounded to a few seconds each: whatever the
input, each parser either loads it (and writes back the same) or raises the project's own error.
``python3 -m tests.fuzz`` runs the same targets for longer (docs/fuzzing.md); inputs it saved under
tests/fuzz/corpus/ are replayed here."""
from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fuzz.targets import HOSTILE_JSON, TARGETS, run_one  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                   database=None)
_targets = {}


def target(name):
    if name not in _targets:
        _targets[name] = TARGETS[name]()
        run_one(_targets[name], _targets[name].generate(random.Random("warm")))  # compile kernels first
    return _targets[name]


def check(name, data):
    t0 = time.perf_counter()
    outcome = run_one(target(name), data)  # anything but the project's errors escapes and fails
    # a generous bound (a first input may compile kernels); the campaign holds each input to 1 s
    assert time.perf_counter() - t0 < 10.0, f"{name}: one input took over 10 s"
    return outcome


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_generated_inputs(name):
    @BOUNDED
    @given(st.integers(0, 2 ** 32 - 1))
    def prop(seed):
        check(name, target(name).generate(random.Random(f"hypothesis/{name}/{seed}")))
    prop()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_raw_bytes(name):
    @BOUNDED
    @given(st.binary(max_size=300))
    def prop(data):
        check(name, data)
    prop()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_valid_inputs(name):
    """A generated input with a few bytes overwritten by hypothesis' choice (it shrinks the edit)."""
    @BOUNDED
    @given(st.integers(0, 999), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4))
    def prop(seed, edits):
        data = bytearray(target(name).generate(random.Random(f"mutated/{name}/{seed}")))
        for pos, val in edits:
            if data:
                data[pos % len(data)] = val
        check(name, bytes(data))
    prop()


def test_generators_reach_loading_and_errors():
    """The generators are worth running: each target both loads some inputs and refuses others."""
    for name in sorted(TARGETS):
        outcomes = {check(name, target(name).generate(random.Random(f"reach/{name}/{i}"))) for i in range(60)}
        assert "ok" in outcomes and len(outcomes - {"ok"}) >= 1, (name, outcomes)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_an_input_depends_on_its_index_alone(name):
    """Input i comes from ``random.Random(f"{seed}/{target}/{i}")`` alone, whatever the same process generated
    before: the checkpoint generator once put the shared HOSTILE_JSON objects into the metadata and edited
    them in place, so later inputs changed, until a dict held itself and ``json.dumps`` refused it (a
    campaign counted 83,824 of its 100,000 checkpoint inputs)."""
    t = target(name)
    first = [t.generate(random.Random(f"0/{name}/{i}")) for i in range(100)]
    before = repr(HOSTILE_JSON)
    for i in range(300):
        t.generate(random.Random(f"history/{name}/{i}"))
    assert repr(HOSTILE_JSON) == before
    assert [t.generate(random.Random(f"0/{name}/{i}")) for i in range(100)] == first


def test_corpus_replays():
    """Every input a campaign saved (none when it found nothing) now gets the project's error or loads."""
    for path in sorted(CORPUS.glob("*/*.bin")) if CORPUS.is_dir() else []:
        check(path.parent.name, path.read_bytes())
