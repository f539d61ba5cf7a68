"""Learning-rate schedules: linear warm-up, then cosine decay (or constant).

Update ``u`` (1-based, ``u = 1 .. steps``) uses ``lr * lr_factor(u - 1, ...)``. The factor rises linearly
over the first ``warmup_steps`` updates to 1 (``1/W, 2/W, .., 1``), then follows a half cosine from 1
at update ``W + 1`` towards ``min_lr_ratio``, which it reaches at step index ``steps`` (one past the
last update, so the last update still learns).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from magphase.config.training import TrainSettings


def lr_factor(
    step_index: int,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate for 0-based update ``step_index``.

    Args:
        step_index: updates already done (0 for the first update).
        total_steps: updates in the whole run.
        warmup_steps: length of the linear warm-up (0: none).
        schedule: ``"cosine"`` or ``"constant"`` after the warm-up.
        min_lr_ratio: the cosine's final value.
    Returns:
        A factor in ``[min_lr_ratio, 1]`` (during warm-up in ``(0, 1]``).
    """
    if step_index < warmup_steps:
        return (step_index + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step_index - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_lr_lambda(settings: TrainSettings) -> Callable[[int], float]:
    """The factor as a plain function of the step index, for :class:`torch.optim.lr_scheduler.LambdaLR`.

    A closure (not a callable object) on purpose: ``LambdaLR.state_dict`` then stores nothing about it,
    so a resumed run with a longer ``steps`` uses the new horizon instead of the checkpoint's.
    """
    total, warm, kind, floor = settings.steps, settings.warmup_steps, settings.schedule, settings.min_lr_ratio

    def factor(step_index: int) -> float:
        return lr_factor(step_index, total_steps=total, warmup_steps=warm, schedule=kind, min_lr_ratio=floor)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor` to every parameter group's own base learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, make_lr_lambda(settings))


__all__ = ["build_scheduler", "lr_factor", "make_lr_lambda"]
