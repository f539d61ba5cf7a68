"""Stage ``simulate``: the built-in simulated brain dataset, in fastMRI's raw format with fastMRI+ CSVs.

Skipped when ``data.raw`` points at real (or other) fastMRI-format volumes. The physics lives in
:mod:`magphase.simulate`; this module only wires it into the run directory.

With ``pipeline.keep_raw: false`` each training volume is prepared (:func:`magphase.data.prepare.run_volume`,
the prepare stage's own work) as soon as it is written and its raw file is then deleted
(:func:`stream_volume`): a dataset of thousands of volumes needs the disk of its patches, not of its
k-space. The prepare stage reruns the same per-volume step, so a volume whose prepared result is stale
(another prepare config) is simulated again from its seeds, prepared and deleted.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from magphase.config import PrepareConfig
from magphase.stages.base import RunContext, Stage, jsonable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPrepare:
    """Where and how :func:`stream_volume` prepares a volume (the prepare stage's folder, config, seed)."""

    out_dir: str
    cfg: PrepareConfig
    seed: int


def prepare_task(data_dir: Path, task: Any, fragment: dict[str, Any], prep: StreamPrepare):
    """The prepare task of a simulated volume (a simulate ``VolumeTask``) from its annotation fragment:
    the class and boxes the merged ``brain.csv`` gives it, read through the same CSV reader and label
    rules, identified by :func:`~magphase.simulate.dataset.volume_identity`."""
    from magphase.data.prepare import volume_task
    from magphase.io.annotations import read_annotations, write_annotations
    from magphase.simulate.dataset import fragment_rows, raw_path, volume_identity

    volume = task.volume

    with tempfile.TemporaryDirectory(prefix="magphase-stream-") as tmp:
        csv, listing = Path(tmp) / "brain.csv", Path(tmp) / "brain_file_list.csv"
        rows = fragment_rows(volume.stem, fragment) if fragment["annotated"] else []
        write_annotations(csv, rows, listing, files=[volume.stem] if fragment["annotated"] else [])
        ann = read_annotations(csv, listing, rules=prep.cfg.labels)
    return volume_task(raw_path(data_dir, volume), ann, prep.cfg, volume_identity(volume, task.site))


def stream_volume(task: Any, prep: StreamPrepare) -> Any:
    """Simulate one volume, prepare it and delete its raw file; a volume whose prepared result is up to
    date is kept without simulating (top-level, so spawn-started workers can run it).

    Deleting comes last, so an interrupted run resumes to the same result. Excluded volumes are not
    prepared (as in the prepare stage) and their raw files are deleted too; external volumes are only
    simulated (the external set is prepared from its files).
    """
    from magphase.data.prepare import cached_outcome, run_volume
    from magphase.errors import DataError
    from magphase.simulate.dataset import (
        VolumeOutcome,
        discard_raw,
        fragment_path,
        read_fragment,
        simulate_volume,
    )

    volume, data_dir = task.volume, Path(task.out_dir)
    if volume.external:
        return simulate_volume(task)
    fragment = read_fragment(data_dir, volume)
    if fragment is not None:
        ptask = prepare_task(data_dir, task, fragment, prep)
        if ptask.label == "excluded" or cached_outcome(ptask, Path(prep.out_dir), prep.cfg, prep.seed):
            discard_raw(data_dir, volume)
            return VolumeOutcome(volume.stem, "kept")
    outcome = simulate_volume(task)
    fragment = read_fragment(data_dir, volume)
    if fragment is None:  # simulate_volume writes it last; only a changed plan file gets here
        raise DataError(fragment_path(data_dir, volume), None, "no annotation fragment after simulating")
    ptask = prepare_task(data_dir, task, fragment, prep)
    if ptask.label != "excluded":
        run_volume(ptask, Path(prep.out_dir), prep.cfg, prep.seed, device="cpu")
    discard_raw(data_dir, volume)
    return outcome


def streaming(ctx: RunContext) -> bool:
    """True when this run simulates its data and prepares it volume by volume (``keep_raw: false``)."""
    return not ctx.cfg.data.raw and not ctx.cfg.pipeline.keep_raw


def simulate_run_data(ctx: RunContext, plan: Any, desc: str) -> Any:
    """Simulate (or resume) the run's dataset, streaming it into the prepare folder when
    :func:`streaming`; returns the simulation summary."""
    from magphase.simulate.dataset import run_simulation, simulate_volume

    volume_fn = simulate_volume
    if streaming(ctx):
        volume_fn = partial(
            stream_volume, prep=StreamPrepare(str(ctx.layout.prepare), ctx.cfg.prepare, ctx.cfg.seed)
        )
    bar = ctx.bar(desc, len(plan.all_volumes))
    return run_simulation(
        ctx.layout.data,
        plan,
        workers=ctx.cfg.simulate.workers,
        progress=(lambda _o: bar(1)) if bar else None,
        volume_fn=volume_fn,
    )


def run(ctx: RunContext) -> dict[str, Any]:
    if ctx.cfg.data.raw:
        log.info("data.raw is set (%s): nothing to simulate", ctx.cfg.data.raw)
        return {"skipped": "data.raw given"}
    from magphase.simulate.acquisition import sites_with_effects
    from magphase.simulate.dataset import SimulatedDatasetPlan

    sim = ctx.cfg.simulate
    seed = sim.seed if sim.seed is not None else ctx.cfg.seed
    plan = SimulatedDatasetPlan.build(sim, seed)
    plan.sites = sites_with_effects(plan.sites, sim.acquisition_effects)
    summary = simulate_run_data(ctx, plan, "simulate")
    return {"volumes": len(plan.all_volumes), "streamed": streaming(ctx), "summary": jsonable(summary)}


STAGE = Stage(
    name="simulate",
    description="simulated multi-coil k-space volumes (fastMRI .h5) + brain.csv, unless data.raw is given",
    run=run,
    config=("data", "simulate"),
    writes=("data",),
)
