"""Config section `evaluation` (owned by the evaluation stage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EvaluationConfig(BaseModel):
    """Settings of the evaluation stage."""

    model_config = ConfigDict(extra="forbid")
