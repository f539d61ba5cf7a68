"""Config section `flow` (owned by the flow stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FlowConfig(BaseModel):
    """Settings of the flow stage."""

    model_config = ConfigDict(extra="forbid")
