"""Snapshot selection of the flow stages (paper 2.4): sample each candidate snapshot, score it, keep the best.

Stage 1 keeps the snapshot whose samples a real-vs-synthetic latent classifier separates worst on the
validation split; stage 2 the one whose decoded samples train the best downstream classifier (val
AUROC). At most ``pipeline.max_selection_candidates`` snapshots, evenly spread over training and
always including the last, are sampled into ``RUN/evaluation/selection/stage{1,2}/step<N>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magphase.stages.base import RunContext, jsonable
from magphase.stages.sample import SELECTION_SEED_OFFSET, sample_store


def snapshot_candidates(snaps: dict[int, Path], keep: int) -> dict[int, Path]:
    """At most ``keep`` of ``snaps``, evenly spread over training and always including the last."""
    steps = sorted(snaps)
    if len(steps) > keep:
        idx = sorted({round(i * (len(steps) - 1) / (keep - 1)) for i in range(keep)})
        steps = [steps[i] for i in idx]
    return {s: snaps[s] for s in steps}


def sample_candidates(
    ctx: RunContext,
    snaps: dict[int, Path],
    groups: list[Any],
    *,
    stage: int,
    guidance: float,
    decode: bool,
) -> dict[str, Path]:
    """One synthetic store per candidate snapshot: ``{"step<N>": store}``."""
    candidates = {}
    for step, path in snapshot_candidates(snaps, ctx.cfg.pipeline.max_selection_candidates).items():
        candidates[f"step{step}"] = sample_store(
            ctx,
            path,
            ctx.layout.selection_store(stage, step),
            groups,
            stage=stage,
            guidance=guidance,
            decode=decode,
            seed_offset=SELECTION_SEED_OFFSET[stage],
        )
    return candidates


def select_stage1(ctx: RunContext, snaps: dict[int, Path]) -> dict[str, Any]:
    """The stage-1 snapshot with the lowest validation real-vs-synthetic AUROC."""
    from magphase.data.store import Store
    from magphase.evaluation.realfake import select_stage1_checkpoint
    from magphase.generative.sampling import SampleGroup

    ev = ctx.cfg.evaluation
    real = Store(ctx.latents)
    seqs = ev.realfake.sequences or sorted(set(real.manifest["sequence"]))
    # Candidates are scored on validation only: train + val sized synthetic sets suffice.
    groups = []
    for seq in seqs:
        n = len(real.select(sequence=seq, split=["train", "val"]))
        if n:
            groups.append(SampleGroup(seq, None, n))
    candidates = sample_candidates(ctx, snaps, groups, stage=1, guidance=ev.realfake.guidance, decode=False)
    result = select_stage1_checkpoint(
        ctx.latents, candidates, ctx.layout.selection / "stage1", ev, seed=ctx.cfg.seed, device=ctx.device
    )
    return selected_snapshot(result)


def select_stage2(ctx: RunContext, snaps: dict[int, Path]) -> dict[str, Any]:
    """The stage-2 snapshot whose decoded samples give the highest validation downstream AUROC."""
    from magphase.evaluation.downstream import downstream_required_counts, select_stage2_checkpoint
    from magphase.generative.sampling import SampleGroup

    ev = ctx.cfg.evaluation
    counts = downstream_required_counts(ctx.patches, ev.downstream)
    groups = [SampleGroup(seq, label, n) for (label, seq), n in counts.items() if n > 0]
    candidates = sample_candidates(ctx, snaps, groups, stage=2, guidance=ev.downstream.guidance, decode=True)
    result = select_stage2_checkpoint(
        ctx.patches, candidates, ctx.layout.selection / "stage2", ev, seed=ctx.cfg.seed, device=ctx.device
    )
    return selected_snapshot(result)


def selected_snapshot(result: Any) -> dict[str, Any]:
    """The winning ``step{N}`` candidate of a checkpoint selection as ``{step, value, scores}``."""
    step = int(str(result.best).removeprefix("step"))
    return {"step": step, "value": result.scores[result.best], "scores": jsonable(result.scores)}


__all__ = ["sample_candidates", "select_stage1", "select_stage2", "selected_snapshot", "snapshot_candidates"]
