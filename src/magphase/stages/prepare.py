"""Stage ``prepare``: raw volumes -> ESPIRiT-combined complex slices -> the patch store, Table 1, Fig. 2.

The work (per-volume, resumable, with a rejects list) is :func:`magphase.data.prepare.prepare`.
"""

from __future__ import annotations

from typing import Any

from magphase.stages.base import RunContext, Stage, counting_progress, jsonable
from magphase.stages.simulate import simulate_run_data, streaming


def prepare_options(ctx: RunContext, desc: str) -> dict[str, Any]:
    """What both prepare stages pass on: the prepare section, seed, device and a progress bar."""
    on_start, progress = counting_progress(ctx, desc)
    return dict(
        cfg=ctx.cfg.prepare, seed=ctx.cfg.seed, device=ctx.device, progress=progress, on_start=on_start
    )


def run(ctx: RunContext) -> dict[str, Any]:
    from magphase.data.prepare import prepare

    expected = None
    if streaming(ctx):
        # Volumes prepared as they were simulated have no raw file any more: the same per-volume step
        # (kept where the result is up to date, else simulated again, prepared, deleted), then the
        # merge over every planned volume.
        from magphase.simulate.dataset import read_plan

        plan = read_plan(ctx.layout.data)
        simulate_run_data(ctx, plan, "prepare (streamed)")
        expected = {v.stem: plan.volume_identity(v) for v in plan.volumes}
    summary = prepare(
        ctx.raw,
        ctx.layout.prepare,
        annotations=ctx.annotations,
        file_list=ctx.file_list,
        workers=ctx.cfg.pipeline.workers,
        expected=expected,
        **prepare_options(ctx, "prepare"),
    )
    return {"summary": jsonable(summary), "streamed": expected is not None}


STAGE = Stage(
    name="prepare",
    description="coil combination, brain mask, labels and splits -> patch store (2x96x96), Table 1, Fig. 2",
    run=run,
    config=("data", "prepare"),
    reads=("data",),
    writes=("prepare", "patches"),
)
