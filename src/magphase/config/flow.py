"""Config section `flow` (owned by the flow stage): two-stage latent flow matching (paper Sec. 2.3).

Network sizes come from a named preset (:data:`FLOW_PRESETS`); keys given under ``unet`` override
the preset's one by one (:mod:`magphase.config.presets`). Stage 1
trains on the sequence condition; stage 2 fine-tunes it with a class condition in two phases
(``phase1``: only the new class embedding; ``phase2``: everything, pretrained weights at a lower
learning rate). ``sampling`` holds the sampler defaults of ``magphase sample``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from magphase.config.presets import PresetTable, Section
from magphase.config.training import TrainSettings
from magphase.conventions import SEQUENCES


class UNetConfig(Section):
    """Sizes of the velocity U-Net (:class:`magphase.models.unet.VelocityUNet`)."""

    base_channels: int = Field(16, ge=1)
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = Field(1, ge=1)
    attention_resolutions: tuple[int, ...] = Field((12,), description="spatial sizes with self-attention")
    num_heads: int = Field(4, ge=1)
    emb_dim: int = Field(64, ge=1, description="width of the summed conditioning vector")
    time_features: int = Field(32, ge=2, description="sinusoidal features of t (even)")
    groups: int = Field(8, ge=1, description="group-norm groups")
    dropout: float = Field(0.0, ge=0, lt=1)
    patch_size: int = Field(
        1, ge=1, description="space-to-depth fold of the input (2: the U-Net runs at 24 x 24, ~4x cheaper)"
    )


#: U-Net sizes of the flow presets (timings on the dev box: 2 CPU cores, torch 2.13 CPU, as stated per
#: preset).
_UNET_SIZES: dict[str, dict[str, Any]] = {
    # 1.25 M params with the input folded 2 x 2 (the levels run at 24, 12, 6): 0.13 s per training step
    # at batch 32 on 2 CPU threads, 2.0 ms per sample forward (2026-11 box; the 2026-12-04 box: 0.35 s
    # float32, 0.27 s under bf16 autocast). Replaces a full-resolution 0.72 M preset
    # (base 16, mults 1-2-4) that took 0.21 s per step and gave blotchier samples at equal steps.
    "cpu-small": dict(
        base_channels=32,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(12, 6),
        num_heads=4,
        emb_dim=128,
        time_features=32,
        groups=8,
        dropout=0.0,
        patch_size=2,
    ),
    # 92 M params (ADM-like widths for a 48 x 48 latent; the paper does not state its sizes).
    "paper": dict(
        base_channels=128,
        channel_mults=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_resolutions=(12, 6),
        num_heads=4,
        emb_dim=512,
        time_features=128,
        groups=32,
        dropout=0.1,
    ),
}
# cpu-small with C = 48 and two residual blocks per level: 3.9 M params, 0.57 s per training step at
# batch 32 on 2 CPU threads under bf16 autocast (AVX512-BF16 CPU; 2026-12-04). On phase-canonical
# reproduce latents, 4000 steps give Fig. 4 samples with sulcal CSF patterns (AXT2), skull rims and
# ventricle-like shapes that the 32-channel preset only blurs.
_UNET_SIZES["cpu-medium"] = {**_UNET_SIZES["cpu-small"], "base_channels": 48, "num_res_blocks": 2}

#: The flow section's presets: each sets the U-Net sizes.
FLOW_PRESETS = PresetTable("flow", {name: {"unet": sizes} for name, sizes in _UNET_SIZES.items()})


class TimeSamplingConfig(Section):
    """Distribution of the training time t in [0, 1] (t=0 noise, t=1 data)."""

    distribution: Literal["uniform", "logit_normal"] = Field(
        "logit_normal", description="uniform, or t = sigmoid(N(loc, scale^2)) (SD3-style, mid-t emphasis)"
    )
    loc: float = 0.0
    scale: float = Field(1.0, gt=0)


def _stage1_train() -> TrainSettings:
    return TrainSettings(
        steps=1500,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        ema_decay=0.995,
        checkpoint_every=250,
        keep_every=250,
        log_every=25,
    )


def _phase1_train() -> TrainSettings:
    # Only the zero-initialised class embedding trains: Adam moves it by ~lr per step, and it must grow to
    # the scale of the time/sequence embeddings (norm ~8), hence the high learning rate.
    return TrainSettings(
        steps=300, batch_size=32, lr=1e-2, warmup_steps=20, ema_decay=0.98, checkpoint_every=100, log_every=25
    )


def _phase2_train() -> TrainSettings:
    return TrainSettings(
        steps=600,
        batch_size=32,
        lr=1e-3,
        warmup_steps=50,
        ema_decay=0.995,
        checkpoint_every=200,
        keep_every=200,
        log_every=25,
    )


class Stage1Config(Section):
    """Stage 1: sequence-conditioned training from scratch."""

    train: TrainSettings = Field(default_factory=_stage1_train)
    sequence_dropout: float = Field(0.1, ge=0, le=1, description="P(sequence -> null token) per sample")
    balance_sequences: bool = Field(False, description="weighted sampling: every sequence equally often")


class Stage2Config(Section):
    """Stage 2: class-conditioned fine-tuning of a stage-1 model, two phases."""

    init: str | None = Field(
        None,
        description="stage-1 weights to start from (.safetensors or snapshot .pt); "
        "None: the selected (else final) EMA weights of the run's stage 1",
    )
    phase1: TrainSettings = Field(default_factory=_phase1_train, description="only the new class embedding")
    phase2: TrainSettings = Field(default_factory=_phase2_train, description="all parameters")
    pretrained_lr_scale: float = Field(
        0.1, gt=0, le=1, description="phase 2: lr of stage-1 parameters = phase2.lr * this"
    )
    class_dropout: float = Field(0.1, ge=0, le=1, description="P(class -> null token) per sample")
    sequence_dropout: float = Field(0.0, ge=0, le=1, description="P(sequence -> null token) per sample")
    unknown_sequences: tuple[str, ...] = Field(
        ("AXT1PRE", "AXT2"), description="sequences whose samples always get the `unknown` class token"
    )
    balance_sequences: bool = Field(True, description="weighted sampling: every sequence equally often")
    balance_classes: bool = Field(True, description="within a sequence, every class token equally often")

    @field_validator("unknown_sequences")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if s not in SEQUENCES]
        if bad:
            raise ValueError(f"unknown sequence(s) {bad}; expected names from {SEQUENCES}")
        return v


class SamplingConfig(Section):
    """Defaults of ``magphase sample`` (each is also a command-line option)."""

    solver: Literal["heun", "euler"] = "heun"
    steps: int = Field(25, ge=1, description="integration steps K (Heun: 2K - 1 network evaluations)")
    guidance_stage1: float = Field(
        1.0, ge=0, description="w for sequence guidance (paper: 1 for real-vs-synthetic)"
    )
    guidance_stage2: float = Field(2.0, ge=0, description="w for class guidance (paper: 2 for downstream)")
    batch_size: int = Field(256, ge=1, description="latents integrated together (per rank)")
    amp: Literal["none", "bf16", "fp16", "auto"] = Field(
        "auto",
        description="autocast dtype of the network evaluations (the ODE state stays float32); "
        "auto = bf16 on CUDA (fp16 if unsupported), none on CPU",
    )


class FlowConfig(Section):
    """Settings of the flow stage."""

    PRESETS: ClassVar[PresetTable] = FLOW_PRESETS
    preset: Literal["cpu-small", "cpu-medium", "paper"] = Field(
        "cpu-small", description="network size preset"
    )
    unet: UNetConfig = Field(
        default_factory=lambda: UNetConfig(**FLOW_PRESETS["cpu-small"]["unet"]),
        description="network sizes (the preset's, key by key overridable)",
    )
    latent_store: str | None = Field(None, description="latent store to train on (None: <run>/latents)")
    latents: Literal["posterior", "mean"] = Field(
        "posterior", description="train on a fresh z ~ N(mu, sigma^2) per draw, or on mu"
    )
    latent_scale: float | None = Field(
        None,
        gt=0,
        description="multiply latents by this before the flow (None: 1/std of the training latents, "
        "estimated in stage 1 and inherited by stage 2)",
    )
    time_sampling: TimeSamplingConfig = TimeSamplingConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    sampling: SamplingConfig = SamplingConfig()


__all__ = [
    "FLOW_PRESETS",
    "FlowConfig",
    "SamplingConfig",
    "Stage1Config",
    "Stage2Config",
    "TimeSamplingConfig",
    "UNetConfig",
]
