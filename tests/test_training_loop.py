"""deltaprop.training: the one loop and its callbacks on a small counting task (Ctrl-C, checkpoints and --keep,
progress lines with the ETA, evaluation and early stopping, the chart, the folder lock), and Darknet's
multi-scale rule."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deltaprop.errors import ConfigError, DivergenceError
from deltaprop.training import (Chart, Checkpoints, DivergenceGuard, Evaluation, FolderLock, History, Loop,
                                MultiScale, Progress, ResumeCommand, RunLock, StepOutput, StopRequest, Task,
                                TrainingInterrupted, darknet_range, run_directory)
from deltaprop.training import multiscale


class Counting(Task):
    """``total`` updates; update k has the loss ``losses[k]`` (default 1/(k+1)); each checkpoint is a JSON file
    ``<role>[_n].json`` of the step and the loop's state; ``stop_at``: a real SIGINT after that update."""

    def __init__(self, out: Path = None, total: int = 10, losses=None, stop_at: int = None, start: int = 0):
        self.out, self.total_steps, self.steps_done = out, total, start
        self.losses = losses or [1.0 / (k + 1) for k in range(total)]
        self.stop_at = stop_at
        self.saved = []

    def done(self):
        return self.steps_done >= self.total_steps

    def next_batch(self):
        return self.steps_done

    def forward_backward(self, k):
        return StepOutput(self.losses[k], 4, {"k": k})

    def update(self, out):
        self.steps_done += 1
        if self.stop_at == self.steps_done:
            signal.raise_signal(signal.SIGINT)

    def diverged(self, out):
        return DivergenceError(f"step {self.steps_done + 1}: the loss is {out.loss}; layer 'x'")

    def save(self, role, number, loop):
        path = self.out / (f"{role}_{number}.json" if role == "numbered" else f"{role}.json")
        path.write_text(json.dumps({"step": self.steps_done, **loop.state_dict()}))
        self.saved.append(path.name)
        return path

    def numbered_checkpoints(self):
        return {int(p.stem.split("_")[1]): [p] for p in self.out.glob("numbered_*.json")}


def test_checkpoints_every_n_keep_and_the_end(tmp_path):
    task = Counting(tmp_path, total=10)
    Loop(task, [Checkpoints(every=2, keep=2)], log=None).run()
    assert sorted(p.name for p in tmp_path.glob("numbered_*")) == ["numbered_6.json", "numbered_8.json"]
    assert task.saved[:4] == ["numbered_2.json", "last.json", "numbered_4.json", "last.json"]
    assert task.saved[-2:] == ["last.json", "final.json"] and "numbered_10.json" not in task.saved
    assert json.loads((tmp_path / "final.json").read_text())["step"] == 10
    with pytest.raises(ValueError, match="keep"):
        Checkpoints(keep=0)


def test_ctrl_c_saves_names_the_checkpoint_and_prints_the_resume_command(tmp_path, capsys):
    task = Counting(tmp_path, total=10, stop_at=3)
    with pytest.raises(TrainingInterrupted) as e:
        Loop(task, [Checkpoints(every=5), ResumeCommand(lambda p: f"resume {p}")], log=None).run()
    assert e.value.checkpoint == tmp_path / "last.json" and e.value.batch == 3
    assert json.loads((tmp_path / "last.json").read_text())["step"] == 3       # the batch boundary after update 3
    err = capsys.readouterr().err
    assert f"interrupted at batch 3 of 10: the state is saved in {tmp_path / 'last.json'}" in err
    assert f"continue with:\n  resume {tmp_path / 'last.json'}" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # the handler is given back


def test_a_second_ctrl_c_stops_at_once():
    stop = StopRequest()
    with stop.active():
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_divergence_stops_before_the_update():
    task = Counting(total=5, losses=[1.0, 0.5, float("nan"), 0.1, 0.1])
    with pytest.raises(DivergenceError, match="step 3: the loss is nan"):
        Loop(task, [DivergenceGuard()], log=None).run()
    assert task.steps_done == 2


