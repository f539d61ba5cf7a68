"""Config section `simulate` (owned by the simulate stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SimulateConfig(BaseModel):
    """Settings of the simulate stage."""

    model_config = ConfigDict(extra="forbid")
