"""Stage ``realfake``: real-vs-synthetic latent classifiers per sequence (paper Table 4).

The protocol is :func:`magphase.evaluation.realfake.run_realfake`; this module wires the run directory.
"""

from __future__ import annotations

from typing import Any

from magphase.stages.base import RunContext, Stage, jsonable


def run(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.realfake import run_realfake

    result = run_realfake(
        ctx.latents,
        ctx.layout.realfake_samples,
        ctx.layout.realfake,
        ctx.cfg.evaluation,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return {"result": jsonable(result)}


STAGE = Stage(
    name="realfake",
    description="real-vs-synthetic latent classifier AUROC per sequence (Table 4)",
    run=run,
    config=("evaluation",),
    reads=("latents", "realfake_samples"),
    writes=("realfake",),
)