def test_progress_lines_end_with_the_eta_when_there_is_no_terminal():
    lines = []
    task = Counting(total=9)
    Loop(task, [Progress(bar=False, every=3)], log=lines.append).run()
    assert [line.split(":")[0] for line in lines] == ["3", "6", "9"]
    assert "ETA" in lines[0] and "ETA" in lines[1] and "ETA" not in lines[2]        # none after the last
    lines.clear()
    Loop(Counting(total=9), [Progress(bar=False, every=3, min_interval=3600)], log=lines.append).run()
    assert lines == []                      # throttled: no line sooner than min_interval


def test_evaluation_keeps_the_best_writes_it_and_stops_early(tmp_path):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    task = Counting(tmp_path, total=12)
    said = []
    ev = Evaluation(lambda: {"acc": next(scores)}, monitor="acc", mode="max", every=2, patience=3,
                    announce=lambda n, v, path: f"{n}: {v['acc']}" + (" best" if path else ""))
    hist = Loop(task, [History(tmp_path / "h.jsonl"), ev, Checkpoints()], log=said.append).run()
    assert [r["acc"] for r in hist] == [0.5, 0.7, 0.6, 0.65, 0.69]      # 3 without improvement: stop at 10
    assert task.steps_done == 10 and ev.best == 0.7
    assert said[:3] == ["2: 0.5 best", "4: 0.7 best", "6: 0.6"] and said[-1].startswith("early stop: acc")
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 4
    assert [json.loads(line)["batch"] for line in (tmp_path / "h.jsonl").read_text().splitlines()] == [2, 4, 6, 8, 10]


def test_the_chart_is_drawn_at_evaluations_on_ctrl_c_and_at_the_end(tmp_path):
    drawn = []

    def draw(history, path, title):
        drawn.append(len(history))
        return path
    task = Counting(tmp_path, total=10, stop_at=7)
    parts = [History(None, every=1), Evaluation(lambda: {"map50": 0.5}, monitor="map50", every=3),
             Chart(tmp_path / "c.png", draw=draw, interval=3600)]
    with pytest.raises(TrainingInterrupted):
        Loop(task, parts, log=None).run()
    assert drawn == [4, 8, 9]                 # after each evaluation record (3, 6), and on Ctrl-C
    drawn.clear()
    Loop(Counting(tmp_path, total=4), [History(None, every=1),
                                        Chart(tmp_path / "c.png", draw=draw, interval=0)], log=None).run()
    assert drawn == [2, 3, 4, 4]              # live (interval 0: every record, once there is a curve), at the end


def test_callback_state_goes_into_checkpoints_and_comes_back(tmp_path):
    task = Counting(tmp_path, total=4)
    ev = Evaluation(lambda: {"acc": 0.3}, monitor="acc", every=2)
    Loop(task, [ev, Checkpoints()], log=None).run()
    state = json.loads((tmp_path / "last.json").read_text())
    assert state["callbacks"]["evaluation"] == {"best": 0.3, "bad": 1}
    again = Evaluation(lambda: {"acc": 0.2}, monitor="acc", every=2)
    Loop(Counting(tmp_path, total=6, start=4), [again], log=None, state=state).run()
    assert again.best == 0.3 and again.bad == 2


# --- the run folder -----------------------------------------------------------------------------------------

def test_lock_refuses_a_live_run_nests_in_one_process_and_takes_over_a_dead_ones(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder):
        with RunLock(folder):                      # the command line's, then the loop's: one process, nested
            pass
        assert (folder / ".lock").is_file()         # the outer hold keeps it
    assert not (folder / ".lock").exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".lock").write_text(f"{sleeper.pid} {socket.gethostname()}\n")
        with pytest.raises(ConfigError, match=f"another run \\(pid {sleeper.pid}\\)"):
            Loop(Counting(folder), [FolderLock(folder)], log=None).run()
    finally:
        sleeper.kill()
        sleeper.wait()
    (folder / ".fake.json.x1.tmp").write_text("half")           # left by a run killed while writing
    Loop(Counting(folder, total=2), [FolderLock(folder)], log=None).run()   # the dead pid's lock is taken over
    assert not (folder / ".lock").exists() and not list(folder.glob(".*.tmp"))


