"""Config section `prepare` (owned by the prepare stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PrepareConfig(BaseModel):
    """Settings of the prepare stage."""

    model_config = ConfigDict(extra="forbid")
