"""Stage ``downstream``: normal-vs-abnormal classifiers on real, synthetic and mixed data (Figs. 6-8).

Substitution, additive and magnitude-only runs, tested on the test split and the external set. The
protocol is :func:`magphase.evaluation.downstream.run_downstream`.
"""

from __future__ import annotations

from typing import Any

from magphase.stages.base import RunContext, Stage, jsonable


def run(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.downstream import run_downstream

    result = run_downstream(
        ctx.patches,
        ctx.layout.downstream_samples,
        ctx.layout.downstream,
        ctx.cfg.evaluation,
        external_store=ctx.external_patches,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return {"result": jsonable(result)}


STAGE = Stage(
    name="downstream",
    description="downstream substitution / additive / magnitude-only AUROC, Figs. 6-8",
    run=run,
    config=("evaluation",),
    reads=("patches", "external_patches", "downstream_samples"),
    writes=("downstream",),
)
