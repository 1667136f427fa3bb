"""Learning-rate schedules against torch.optim.lr_scheduler: the same learning rates, epoch by epoch, for
two parameter groups; JSON-able state dicts that resume exactly; the closed form of step(epoch)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from deltaprop import nn, optim
from deltaprop.errors import StateDictError
from deltaprop.optim import lr_scheduler as S

EPOCHS = 30
LRS = (0.1, 0.01)


def _dp_opt(momentum=0.0):
    groups = [{"params": [nn.Parameter(np.zeros(2))], "lr": lr} for lr in LRS]
    return optim.SGD(groups, lr=1.0, momentum=momentum)


def _torch_opt(torch):
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in LRS]
    return torch.optim.SGD(groups, lr=1.0)


def _lambda(e):
    return 0.95 ** e


CONFIGS = {
    "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
    "linear_warmup": lambda m, o: m.LinearLR(o, start_factor=0.25, total_iters=4),
    "linear_decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=10),
    "lambda": lambda m, o: m.LambdaLR(o, _lambda),
    "warmup_cosine": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=3),
                                                    m.CosineAnnealingLR(o, T_max=10)], milestones=[3]),
    "three_phases": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.5, total_iters=2),
                                                   m.StepLR(o, step_size=2, gamma=0.5),
                                                   m.ExponentialLR(o, gamma=0.8)], milestones=[4, 10]),
}


def _run(sched, opt, n):
    out = [sched.get_last_lr()]
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(sched.get_last_lr())
        assert out[-1] == [g["lr"] for g in opt.param_groups]
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_schedule_matches_torch(name, torch_ref):
    torch = torch_ref
    opt = _dp_opt()
    ours = _run(CONFIGS[name](S, opt), opt, EPOCHS)
    topt = _torch_opt(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _run(CONFIGS[name](torch.optim.lr_scheduler, topt), topt, EPOCHS)
    assert np.allclose(ours, theirs, rtol=1e-13, atol=0), name
    assert len({tuple(r) for r in ours}) > 2                          # the schedule does change the lr


@pytest.mark.parametrize("name", ["step", "multistep", "exponential", "cosine", "linear_warmup"])
def test_step_with_epoch_uses_the_closed_form(name, torch_ref):
    torch = torch_ref
    opt, topt = _dp_opt(), _torch_opt(torch)
    ours, theirs = CONFIGS[name](S, opt), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = CONFIGS[name](torch.optim.lr_scheduler, topt)
        for e in (5, 2, 11):
            ours.step(e)
            topt.step()
            theirs.step(e)
            assert np.allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-13, atol=0), (name, e)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_is_json_and_resumes(name):
    opt = _dp_opt(momentum=0.9)
    sched = CONFIGS[name](S, opt)
    _run(sched, opt, 7)
    saved_opt = opt.state_dict()
    saved = json.loads(json.dumps(sched.state_dict()))                 # JSON-able: Python scalars and lists
    rest = _run(sched, opt, 10)
    opt2 = _dp_opt(momentum=0.9)
    sched2 = CONFIGS[name](S, opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    assert sched2.get_last_lr() == rest[0]
    assert _run(sched2, opt2, 10) == rest


def test_resume_with_last_epoch_needs_initial_lr():
    opt = _dp_opt()
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(opt, step_size=2, last_epoch=3)
    S.StepLR(opt, step_size=2)
    S.StepLR(opt, step_size=2, last_epoch=3)                            # fine once initial_lr is set


def test_bad_scheduler_state_dict_and_arguments():
    opt = _dp_opt()
    sched = S.CosineAnnealingLR(opt, T_max=5)
    sd = sched.state_dict()
    assert set(sd) == {"base_lrs", "last_epoch", "_step_count", "_last_lr", "T_max", "eta_min"}
    with pytest.raises(StateDictError, match="keys"):
        sched.load_state_dict({k: v for k, v in sd.items() if k != "T_max"})
    with pytest.raises(StateDictError, match="2 parameter groups"):
        sched.load_state_dict(dict(sd, base_lrs=[0.1]))
    with pytest.raises(ValueError, match="start_factor"):
        S.LinearLR(opt, start_factor=0.0)
    with pytest.raises(TypeError, match="not an Optimizer"):
        S.StepLR(object(), step_size=1)
    with pytest.raises(ValueError, match="milestones"):
        S.SequentialLR(opt, [S.StepLR(opt, 2), S.StepLR(opt, 3)], milestones=[])


def test_cosine_reaches_eta_min_at_t_max():
    opt = _dp_opt()
    sched = S.CosineAnnealingLR(opt, T_max=4, eta_min=0.002)
    lrs = _run(sched, opt, 4)
    assert lrs[2][0] == pytest.approx(0.002 + (0.1 - 0.002) * (1 + math.cos(math.pi / 2)) / 2)
    assert lrs[4] == pytest.approx([0.002, 0.002])
