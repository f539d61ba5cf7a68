"""Config section `autoencoder` (owned by the autoencoder stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AutoencoderConfig(BaseModel):
    """Settings of the autoencoder stage."""

    model_config = ConfigDict(extra="forbid")
