"""Config section `autoencoder` (owned by the autoencoder stage): the sequence-conditioned CVAE (paper 2.2).

A preset (:data:`AUTOENCODER_PRESETS`) sets the network sizes and the engine settings (``train``, the
shared :class:`~magphase.config.training.TrainSettings`); keys given under ``network`` or ``train``
override the preset's one by one (:mod:`magphase.config.presets`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from magphase.config.presets import PresetTable, Section
from magphase.config.training import TrainSettings
from magphase.conventions import SEQUENCES


class AutoencoderNetwork(Section):
    """Sizes of :class:`magphase.models.cvae.ConditionalVAE` (see its module docstring)."""

    latent_channels: int = Field(2, ge=1, description="latent channels (paper: 2 -> 2 x 48 x 48)")
    full_res_channels: int = Field(32, ge=1, description="width of the 96 x 96 blocks")
    full_res_blocks: int = Field(0, ge=0, description="residual blocks at 96 x 96 per encoder/decoder")
    latent_res_channels: int = Field(64, ge=1, description="width of the 48 x 48 blocks")
    latent_res_blocks: int = Field(3, ge=1, description="residual blocks at 48 x 48 per encoder/decoder")
    groups: int = Field(8, ge=1, description="group-norm groups")
    shortcut: bool = Field(
        True, description="parameter-free 2x2-mean / bilinear shortcuts around the trunks (DC-AE residual AE)"
    )


#: Named presets (network sizes + engine settings), each with what it measured when last run (dev box:
#: 2 shared CPU cores).
AUTOENCODER_PRESETS = PresetTable(
    "autoencoder",
    {
        # 0.082 M params; everything at 48 x 48 (pixel-unshuffle stem): the demo/reproduce CPU budget.
        # Simulated reproduce-preset data (120 volumes, 1,899 train patches), 800 steps x 32, 8.7 min on the
        # shared 2-core dev box: test gamma 0.9996, SSIM 0.983, PSNR 44.7 dB (every sequence >= 0.9995 /
        # 0.967 / 40.6 dB); no-training shortcut reference 0.9994 / 0.977 / 41.9 dB. See docs/autoencoder.md.
        "cpu": {
            "network": dict(
                latent_channels=2,
                full_res_channels=16,
                full_res_blocks=0,
                latent_res_channels=32,
                latent_res_blocks=2,
                groups=8,
                shortcut=True,
            ),
            "train": dict(
                steps=800,
                batch_size=32,
                lr=2e-3,
                warmup_steps=50,
                min_lr_ratio=0.05,
                ema_decay=0.995,
                checkpoint_every=200,
                log_every=25,
            ),
        },
        # 9.2 M params; full-resolution blocks before the 2x2 down-sampling, wide 48 x 48 trunk (one GPU).
        # Not trained to convergence here (no GPU in development); CPU throughput in docs/autoencoder.md.
        "paper": {
            "network": dict(
                latent_channels=2,
                full_res_channels=64,
                full_res_blocks=2,
                latent_res_channels=192,
                latent_res_blocks=6,
                groups=32,
                shortcut=True,
            ),
            "train": dict(
                steps=100_000,
                batch_size=64,
                lr=2e-4,
                warmup_steps=1000,
                min_lr_ratio=0.05,
                ema_decay=0.999,
                checkpoint_every=5000,
                keep_every=20_000,
                log_every=100,
                num_workers=4,
            ),
        },
    },
)


class AutoencoderLoss(Section):
    """Weights of paper Eq. 1 (normalisations: :mod:`magphase.models.losses`)."""

    lambda_grad: float = Field(0.5, ge=0, description="weight of the finite-difference L1 term")
    lambda_kl: float = Field(
        1e-4, ge=0, description="weight of the KL term (mean per latent element, not sum per sample)"
    )


class AutoencoderEval(Section):
    """Settings of ``magphase evaluate autoencoder`` (Table 3, Fig. 3)."""

    split: str = Field("test", description="manifest split evaluated")
    batch_size: int = Field(64, ge=1)
    decode_mean: bool = Field(True, description="reconstruct from mu (True) or from one posterior draw")
    figure_abnormal_sequence: str = Field(
        "AXT1POST", description="preferred sequence of Fig. 3's abnormal patch"
    )
    figure_normal_sequence: str = Field("AXT1PRE", description="preferred sequence of Fig. 3's normal patch")

    @field_validator("figure_abnormal_sequence", "figure_normal_sequence")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SEQUENCES:
            raise ValueError(f"unknown sequence {v!r}; expected one of {SEQUENCES}")
        return v


class AutoencoderConfig(Section):
    """Settings of the autoencoder stage (run seed and device come from the top-level config)."""

    PRESETS: ClassVar[PresetTable] = AUTOENCODER_PRESETS
    preset: Literal["cpu", "paper"] = Field("cpu", description="network sizes + engine settings")
    network: AutoencoderNetwork = Field(
        default_factory=lambda: AutoencoderNetwork(**AUTOENCODER_PRESETS["cpu"]["network"]),
        description="network sizes (the preset's, key by key overridable)",
    )
    patch_store: str | None = Field(
        None, description="patch store to train on (None: RUN/prepare/patches, else RUN/patches)"
    )
    external_store: str | None = Field(
        None,
        description="external test patch store to encode (None: RUN/prepare-external/patches if it exists)",
    )
    augmentation: Literal["none", "flips"] = Field(
        "flips", description="flips: random horizontal/vertical flips of the training patches"
    )
    loss: AutoencoderLoss = AutoencoderLoss()
    train: TrainSettings = Field(default_factory=lambda: TrainSettings(**AUTOENCODER_PRESETS["cpu"]["train"]))
    eval: AutoencoderEval = AutoencoderEval()
    encode_batch_size: int = Field(128, ge=1, description="patches encoded per forward pass")
    canonical_phase: bool = Field(
        False,
        description="encode every patch rotated to global phase 0 (angle kept in the manifest); "
        "the flow then learns phase-canonical latents and sampling restores a uniformly random global phase",
    )
    sequence_aliases: dict[str, str] = Field(
        default_factory=lambda: {"T1-TSE": "AXT1", "T2-TIRM": "AXFLAIR"},
        description="manifest sequence names outside the five fastMRI ones -> the FiLM token used "
        "(the external test set's T1-TSE / T2-TIRM; case and separators are ignored)",
    )

    @field_validator("sequence_aliases")
    @classmethod
    def _aliases_known(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: s for k, s in v.items() if s not in SEQUENCES}
        if bad:
            raise ValueError(f"aliases must map to one of {SEQUENCES}, got {bad}")
        return v


__all__ = [
    "AUTOENCODER_PRESETS",
    "AutoencoderConfig",
    "AutoencoderEval",
    "AutoencoderLoss",
    "AutoencoderNetwork",
]
