"""The one training loop and its callbacks (docs/training.md#the-loop).

``Loop(task, callbacks).run()``: a task does the updates (``SupervisedTask`` for ``deltaprop.train.fit``; the
Darknet trainer's and the detector's tasks live in ``darknet.trainer`` and ``detect.train``); each callback is one
concern, in its own module:

- ``progress.Progress``: a progress bar on a terminal, else log lines with the ETA;
- ``history.History``: ``history.jsonl``;
- ``checkpoints.Checkpoints``: last/best/final and numbered checkpoints (``keep`` bounds them), each one file;
- ``resume.ResumeCommand`` (with ``interrupt.StopRequest``): Ctrl-C saves and prints the command that resumes;
- ``divergence.DivergenceGuard``: a NaN/inf loss names the step and the first non-finite layer;
- ``multiscale.MultiScaleCallback``: Darknet's ``random=1`` rule;
- ``evaluation.Evaluation``: accuracy or mAP every N updates or each epoch, the best checkpoint, early stopping;
- ``chart.Chart``: ``chart.png``, redrawn at evaluations, live, on Ctrl-C and at the end;
- ``lock.FolderLock``: the run folder's lock (``lock.run_directory`` numbers a used folder).

The rank guard is ``distributed.failure_guard`` around the whole loop.
"""
from .chart import CHART, Chart
from .checkpoints import Checkpoints
from .divergence import DivergenceGuard, diagnose_nonfinite, first_nonfinite_layer
from .evaluation import Evaluation
from .history import HISTORY, History, read_history
from .interrupt import StopRequest, TrainingInterrupted
from .lock import FolderLock, RunLock, run_directory
from .loop import Callback, Loop, StepOutput, Task
from .multiscale import MultiScale, MultiScaleCallback, darknet_range
from .progress import Progress, duration, on_terminal
from .resume import ResumeCommand

__all__ = ["Loop", "Task", "Callback", "StepOutput", "StopRequest", "TrainingInterrupted", "Progress", "History",
           "Checkpoints", "ResumeCommand", "DivergenceGuard", "MultiScale", "MultiScaleCallback", "Evaluation",
           "Chart", "FolderLock", "RunLock", "run_directory", "darknet_range", "diagnose_nonfinite",
           "first_nonfinite_layer", "read_history", "duration", "on_terminal", "HISTORY", "CHART"]
