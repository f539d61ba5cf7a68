"""Stage ``flow1`` and the flow training task both flow stages share (:class:`FlowTask`).

Stage 1 (paper Sec. 2.3.1) trains the velocity U-Net from scratch on the latent store, conditioned on
the sequence; the sequence is replaced by the null token with probability ``sequence_dropout``.

Stage 2 is :mod:`magphase.stages.flow2`.

Both stages draw a fresh ``z ~ N(mu, sigma^2)`` from the store's posterior every time a latent is
used (``latents="posterior"``), or use ``mu`` (``latents="mean"``); nothing noisy is cached.

Run layout (:class:`magphase.rundir.RunLayout`)::

    RUN/flow/stage1/                  engine run folder: checkpoint.pt, ema.safetensors, snapshots/...
    RUN/flow/stage2/phase1/           engine run folder of phase 1
    RUN/flow/stage2/phase2/           engine run folder of phase 2 (the stage-2 model)
    RUN/flow/stage{1,2}/selected.json optional: the snapshot chosen by model selection
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from magphase.config import MagphaseConfig
from magphase.config.flow import FlowConfig, UNetConfig
from magphase.conventions import (
    LATENT_SHAPE,
    NULL_SEQUENCE,
)
from magphase.data.datasets import LatentFlowDataset, canonical_latents, stage1_sample_weights
from magphase.errors import ConfigError, DataError
from magphase.generative.loss import flow_matching_loss
from magphase.generative.path import TimeSampler, sample_path
from magphase.models.unet import VelocityUNet
from magphase.stages.base import RunContext, Stage, engine_progress
from magphase.training import TrainResult, TrainTaskBase, fit
from magphase.utils.seeds import derived_rng

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- data


def estimate_latent_scale(
    dataset: LatentFlowDataset, latents: str = "posterior", max_items: int = 2048, seed: int = 0
) -> float:
    """``1 / std`` of the training latents the flow sees (posterior draws or ``mu``).

    The flow's noise has unit variance; latents of a much smaller scale (a KL-light autoencoder gives
    std ~ 0.1-0.2) would leave the path noise-dominated until t ~ 0.9, wasting most of the time
    range. Estimated from up to ``max_items`` items (seeded subset); for posterior draws the variance
    is ``var(mu) + mean(exp(logvar))``.
    """
    rng = derived_rng(seed, 0x5CA1E)
    n = len(dataset)
    pick = np.sort(rng.choice(n, size=min(n, max_items), replace=False))
    rows = dataset.indices[pick]
    mu = dataset.store.read("mu", rows).astype(np.float64)
    var = mu.var()
    if latents == "posterior":
        var += np.exp(dataset.store.read("logvar", rows).astype(np.float64)).mean()
    if not var > 0:
        raise DataError(dataset.store.path, "mu", "latents have zero variance: cannot scale them")
    return float(1.0 / np.sqrt(var))


# ------------------------------------------------------------------------------------------ tasks
def _drop(tokens: Tensor, p: float, null: int) -> Tensor:
    if p <= 0:
        return tokens
    mask = torch.rand(tokens.shape, device=tokens.device) < p
    return torch.where(mask, torch.full_like(tokens, null), tokens)


class FlowTask(TrainTaskBase):
    """Shared flow-matching loss of both stages (paper Eq. 3-4).

    Per step: ``z = s * (mu + exp(logvar / 2) * n)`` (or ``s * mu``), ``eps ~ N(0, I)``, ``t ~`` the
    time sampler, ``x_t = (1 - t) eps + t z``; regress ``v(x_t, t, c)`` onto ``z - eps`` in float32.
    ``s = latent_scale`` brings the latents to unit variance, the scale of the noise (the sampler
    divides by it again). All draws use the global torch RNG, which the engine seeds per rank and
    checkpoints.
    """

    stage: int = 0

    def __init__(
        self,
        unet: UNetConfig,
        time_sampler: TimeSampler,
        latent_shape: tuple[int, int, int] = LATENT_SHAPE,
        latents: str = "posterior",
        sequence_dropout: float = 0.1,
        class_dropout: float = 0.0,
        latent_scale: float = 1.0,
        canonical_phase: bool = False,
    ):
        if not (latent_scale > 0 and np.isfinite(latent_scale)):
            raise ConfigError(f"flow.latent_scale must be a positive finite number, got {latent_scale}")
        if latents not in ("posterior", "mean"):
            raise ConfigError(f"flow.latents: expected 'posterior' or 'mean', got {latents!r}")
        self.unet = unet
        self.latent_shape = tuple(latent_shape)
        self.time_sampler = time_sampler
        self.latents = latents
        self.sequence_dropout = sequence_dropout
        self.class_dropout = class_dropout
        self.latent_scale = float(latent_scale)
        self.canonical_phase = bool(canonical_phase)

    def model_config(self) -> dict[str, Any]:
        return {
            "kind": "flow_unet",
            "stage": self.stage,
            "unet": self.unet.model_dump(mode="json"),
            "latent_shape": list(self.latent_shape),
            "latent_scale": self.latent_scale,
            "class_conditioning": self.stage == 2,
            # Trained on latents of phase-canonical patches: sampling restores a random global phase.
            "canonical_phase": self.canonical_phase,
        }

    def _new_model(self) -> VelocityUNet:
        c, _, s = self.latent_shape
        model = VelocityUNet(**self.unet.model_dump(), in_channels=c, input_size=s)
        model.latent_scale = self.latent_scale
        model.canonical_phase = self.canonical_phase
        return model

    def condition(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def draw_latents(self, batch: dict[str, Tensor]) -> Tensor:
        """A fresh ``z ~ N(mu, exp(logvar))`` per call (``posterior``), or ``mu`` (``mean``)."""
        mu = batch["mu"]
        if self.latents == "mean":
            return mu
        return mu + torch.exp(0.5 * batch["logvar"]) * torch.randn_like(mu)

    def model_latents(self, batch: dict[str, Tensor]) -> Tensor:
        """The flow's data ``z``: a fresh draw (:meth:`draw_latents`) times ``latent_scale``."""
        return self.draw_latents(batch) * self.latent_scale

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.model_latents(batch)
        noise = torch.randn_like(z)
        t = self.time_sampler(z.shape[0], device=z.device)
        path = sample_path(z, noise, t)
        sequence, label = self.condition(batch)
        v = model(path.x_t, path.t, sequence, label)
        return flow_matching_loss(v, path.target_velocity), {}


