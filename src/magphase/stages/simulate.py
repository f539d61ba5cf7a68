"""Stage ``simulate``: the built-in simulated brain dataset, in fastMRI's raw format with fastMRI+ CSVs.

Skipped when ``data.raw`` points at real (or other) fastMRI-format volumes. The physics lives in
:mod:`magphase.simulate`; this module only wires it into the run directory.
"""

from __future__ import annotations

import logging
from typing import Any

from magphase.stages.base import RunContext, Stage, jsonable

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict[str, Any]:
    if ctx.cfg.data.raw:
        log.info("data.raw is set (%s): nothing to simulate", ctx.cfg.data.raw)
        return {"skipped": "data.raw given"}
    from magphase.simulate.acquisition import sites_with_effects
    from magphase.simulate.dataset import SimulatedDatasetPlan, run_simulation

    sim = ctx.cfg.simulate
    seed = sim.seed if sim.seed is not None else ctx.cfg.seed
    plan = SimulatedDatasetPlan.build(sim, seed)
    plan.sites = sites_with_effects(plan.sites, sim.acquisition_effects)
    bar = ctx.bar("simulate", len(plan.all_volumes))
    summary = run_simulation(
        ctx.layout.data, plan, workers=sim.workers, progress=(lambda _o: bar(1)) if bar else None
    )
    return {"volumes": len(plan.all_volumes), "summary": jsonable(summary)}


STAGE = Stage(
    name="simulate",
    description="simulated multi-coil k-space volumes (fastMRI .h5) + brain.csv, unless data.raw is given",
    run=run,
    config=("data", "simulate"),
    writes=("data",),
)
