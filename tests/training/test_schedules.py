"""Learning-rate schedule values and TrainSettings validation."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from magphase.config.training import TrainSettings
from magphase.training.schedules import build_scheduler, lr_factor


def test_warmup_is_linear_then_cosine_reaches_min() -> None:
    total, warm, floor = 20, 4, 0.1
    f = [lr_factor(i, total_steps=total, warmup_steps=warm, min_lr_ratio=floor) for i in range(total + 1)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0)  # the cosine starts at its peak right after warm-up
    mid = warm + (total - warm) // 2
    assert f[mid] == pytest.approx(floor + (1 - floor) * 0.5)  # half-way through the cosine
    assert f[total] == pytest.approx(floor)
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))  # non-increasing after warm-up
    assert min(f[:total]) > floor  # the last update still learns


def test_cosine_closed_form_and_constant() -> None:
    for i in range(10):
        expected = 0.5 * (1 + math.cos(math.pi * i / 10))
        assert lr_factor(i, total_steps=10) == pytest.approx(expected)
    assert [lr_factor(i, total_steps=10, warmup_steps=2, schedule="constant") for i in range(4)] == [
        0.5,
        1.0,
        1.0,
        1.0,
    ]


def test_scheduler_applies_factor_to_each_group_base_lr() -> None:
    settings = TrainSettings(steps=8, lr=1e-2, warmup_steps=2, min_lr_ratio=0.0)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 1e-3}], lr=settings.lr)
    sched = build_scheduler(opt, settings)
    for i in range(8):
        f = lr_factor(i, total_steps=8, warmup_steps=2)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * f)
        assert opt.param_groups[1]["lr"] == pytest.approx(1e-3 * f)
        opt.step()
        sched.step()


def test_settings_validate_and_resolve() -> None:
    with pytest.raises(ValidationError):
        TrainSettings(stpes=3)  # typo: extra keys are errors
    with pytest.raises(ValidationError):
        TrainSettings(steps=5, warmup_steps=6)
    with pytest.raises(ValidationError):
        TrainSettings(device="gpu0")
    with pytest.raises(ValidationError):
        TrainSettings(betas=(0.9, 1.0))
    with pytest.raises(ValidationError):
        TrainSettings(amp="fp8")
    s = TrainSettings().resolved(seed=5, device="cpu")
    assert (s.seed, s.device) == (5, "cpu")
    s2 = TrainSettings(seed=1, device="cuda").resolved(seed=5, device="cpu")
    assert (s2.seed, s2.device) == (1, "cuda")
