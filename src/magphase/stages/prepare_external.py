"""Stage ``prepare-external``: the external test set (4x4 grid of centre patches per slice).

Skipped when no external set is configured (``data.external_raw`` for real data, or
``simulate.external_volumes`` for simulated data). Work: :func:`magphase.data.external.prepare_external`.
"""

from __future__ import annotations

import logging
from typing import Any

from magphase.stages.base import RunContext, Stage, jsonable
from magphase.stages.prepare import prepare_options

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict[str, Any]:
    if ctx.external_raw is None or ctx.external_labels is None:
        log.info("no external test set configured: skipping")
        return {"skipped": "no external test set"}
    from magphase.data.external import prepare_external

    summary = prepare_external(
        ctx.external_raw,
        ctx.external_labels,
        ctx.layout.prepare_external,
        facial_csv=ctx.external_facial,
        **prepare_options(ctx, "prepare-external"),
    )
    return {"summary": jsonable(summary)}


STAGE = Stage(
    name="prepare-external",
    description="external test store (volume-level labels, centre patches), Table 2 analogue",
    run=run,
    config=("data", "prepare"),
    reads=("data",),
    writes=("prepare_external", "external_patches"),
)
