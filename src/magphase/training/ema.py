"""Exponential moving average (EMA) of a model's weights.

A small class instead of ``torch.optim.swa_utils.AveragedModel`` because the engine needs three things
together: a plain ``state_dict`` that loads with ``torch.load(weights_only=True)``, an explicit start step
(before it the EMA copies the weights, so early random weights do not linger), and buffers (e.g. norm
statistics) copied rather than averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """EMA of the floating-point parameters of ``model``; buffers are copied.

    After completed update ``step``: if ``step <= start_step`` the EMA copies the weights, otherwise
    ``ema = decay * ema + (1 - decay) * weights``.

    Attributes:
        module: the averaged copy of the model (``eval()`` mode, ``requires_grad`` off, same device).
        decay: the averaging factor in ``[0, 1)``.
        start_step: updates before averaging begins.
        num_updates: how many times :meth:`update` ran (checkpointed).
    """

    def __init__(self, model: nn.Module, decay: float, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights of ``model`` (same architecture) in, after completed update ``step``."""
        ema_params = [p for p in self.module.parameters() if p.dtype.is_floating_point]
        new_params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
        if len(ema_params) != len(new_params):
            raise ValueError("EMA.update: model does not match the averaged architecture")
        if step <= self.start_step:
            torch._foreach_copy_(ema_params, new_params)
        else:
            torch._foreach_lerp_(ema_params, new_params, 1.0 - self.decay)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Plain types and tensors only (``weights_only``-loadable)."""
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "num_updates": self.num_updates,
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.decay = float(state["decay"])
        self.start_step = int(state["start_step"])
        self.num_updates = int(state["num_updates"])


__all__ = ["EMA"]
