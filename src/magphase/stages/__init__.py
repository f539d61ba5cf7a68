"""The pipeline's stages, one module each, in run order (the boxes of the README's pipeline picture).

Each module defines ``STAGE`` (a :class:`~magphase.stages.base.Stage`: name, what it reads and writes,
the config pieces it hashes, ``run(ctx)``). :mod:`magphase.run` loops over :data:`STAGES`; the CLI
verb of a stage calls the same ``run``. Adding a stage: docs/architecture.md.
"""

from __future__ import annotations

from magphase.rundir import STAGE_NAMES
from magphase.stages import (
    autoencoder,
    downstream,
    encode,
    flow1,
    flow2,
    phasegen,
    prepare,
    prepare_external,
    realfake,
    report,
    sample,
    simulate,
)
from magphase.stages.base import RunContext, Stage

STAGES: tuple[Stage, ...] = (
    simulate.STAGE,
    prepare.STAGE,
    prepare_external.STAGE,
    autoencoder.STAGE,
    encode.STAGE,
    flow1.STAGE,
    flow2.STAGE,
    sample.STAGE,
    realfake.STAGE,
    downstream.STAGE,
    phasegen.STAGE,
    report.STAGE,
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
if tuple(BY_NAME) != STAGE_NAMES:  # the run directory's owner and the registry name the same stages
    raise RuntimeError(f"stage registry {tuple(BY_NAME)} differs from rundir.STAGE_NAMES {STAGE_NAMES}")

__all__ = ["BY_NAME", "STAGES", "RunContext", "Stage"]
