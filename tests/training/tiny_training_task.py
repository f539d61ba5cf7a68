"""A tiny regression task and dataset shared by the training-engine tests and the torchrun worker script."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from magphase.training import TrainSettings, TrainTaskBase


def tiny_dataset(n: int = 64, seed: int = 7) -> TensorDataset:
    """``n`` items of (x: float32[4], y: float32[1]) with y a fixed smooth function of x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.sin(x @ torch.tensor([[0.5], [-1.0], [0.25], [2.0]])) + 0.1 * x[:, :1]
    return TensorDataset(x, y)


def ddp_parity_settings(steps: int, batch_size: int) -> TrainSettings:
    """Settings of the DDP parity test: the torchrun worker and the single-process reference share them."""
    return TrainSettings(
        steps=steps,
        batch_size=batch_size,
        lr=1e-2,
        warmup_steps=2,
        ema_decay=0.9,
        checkpoint_every=3,
        log_every=2,
        seed=11,
        deterministic=True,
        device="cpu",
    )


class TinyRegression(TrainTaskBase):
    """MLP 4 -> 16 -> 1, mean-squared error. ``input_noise`` > 0 draws torch noise in the loss (tests RNG
    restore on resume); ``nan_at_step`` makes the loss NaN at that update index."""

    def __init__(self, input_noise: float = 0.0, nan_at_step: int | None = None, hidden: int = 16):
        self.input_noise = input_noise
        self.nan_at_step = nan_at_step
        self.hidden = hidden

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y = batch
        if self.input_noise:
            x = x + self.input_noise * torch.randn_like(x)
        pred = model(x).float()
        mse = ((pred - y) ** 2).mean()
        mae = (pred - y).abs().mean()
        loss = mse
        if self.nan_at_step is not None and step == self.nan_at_step:
            loss = loss * float("nan")
        return loss, {"mse": mse.detach(), "mae": mae.detach()}

    def model_config(self) -> dict[str, Any]:
        return {"arch": "mlp", "in": 4, "hidden": self.hidden, "out": 1}
