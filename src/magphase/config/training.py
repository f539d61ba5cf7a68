"""Settings of the shared training engine (:func:`magphase.training.fit`).

Every stage that trains a network (autoencoder, flow stages 1 and 2, classifiers, PhaseGen) embeds one
:class:`TrainSettings` in its own config section, e.g. ``autoencoder.train``. Units live in the names:
``steps`` are optimiser updates, ``batch_size`` is the GLOBAL batch (summed over all ranks).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from magphase.config.presets import Section

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


class TrainSettings(Section):
    """Optimisation, precision, checkpointing and logging of one training run.

    ``seed`` and ``device`` may be left ``None`` to inherit the run-wide values; call
    :meth:`resolved` with ``MagphaseConfig.seed`` / ``MagphaseConfig.device`` before :func:`fit`
    (``fit`` itself falls back to seed 0 and device ``"auto"``).
    """

    steps: int = Field(1000, ge=1, description="optimiser updates in the whole run (not per resume)")
    batch_size: int = Field(32, ge=1, description="GLOBAL batch: split evenly over the DDP ranks")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW decoupled decay; never on biases/norms (ndim < 2)"
    )
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr/warmup_steps to lr")
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine ends at lr * min_lr_ratio")
    grad_clip: float | None = Field(1.0, description="max global gradient L2 norm; None or 0 disables")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA: ema = decay * ema + (1 - decay) * w")
    ema_start_step: int = Field(0, ge=0, description="before this step the EMA copies the weights")
    amp: Literal["none", "bf16", "fp16", "auto"] = Field(
        "auto", description="autocast dtype; auto = bf16 on CUDA (fp16 if unsupported), none on CPU"
    )
    checkpoint_every: int = Field(1000, ge=1, description="steps between resumable checkpoints")
    keep_every: int | None = Field(
        None, description="steps between kept EMA snapshots (model selection); None or 0 disables"
    )
    log_every: int = Field(50, ge=1, description="steps between metrics.jsonl rows / progress calls")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    deterministic: bool = Field(False, description="deterministic kernels, no cuDNN autotune, no TF32")
    seed: int | None = Field(None, description="None: inherit the run-wide seed")
    device: str | None = Field(None, description="auto | cpu | cuda | cuda:N; None: inherit")

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("grad_clip")
    @classmethod
    def _clip_non_negative(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError(f"grad_clip must be >= 0 or None, got {v}")
        return v

    @field_validator("keep_every")
    @classmethod
    def _keep_non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"keep_every must be >= 0 or None, got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device_known(cls, v: str | None) -> str | None:
        if v is not None and not _DEVICE_RE.match(v):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSettings:
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        return self

    def resolved(self, seed: int, device: str) -> TrainSettings:
        """A copy with ``seed``/``device`` filled from the run-wide config where they are ``None``."""
        return self.model_copy(
            update={
                "seed": self.seed if self.seed is not None else seed,
                "device": self.device if self.device is not None else device,
            }
        )


__all__ = ["TrainSettings"]