class Stage1Task(FlowTask):
    """Stage 1: a fresh U-Net conditioned on the sequence (null with p = ``sequence_dropout``)."""

    stage = 1

    def build_model(self) -> VelocityUNet:
        return self._new_model()

    def condition(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        return _drop(batch["sequence"], self.sequence_dropout, NULL_SEQUENCE), None


# ----------------------------------------------------------------------------------- run layout


# -------------------------------------------------------------------------------------- training
def _time_sampler(cfg: FlowConfig) -> TimeSampler:
    ts = cfg.time_sampling
    return TimeSampler(ts.distribution, ts.loc, ts.scale)


def train_stage1(
    cfg: MagphaseConfig,
    out: str | Path,
    latents: str | Path,
    *,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train stage 1 on the ``train`` split of the latent store ``latents`` into the engine folder
    ``out`` (``RUN/flow/stage1`` in a run)."""
    flow = cfg.flow
    dataset = LatentFlowDataset(latents, split="train")
    scale = flow.latent_scale or estimate_latent_scale(dataset, flow.latents, seed=cfg.seed)
    task = Stage1Task(
        flow.unet,
        _time_sampler(flow),
        dataset.latent_shape,
        latents=flow.latents,
        sequence_dropout=flow.stage1.sequence_dropout,
        latent_scale=scale,
        canonical_phase=canonical_latents(dataset),
    )
    settings = flow.stage1.train.resolved(cfg.seed, cfg.device)
    log.info("flow stage 1: %d training latents (scale %.4g) -> %s", len(dataset), scale, out)
    return fit(
        task,
        dataset,
        settings,
        Path(out),
        resume=resume,
        sample_weights=stage1_sample_weights(dataset, flow.stage1.balance_sequences),
        progress=progress,
    )


def run(ctx: RunContext) -> dict[str, Any]:
    """Train stage 1 (resuming); with ``pipeline.select_stage1``, pick the snapshot whose samples a
    real-vs-synthetic classifier separates worst on validation."""
    from magphase.stages.selection import select_stage1

    bar = ctx.bar("flow stage 1", ctx.cfg.flow.stage1.train.steps)
    result = train_stage1(
        ctx.cfg, ctx.layout.flow(1), ctx.latents, resume=True, progress=engine_progress(bar)
    )
    info: dict[str, Any] = {"step": result.step, "last_metrics": result.last_metrics}
    snaps = ctx.layout.flow_snapshots(1)
    if ctx.cfg.pipeline.select_stage1 and len(snaps) > 1:
        best = select_stage1(ctx, snaps)
        ctx.layout.select_flow_snapshot(
            1, best["step"], criterion="lowest val real-vs-synthetic AUROC", value=best["value"]
        )
        info["selected"] = best
    return info


STAGE = Stage(
    name="flow1",
    description="stage-1 latent flow (sequence-conditioned); optional snapshot selection",
    run=run,
    config=("flow", "pipeline.select_stage1", "evaluation.realfake"),
    reads=("latents",),
    writes=("flow(1)", "selection"),
)


__all__ = [
    "STAGE",
    "FlowTask",
    "Stage1Task",
    "estimate_latent_scale",
    "run",
    "train_stage1",
]