def test_run_directory_numbers_a_used_folder(tmp_path):
    assert run_directory(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert run_directory(tmp_path / "used") == tmp_path / "used-2"
    assert run_directory(tmp_path / "used", exist_ok=True) == tmp_path / "used"


# --- Darknet's multi-scale rule -----------------------------------------------------------------------------

def test_multiscale_is_darknets_rule_cited_to_its_line():
    """pjreddie's detector.c: ``if(l.random && count++%10 == 0)``, ``dim = (rand() % 10 + 10) * 32``, 608 when
    fewer than 200 batches remain: at 416 exactly the ten sizes 320..608; other cfgs keep the ratios."""
    assert "examples/detector.c lines 63-66" in multiscale.__doc__ and "(rand() % 10 + 10) * 32" in multiscale.__doc__
    assert darknet_range(416) == (320, 608) and darknet_range(128) == (96, 192) and darknet_range(32) == (32, 32)
    rule = MultiScale((416, 416), rng=np.random.default_rng(0))
    asked = [rule.next_size(b, 100_000) for b in range(2000)]
    new = [k for k, s in enumerate(asked) if s is not None]
    assert new == list(range(0, 2000, 10))                                   # count++ % 10 == 0
    widths = [asked[k][0] for k in new]
    assert set(widths) == {32 * k for k in range(10, 20)} and all(asked[k][1] == asked[k][0] for k in new)
    counts = np.bincount([(w - 320) // 32 for w in widths], minlength=10)
    assert counts.min() > 8                                                   # uniform over the ten sizes
    rule.count = 2001
    assert rule.next_size(100_000 - 150, 100_000) is None                    # not a 10th batch
    rule.count = 0
    assert rule.next_size(100_000 - 150, 100_000) == (608, 608)              # the last 200 batches: the largest
    wide = MultiScale((416, 224), rng=np.random.default_rng(1))
    w, h = wide.next_size(0, 10_000)
    assert w % 32 == 0 and h % 32 == 0 and abs(h / w - 224 / 416) < 0.1       # the aspect ratio kept
    with pytest.raises(ConfigError, match="multiples of 32"):
        MultiScale((416, 416), (300, 608))


def test_multiscale_draws_again_after_a_resume():
    a = MultiScale((128, 128), rng=np.random.default_rng(7))
    first = [a.next_size(b, 10_000) for b in range(25)]
    state = a.state_dict()
    rest = [a.next_size(b, 10_000) for b in range(25, 60)]
    b = MultiScale((128, 128), rng=np.random.default_rng(99))
    b.load_state_dict(json.loads(json.dumps(state)))
    assert [b.next_size(k, 10_000) for k in range(25, 60)] == rest
    assert {s for s in first + rest if s is not None} <= {(w, w) for w in (96, 128, 160, 192)}


def test_the_detector_trainer_uses_the_rule(tmp_path):
    """A cfg with random=1: DarknetTrainer's sizes are the rule's range for its width (64: 64..96)."""
    import deltaprop
    import deltaprop.darknet as dn
    from darknet_testutil import yolo_section
    from deltaprop.darknet.trainer import DarknetTrainer
    cfg = ("[net]\nbatch=2\nsubdivisions=1\nwidth=64\nheight=64\nchannels=3\nmax_batches=10\n\n"
           "[convolutional]\nfilters=14\nsize=1\nstride=32\nactivation=linear\n\n"
           + yolo_section([0, 1], "4,5, 8,6", 2, random=1))
    deltaprop.manual_seed(0)
    tr = DarknetTrainer(dn.load_cfg_text(cfg))
    assert tr.multiscale == darknet_range(64) == (64, 96)
    assert tr.next_size() == 96                      # fewer than 200 batches left: the largest
