"""Config section `phasegen`: magnitude-conditioned complex phase diffusion (PhaseGen, arXiv 2504.07560).

Network sizes come from a named preset (:data:`PHASEGEN_PRESETS`); keys given under ``network``
override the preset's one by one (:mod:`magphase.config.presets`). ``train`` is the shared engine's
:class:`~magphase.config.training.TrainSettings` with PhaseGen's own defaults (:data:`TRAIN_DEFAULTS`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from magphase.config.presets import PresetTable, Section
from magphase.config.training import TrainSettings


class PhaseGenNetwork(Section):
    """Sizes of :class:`magphase.models.complex_unet.ComplexUNet`."""

    base_channels: int = Field(16, ge=1, description="complex channels of the first level")
    channel_mults: tuple[int, ...] = Field((1, 2, 4), min_length=1, description="width multipliers per level")
    num_res_blocks: int = Field(1, ge=1, description="residual blocks per level")
    emb_dim: int = Field(128, ge=2, description="timestep embedding width")
    time_features: int = Field(64, ge=2, description="sinusoidal timestep features (even)")
    groups: int = Field(8, ge=1, description="group-norm groups per part (real / imaginary)")
    activation: Literal["crelu", "modrelu"] = Field("crelu", description="complex activation")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["spectral", "mean"] = Field(
        "spectral", description="down-sampling: k-space truncation or 2 x 2 complex mean (docs/phasegen.md)"
    )


#: Network presets (complex channels; a complex weight counts as two real parameters).
_NETWORK_SIZES: dict[str, dict[str, Any]] = {
    # 0.87 M real parameters; 96 -> 48 -> 24 -> 12 with spectral pooling: the CPU demo / reproduce budget
    # (1.0 s per batch-16 step on one contended core; bf16 forward 18 ms/patch).
    "cpu": dict(
        base_channels=8, channel_mults=(1, 2, 4, 8), num_res_blocks=1, emb_dim=64, time_features=32, groups=4
    ),
    # 20.6 M real parameters, four levels down to 12 x 12: one GPU.
    "paper": dict(
        base_channels=32, channel_mults=(1, 2, 4, 8), num_res_blocks=2, emb_dim=256, time_features=128
    ),
}


#: The phasegen section's presets: each sets the network sizes.
PHASEGEN_PRESETS = PresetTable(
    "phasegen", {name: {"network": sizes} for name, sizes in _NETWORK_SIZES.items()}
)


#: Engine settings of PhaseGen training (CPU budget); fields under ``phasegen.train`` override them.
TRAIN_DEFAULTS: dict[str, Any] = dict(
    steps=2000, batch_size=16, lr=1e-3, warmup_steps=100, ema_decay=0.995, checkpoint_every=500, log_every=25
)


class DiffusionSettings(Section):
    """The forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) n`` over T integer steps."""

    timesteps: int = Field(1000, ge=2, description="T (PhaseGen: 1000)")
    schedule: Literal["cosine", "linear"] = Field("cosine", description="beta schedule (PhaseGen: cosine)")
    cosine_offset: float = Field(0.008, gt=0, description="s of the cosine schedule")
    noise: Literal["phase", "gaussian"] = Field(
        "gaussian",
        description="gaussian: circular CN(0, 1) (DDPM theory); phase: unit-modulus noise of uniform random "
        "phase (PhaseGen's code; learned less well here, docs/phasegen.md)",
    )
    loss: Literal["l1", "l2"] = Field("l1", description="noise-prediction loss (PhaseGen: L1)")


class PhaseGenSampling(Section):
    """Defaults of ``magphase phasegen sample`` (each is also a command-line option)."""

    sampler: Literal["ddim", "ddpm"] = Field(
        "ddim", description="ddim: K of the T steps (fast); ddpm: all T ancestral steps (PhaseGen)"
    )
    steps: int = Field(50, ge=1, description="K for ddim (ignored by ddpm)")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="ddim stochasticity (0: deterministic, 1: ddpm-like)")
    batch_size: int = Field(64, ge=1)
    amp: Literal["none", "bf16", "fp16", "auto"] = Field("auto", description="autocast of the network")
    project: bool = Field(
        True, description="impose the known magnitude on every intermediate estimate (beyond PhaseGen)"
    )


class PhaseGenConfig(Section):
    """Settings of the PhaseGen branch."""

    PRESETS: ClassVar[PresetTable] = PHASEGEN_PRESETS
    preset: Literal["cpu", "paper"] = Field("cpu", description="network size preset")
    network: PhaseGenNetwork = Field(
        default_factory=lambda: PhaseGenNetwork(**PHASEGEN_PRESETS["cpu"]["network"]),
        description="network sizes (the preset's, key by key overridable)",
    )
    patch_store: str | None = Field(None, description="patch store to train on (None: <run>/prepare/patches)")
    global_phase: Literal["canonical", "random", "keep"] = Field(
        "canonical",
        description="training patches: rotated to global phase 0 (samples then get a seeded uniform one), "
        "by a random angle, or kept",
    )
    evaluation_patches: int | None = Field(
        512, ge=1, description="test patches given a PhaseGen phase by `magphase run` (None: all)"
    )
    diffusion: DiffusionSettings = DiffusionSettings()
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(**TRAIN_DEFAULTS))
    sampling: PhaseGenSampling = PhaseGenSampling()

    @model_validator(mode="after")
    def _check(self) -> PhaseGenConfig:
        if self.network.time_features % 2:
            raise ValueError(f"phasegen.network.time_features must be even, got {self.network.time_features}")
        return self


__all__ = [
    "DiffusionSettings",
    "PHASEGEN_PRESETS",
    "TRAIN_DEFAULTS",
    "PhaseGenConfig",
    "PhaseGenNetwork",
    "PhaseGenSampling",
]
