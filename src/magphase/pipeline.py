"""``magphase run``: every stage of the paper's protocol in order, resumable.

Stages (each reads only what the previous ones wrote; the run folder layout is fixed here)::

    simulate          RUN/data/                   fastMRI-format raw volumes + brain.csv (+ external/)
    prepare           RUN/prepare/patches         patch store, Table 1, Fig. 2, rejects
    prepare-external  RUN/prepare-external/patches  external test store (4 centre patches per slice)
    autoencoder       RUN/autoencoder/            CVAE (EMA safetensors), Table 3, Fig. 3
    encode            RUN/latents, RUN/latents-external   latent stores (mu, logvar)
    flow1             RUN/flow/stage1/            stage-1 flow (sequence); optional snapshot selection
    flow2             RUN/flow/stage2/            stage-2 flow (sequence + class); optional selection
    sample            RUN/samples/{realfake,downstream}   synthetic stores (w = 1 latents; w = 2 decoded)
    realfake          RUN/evaluation/realfake/    Table 4
    downstream        RUN/evaluation/downstream/  substitution / additive / magnitude-only, Figs. 6-8
    phasegen          RUN/phasegen/               PhaseGen (if pipeline.phasegen): model, test-split phases,
                                                  phase statistics, figure
    report            RUN/report/report.md        every table and figure

A finished stage writes ``RUN/.stages/<stage>.json`` holding a hash of the config sections it and
every earlier stage depend on. ``run_pipeline`` skips stages whose marker matches and reruns the
others; each stage's own work resumes (training from its last checkpoint, prepare per volume,
evaluation per finished classifier). Library code logs; the CLI passes progress factories.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magphase.config import MagphaseConfig, config_hash, dump_config
from magphase.errors import ConfigError, DataError
from magphase.training.distributed import resolve_device_name
from magphase.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

# Seed offsets (added to seed * 1000) of the snapshot-selection samples, per flow stage.
SELECTION_SEED_OFFSET = {1: 11, 2: 12}

STAGES: tuple[str, ...] = (
    "simulate",
    "prepare",
    "prepare-external",
    "autoencoder",
    "encode",
    "flow1",
    "flow2",
    "sample",
    "realfake",
    "downstream",
    "phasegen",
    "report",
)

#: ``factory(description, total) -> callback(n_done_increment)`` or None (the CLI draws bars).
ProgressFactory = Callable[[str, int | None], Callable[..., None] | None]


@dataclass(frozen=True)
class RunLayout:
    """Where every stage of a run folder reads and writes."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def prepare(self) -> Path:
        return self.root / "prepare"

    @property
    def patches(self) -> Path:
        return self.prepare / "patches"

    @property
    def prepare_external(self) -> Path:
        return self.root / "prepare-external"

    @property
    def external_patches(self) -> Path:
        return self.prepare_external / "patches"

    @property
    def autoencoder(self) -> Path:
        return self.root / "autoencoder"

    @property
    def autoencoder_eval(self) -> Path:
        return self.autoencoder / "evaluation"

    @property
    def latents(self) -> Path:
        return self.root / "latents"

    @property
    def external_latents(self) -> Path:
        return self.root / "latents-external"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def realfake_samples(self) -> Path:
        return self.samples / "realfake"

    @property
    def downstream_samples(self) -> Path:
        return self.samples / "downstream"

    @property
    def realfake(self) -> Path:
        return self.root / "evaluation" / "realfake"

    @property
    def downstream(self) -> Path:
        return self.root / "evaluation" / "downstream"

    @property
    def selection(self) -> Path:
        return self.root / "evaluation" / "selection"

    @property
    def phasegen(self) -> Path:
        return self.root / "phasegen"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def markers(self) -> Path:
        return self.root / ".stages"


@dataclass
class RunContext:
    """What a stage function receives."""

    cfg: MagphaseConfig
    layout: RunLayout
    device: str
    progress: ProgressFactory | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def bar(self, desc: str, total: int | None = None) -> Callable[..., None] | None:
        return self.progress(desc, total) if self.progress is not None else None

    # Raw data: the config's paths, else the simulated dataset of this run.
    @property
    def raw(self) -> Path:
        return Path(self.cfg.data.raw) if self.cfg.data.raw else self.layout.data

    @property
    def annotations(self) -> Path | None:
        if self.cfg.data.raw:
            return Path(self.cfg.data.annotations) if self.cfg.data.annotations else None
        return self.layout.data / "brain.csv"

    @property
    def file_list(self) -> Path | None:
        if self.cfg.data.raw:
            return Path(self.cfg.data.file_list) if self.cfg.data.file_list else None
        return self.layout.data / "brain_file_list.csv"

    @property
    def external_raw(self) -> Path | None:
        if self.cfg.data.raw:
            return Path(self.cfg.data.external_raw) if self.cfg.data.external_raw else None
        return self.layout.data / "external" if self.cfg.simulate.external_volumes > 0 else None

    @property
    def external_labels(self) -> Path | None:
        if self.cfg.data.raw:
            return Path(self.cfg.data.external_labels) if self.cfg.data.external_labels else None
        return self.layout.data / "external" / "labels.csv" if self.external_raw else None

    @property
    def external_facial(self) -> Path | None:
        if self.cfg.data.raw:
            return None
        path = self.layout.data / "external" / "facial_slices.csv"
        return path if self.external_raw else None


# ------------------------------------------------------------------------------------------ stages
def _stage_simulate(ctx: RunContext) -> dict[str, Any]:
    if ctx.cfg.data.raw:
        log.info("data.raw is set (%s): nothing to simulate", ctx.cfg.data.raw)
        return {"skipped": "data.raw given"}
    from magphase.simulate.dataset import SimulatedDatasetPlan, run_simulation

    sim = ctx.cfg.simulate
    seed = sim.seed if sim.seed is not None else ctx.cfg.seed
    plan = SimulatedDatasetPlan.build(sim, seed)
    bar = ctx.bar("simulate", len(plan.all_volumes))
    summary = run_simulation(
        ctx.layout.data, plan, workers=sim.workers, progress=(lambda _o: bar(1)) if bar else None
    )
    return {"volumes": len(plan.all_volumes), "summary": _jsonable(summary)}


def _stage_prepare(ctx: RunContext) -> dict[str, Any]:
    from magphase.data.prepare import prepare

    bar_holder: dict[str, Any] = {}

    def on_start(total: int) -> None:
        bar_holder["bar"] = ctx.bar("prepare", total)

    def progress(_outcome: Any) -> None:
        if bar_holder.get("bar"):
            bar_holder["bar"](1)

    summary = prepare(
        ctx.raw,
        ctx.layout.prepare,
        annotations=ctx.annotations,
        file_list=ctx.file_list,
        cfg=ctx.cfg.prepare,
        seed=ctx.cfg.seed,
        device=ctx.device,
        workers=ctx.cfg.pipeline.workers,
        progress=progress,
        on_start=on_start,
    )
    return {"summary": _jsonable(summary)}


def _stage_prepare_external(ctx: RunContext) -> dict[str, Any]:
    if ctx.external_raw is None or ctx.external_labels is None:
        log.info("no external test set configured: skipping")
        return {"skipped": "no external test set"}
    from magphase.data.external import prepare_external

    bar_holder: dict[str, Any] = {}

    def on_start(total: int) -> None:
        bar_holder["bar"] = ctx.bar("prepare-external", total)

    def progress(*_args: Any) -> None:
        if bar_holder.get("bar"):
            bar_holder["bar"](1)

    summary = prepare_external(
        ctx.external_raw,
        ctx.external_labels,
        ctx.layout.prepare_external,
        facial_csv=ctx.external_facial,
        cfg=ctx.cfg.prepare,
        seed=ctx.cfg.seed,
        device=ctx.device,
        progress=progress,
        on_start=on_start,
    )
    return {"summary": _jsonable(summary)}


def _stage_autoencoder(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.autoencoder import evaluate_autoencoder
    from magphase.generative.autoencoder import train_autoencoder
    from magphase.models.autoencoder import load_autoencoder

    settings = ctx.cfg.autoencoder.train
    bar = ctx.bar("autoencoder", settings.steps)
    result = train_autoencoder(
        ctx.cfg, ctx.layout.root, store=ctx.layout.patches, resume=True, progress=_engine_progress(bar)
    )
    model = load_autoencoder(result.ema_path, device=ctx.device)
    evaluation = evaluate_autoencoder(
        model,
        ctx.layout.patches,
        ctx.layout.autoencoder_eval,
        seed=ctx.cfg.seed,
        sequence_aliases=ctx.cfg.autoencoder.sequence_aliases,
        extra={"weights": str(result.ema_path), "step": result.step},
    )
    return {"step": result.step, "evaluation": _jsonable(evaluation)}


def _stage_encode(ctx: RunContext) -> dict[str, Any]:
    from magphase.generative.encode import encode_store
    from magphase.models.autoencoder import load_autoencoder

    weights = ctx.layout.autoencoder
    model = load_autoencoder(_ema_path(weights), device=ctx.device)
    out = {}
    jobs = [(ctx.layout.patches, ctx.layout.latents)]
    if ctx.layout.external_patches.is_dir():
        jobs.append((ctx.layout.external_patches, ctx.layout.external_latents))
    for source, target in jobs:
        from magphase.data.store import Store

        bar = ctx.bar(f"encode {source.parent.name}", len(Store(source)))
        encode_store(
            model,
            source,
            target,
            autoencoder=weights,
            batch_size=ctx.cfg.autoencoder.encode_batch_size,
            sequence_aliases=ctx.cfg.autoencoder.sequence_aliases,
            canonical_phase=ctx.cfg.autoencoder.canonical_phase,
            progress=bar,
        )
        out[str(target)] = len(Store(target))
    return {"stores": out}


def _stage_flow1(ctx: RunContext) -> dict[str, Any]:
    from magphase.generative.flow import list_flow_snapshots, select_flow_snapshot, train_stage1

    bar = ctx.bar("flow stage 1", ctx.cfg.flow.stage1.train.steps)
    result = train_stage1(ctx.cfg, ctx.layout.root, resume=True, progress=_engine_progress(bar))
    info: dict[str, Any] = {"step": result.step}
    snaps = list_flow_snapshots(ctx.layout.root, 1)
    if ctx.cfg.pipeline.select_stage1 and len(snaps) > 1:
        best = _select_stage1(ctx, snaps)
        select_flow_snapshot(
            ctx.layout.root,
            1,
            best["step"],
            criterion="lowest val real-vs-synthetic AUROC",
            value=best["value"],
        )
        info["selected"] = best
    return info


def _stage_flow2(ctx: RunContext) -> dict[str, Any]:
    from magphase.generative.flow import list_flow_snapshots, select_flow_snapshot, train_stage2

    def progress(phase: int) -> Callable[..., None] | None:
        p = ctx.cfg.flow.stage2.phase1 if phase == 1 else ctx.cfg.flow.stage2.phase2
        return _engine_progress(ctx.bar(f"flow stage 2 phase {phase}", p.steps))

    result = train_stage2(ctx.cfg, ctx.layout.root, resume=True, progress=progress)
    info: dict[str, Any] = {"step": result.step}
    snaps = list_flow_snapshots(ctx.layout.root, 2)
    if ctx.cfg.pipeline.select_stage2 and len(snaps) > 1:
        best = _select_stage2(ctx, snaps)
        select_flow_snapshot(
            ctx.layout.root, 2, best["step"], criterion="highest val downstream AUROC", value=best["value"]
        )
        info["selected"] = best
    return info


def _stage_sample(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.downstream import downstream_required_counts
    from magphase.evaluation.realfake import realfake_required_counts
    from magphase.generative.flow import flow_weights
    from magphase.generative.sampling import SampleGroup

    ev = ctx.cfg.evaluation
    counts1 = realfake_required_counts(ctx.layout.latents, ev.realfake.n_test_sets, ev.realfake.sequences)
    groups1 = [SampleGroup(seq, None, n) for seq, n in counts1.items() if n > 0]
    _sample_store(
        ctx,
        flow_weights(ctx.layout.root, 1),
        ctx.layout.realfake_samples,
        groups1,
        stage=1,
        guidance=ev.realfake.guidance,
        decode=False,
        seed_offset=1,
    )
    counts2 = downstream_required_counts(ctx.layout.patches, ev.downstream)
    groups2 = [SampleGroup(seq, label, n) for (label, seq), n in counts2.items() if n > 0]
    # After a stage-2 selection the chosen candidate's store was drawn with this very recipe (same
    # weights, groups, guidance and steps) under the selection's seed: it is copied, not drawn again.
    selected = _selected_candidate_store(ctx, 2)
    _sample_store(
        ctx,
        flow_weights(ctx.layout.root, 2),
        ctx.layout.downstream_samples,
        groups2,
        stage=2,
        guidance=ev.downstream.guidance,
        decode=True,
        seed_offset=SELECTION_SEED_OFFSET[2] if selected is not None else 2,
        reuse=selected,
    )
    return {
        "realfake": {k: int(v) for k, v in counts1.items()},
        "downstream": {f"{lab}/{seq}": int(n) for (lab, seq), n in counts2.items()},
    }


def _stage_realfake(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.realfake import run_realfake

    result = run_realfake(
        ctx.layout.latents,
        ctx.layout.realfake_samples,
        ctx.layout.realfake,
        ctx.cfg.evaluation,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return {"result": _jsonable(result)}


def _stage_downstream(ctx: RunContext) -> dict[str, Any]:
    from magphase.evaluation.downstream import run_downstream

    ext = ctx.layout.external_patches if ctx.layout.external_patches.is_dir() else None
    result = run_downstream(
        ctx.layout.patches,
        ctx.layout.downstream_samples,
        ctx.layout.downstream,
        ctx.cfg.evaluation,
        external_store=ext,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return {"result": _jsonable(result)}


def _stage_phasegen(ctx: RunContext) -> dict[str, Any]:
    """PhaseGen: train, give the test split's magnitudes a generated phase, evaluate, draw."""
    if not ctx.cfg.pipeline.phasegen:
        return {"skipped": "pipeline.phasegen is off"}
    from magphase.data.store import Store
    from magphase.generative.phasegen import (
        evaluate_phasegen,
        generate_phasegen_store,
        load_phasegen,
        phasegen_markdown,
        train_phasegen,
    )
    from magphase.stages.phasegen import phasegen_figure

    pg = ctx.cfg.phasegen
    bar = ctx.bar("phasegen", pg.train.steps)
    result = train_phasegen(ctx.cfg, ctx.layout.root, resume=True, progress=_engine_progress(bar))
    model = load_phasegen(result.ema_path, device=ctx.device)
    sc = pg.sampling
    stat = result.ema_path.stat()
    recipe = {
        "weights_size": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns,
        "sampling": sc.model_dump(mode="json"),
        "limit": pg.evaluation_patches,
        "seed": ctx.cfg.seed,
    }
    store = ctx.layout.phasegen / "test-samples"
    try:
        fresh = store.is_dir() and Store(store).meta.get("recipe") == recipe
    except DataError:
        fresh = False
    if not fresh:
        real = Store(ctx.layout.patches)
        n = len(real.select(split="test"))
        limit = pg.evaluation_patches
        generate_phasegen_store(
            model,
            real,
            store,
            split="test",
            limit=limit,
            sampler=sc.sampler,
            steps=sc.steps,
            eta=sc.eta,
            seed=ctx.cfg.seed,
            batch_size=sc.batch_size,
            amp=sc.amp,
            project=sc.project,
            provenance={"weights": str(result.ema_path), "recipe": recipe},
            overwrite=True,
            progress=ctx.bar("phasegen test phases", min(n, limit) if limit is not None else n),
        )
    out = ctx.layout.phasegen / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    table = evaluate_phasegen(store, ctx.layout.patches)
    atomic_write_text(table.to_csv(index=False), out / "phasegen_phase.csv")
    atomic_write_text(phasegen_markdown(table), out / "phasegen_phase.md")
    fig = phasegen_figure(
        model,
        ctx.layout.patches,
        out / "phasegen_phases.png",
        k=6,
        draws=2,
        split="test",
        sampler=sc.sampler,
        steps=sc.steps,
        seed=ctx.cfg.seed,
        amp=sc.amp,
    )
    return {"step": result.step, "table": table.to_dict("records"), "figure": str(fig)}


def _stage_report(ctx: RunContext) -> dict[str, Any]:
    from magphase.report.report import write_report

    path = write_report(ctx.layout.root, ctx.cfg)
    return {"report": str(path)}


STAGE_FUNCTIONS: dict[str, Callable[[RunContext], dict[str, Any]]] = {
    "simulate": _stage_simulate,
    "prepare": _stage_prepare,
    "prepare-external": _stage_prepare_external,
    "autoencoder": _stage_autoencoder,
    "encode": _stage_encode,
    "flow1": _stage_flow1,
    "flow2": _stage_flow2,
    "sample": _stage_sample,
    "realfake": _stage_realfake,
    "downstream": _stage_downstream,
    "phasegen": _stage_phasegen,
    "report": _stage_report,
}


def stage_sections(cfg: MagphaseConfig, stage: str) -> list[Any]:
    """The config pieces a stage's own output depends on (upstream stages chain in separately)."""
    common: list[Any] = [cfg.seed]
    return (
        common
        + {
            "simulate": [cfg.data, cfg.simulate],
            "prepare": [cfg.data, cfg.prepare],
            "prepare-external": [cfg.data, cfg.prepare],
            # canonical_phase only changes what the encode stage writes, not the trained autoencoder.
            "autoencoder": [cfg.autoencoder.model_dump(mode="json", exclude={"canonical_phase"})],
            "encode": [cfg.autoencoder.sequence_aliases, cfg.autoencoder.canonical_phase],
            "flow1": [cfg.flow, cfg.pipeline.select_stage1, cfg.evaluation.realfake],
            "flow2": [cfg.flow, cfg.pipeline.select_stage2, cfg.evaluation.downstream],
            "sample": [cfg.flow.sampling, cfg.evaluation],
            "realfake": [cfg.evaluation],
            "downstream": [cfg.evaluation],
            "phasegen": [cfg.pipeline.phasegen, cfg.phasegen],
            "report": [],
        }[stage]
    )


def stage_hashes(cfg: MagphaseConfig) -> dict[str, str]:
    """Chained hashes: a stage's hash covers its own sections and every earlier stage's hash."""
    out: dict[str, str] = {}
    prev = ""
    for stage in STAGES:
        prev = config_hash(prev, *stage_sections(cfg, stage))
        out[stage] = prev
    return out


def _marker(layout: RunLayout, stage: str) -> Path:
    return layout.markers / f"{stage}.json"


def stage_status(layout: RunLayout, cfg: MagphaseConfig) -> dict[str, str]:
    """``done`` (marker matches this config), ``stale`` (marker of another config) or ``todo``."""
    hashes = stage_hashes(cfg)
    status = {}
    for stage in STAGES:
        path = _marker(layout, stage)
        if not path.is_file():
            status[stage] = "todo"
            continue
        try:
            recorded = json.loads(path.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError):
            recorded = None
        status[stage] = "done" if recorded == hashes[stage] else "stale"
    return status


def _select_range(start: str | None, until: str | None) -> list[str]:
    for name in (start, until):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    i = STAGES.index(start) if start else 0
    j = STAGES.index(until) if until else len(STAGES) - 1
    if j < i:
        raise ConfigError(f"--until {until} comes before --from {start}")
    return list(STAGES[i : j + 1])


@dataclass
class StagePlan:
    stage: str
    action: str  # run | skip
    reason: str


def plan_run(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
) -> list[StagePlan]:
    """What ``run_pipeline`` would do: stages in range run unless finished with this config."""
    layout = RunLayout(Path(run_dir))
    status = stage_status(layout, cfg)
    chosen = _select_range(start, until)
    plans = []
    rerun_downstream = False
    for stage in STAGES:
        if stage not in chosen:
            continue
        st = status[stage]
        if force or (start is not None and stage == start):
            plans.append(StagePlan(stage, "run", "forced" if force else "--from"))
            rerun_downstream = True
        elif st == "done" and not rerun_downstream:
            plans.append(StagePlan(stage, "skip", "finished with this config"))
        else:
            reason = {"todo": "not finished", "stale": "config changed"}.get(st, "an earlier stage reran")
            if st == "done":
                reason = "an earlier stage reran"
            plans.append(StagePlan(stage, "run", reason))
            rerun_downstream = True
    return plans


def run_pipeline(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    *,
    start: str | None = None,
    until: str | None = None,
    force: bool = False,
    progress: ProgressFactory | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Run the stages of ``plan_run`` in order; returns ``{stage: summary}`` of the stages run.

    ``on_stage(stage, event)`` is called with ``start``/``skip``/``done`` for the CLI to print.
    """
    layout = RunLayout(Path(run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dump_config(cfg), layout.root / "config.yaml")
    ctx = RunContext(cfg=cfg, layout=layout, device=resolve_device_name(cfg.device), progress=progress)
    hashes = stage_hashes(cfg)
    results: dict[str, Any] = {}
    for plan in plan_run(cfg, run_dir, start, until, force):
        if plan.action == "skip":
            if on_stage:
                on_stage(plan.stage, "skip")
            continue
        if on_stage:
            on_stage(plan.stage, "start")
        log.info("stage %s: %s", plan.stage, plan.reason)
        _marker(layout, plan.stage).unlink(missing_ok=True)
        t0 = time.perf_counter()
        summary = STAGE_FUNCTIONS[plan.stage](ctx)
        seconds = time.perf_counter() - t0
        record = {
            "stage": plan.stage,
            "config_hash": hashes[plan.stage],
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "device": ctx.device,
            "summary": summary,
        }
        atomic_write_text(json.dumps(record, indent=2, default=str) + "\n", _marker(layout, plan.stage))
        results[plan.stage] = record
        if on_stage:
            on_stage(plan.stage, "done")
    return results


def stage_records(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every stage marker of a run (for the report's run-time table)."""
    layout = RunLayout(Path(run_dir))
    out = {}
    for stage in STAGES:
        path = _marker(layout, stage)
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def hardware_summary() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ----------------------------------------------------------------------------------------- helpers
def _engine_progress(bar: Callable[..., None] | None) -> Callable[..., None] | None:
    """Adapt a ``bar(increment)`` callback to the engine's ProgressEvent stream."""
    if bar is None:
        return None
    state = {"step": None}

    def callback(event: Any) -> None:
        step = getattr(event, "step", None)
        if step is None:
            return
        if state["step"] is None:
            state["step"] = step
            bar(step) if step else None
            return
        if step > state["step"]:
            bar(step - state["step"])
            state["step"] = step

    return callback


def _ema_path(stage_dir: Path) -> Path:
    path = stage_dir / "ema.safetensors"
    if not path.is_file():
        raise DataError(path, None, "no exported EMA weights: train this stage first")
    return path


def _sample_store(
    ctx: RunContext,
    weights: Path,
    out: Path,
    groups: list[Any],
    *,
    stage: int,
    guidance: float,
    decode: bool,
    seed_offset: int,
    split: str = "train",
    reuse: Path | None = None,
) -> Path:
    """Sample ``groups`` into ``out`` unless it already holds this exact recipe; or copy ``reuse``
    (another store) when that one holds it."""
    from magphase.data.store import Store, copy_store
    from magphase.generative.flow import load_flow_model
    from magphase.generative.sampling import generate_synthetic_store
    from magphase.models.autoencoder import load_autoencoder

    sampling = ctx.cfg.flow.sampling
    seed = ctx.cfg.seed * 1000 + seed_offset
    stat = weights.stat()
    # Everything the samples depend on: a store made from another recipe is resampled, not reused.
    recipe = {
        "weights": str(weights),
        "weights_size": stat.st_size,
        "weights_mtime_ns": stat.st_mtime_ns,
        "stage": stage,
        "guidance": guidance,
        "steps": sampling.steps,
        "solver": sampling.solver,
        "amp": sampling.amp,
        "seed": seed,
        "decode": decode,
        "split": split,
        "groups": [[g.sequence, g.label, g.n] for g in groups],
    }
    if decode:  # decoded patches also depend on the autoencoder weights
        ae = _ema_path(ctx.layout.autoencoder)
        ae_stat = ae.stat()
        recipe.update(
            autoencoder=str(ae), autoencoder_size=ae_stat.st_size, autoencoder_mtime_ns=ae_stat.st_mtime_ns
        )
    total = sum(g.n for g in groups)
    if out.is_dir():
        try:
            if Store(out).meta.get("recipe") == recipe:
                log.info("%s is up to date", out)
                return out
        except DataError:
            pass
    if reuse is not None and reuse.is_dir():
        try:
            same = Store(reuse).meta.get("recipe") == recipe
        except DataError:
            same = False
        if same:
            return copy_store(reuse, out, copied_from=str(reuse))
    model = load_flow_model(weights, device=ctx.device)
    autoencoder = load_autoencoder(_ema_path(ctx.layout.autoencoder), device=ctx.device) if decode else None
    return generate_synthetic_store(
        model,
        out,
        groups,
        stage=stage,
        guidance=guidance,
        steps=sampling.steps,
        solver=sampling.solver,
        seed=seed,
        split=split,
        batch_size=sampling.batch_size,
        amp=sampling.amp,
        autoencoder=autoencoder,
        provenance={"weights": str(weights), "recipe": recipe},
        overwrite=True,
        progress=ctx.bar(f"sample stage {stage}", total),
    )


def _snapshot_candidates(ctx: RunContext, snaps: dict[int, Path]) -> dict[int, Path]:
    keep = ctx.cfg.pipeline.max_selection_candidates
    steps = sorted(snaps)
    if len(steps) > keep:
        # Evenly spread over training, always including the last snapshot.
        idx = sorted({round(i * (len(steps) - 1) / (keep - 1)) for i in range(keep)})
        steps = [steps[i] for i in idx]
    return {s: snaps[s] for s in steps}


def _select_stage1(ctx: RunContext, snaps: dict[int, Path]) -> dict[str, Any]:
    from magphase.data.store import Store
    from magphase.evaluation.realfake import select_stage1_checkpoint
    from magphase.generative.sampling import SampleGroup

    ev = ctx.cfg.evaluation
    real = Store(ctx.layout.latents)
    seqs = ev.realfake.sequences or sorted(set(real.manifest["sequence"]))
    # Candidates are scored on validation only: train + val sized synthetic sets suffice.
    groups = []
    for seq in seqs:
        n = len(real.select(sequence=seq, split=["train", "val"]))
        if n:
            groups.append(SampleGroup(seq, None, n))
    candidates = _sample_candidates(ctx, snaps, groups, stage=1, guidance=ev.realfake.guidance, decode=False)
    result = select_stage1_checkpoint(
        ctx.layout.latents,
        candidates,
        ctx.layout.selection / "stage1",
        ev,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return _selected_snapshot(result)


def _select_stage2(ctx: RunContext, snaps: dict[int, Path]) -> dict[str, Any]:
    from magphase.evaluation.downstream import downstream_required_counts, select_stage2_checkpoint
    from magphase.generative.sampling import SampleGroup

    ev = ctx.cfg.evaluation
    counts = downstream_required_counts(ctx.layout.patches, ev.downstream)
    groups = [SampleGroup(seq, label, n) for (label, seq), n in counts.items() if n > 0]
    candidates = _sample_candidates(ctx, snaps, groups, stage=2, guidance=ev.downstream.guidance, decode=True)
    result = select_stage2_checkpoint(
        ctx.layout.patches,
        candidates,
        ctx.layout.selection / "stage2",
        ev,
        seed=ctx.cfg.seed,
        device=ctx.device,
    )
    return _selected_snapshot(result)


def _sample_candidates(
    ctx: RunContext,
    snaps: dict[int, Path],
    groups: list[Any],
    *,
    stage: int,
    guidance: float,
    decode: bool,
) -> dict[str, Path]:
    """One synthetic store per candidate snapshot, ``SELECTION/stage{stage}/step{step:07d}``: name -> path."""
    candidates = {}
    for step, path in _snapshot_candidates(ctx, snaps).items():
        out = ctx.layout.selection / f"stage{stage}" / f"step{step:07d}"
        candidates[f"step{step}"] = _sample_store(
            ctx,
            path,
            out,
            groups,
            stage=stage,
            guidance=guidance,
            decode=decode,
            seed_offset=SELECTION_SEED_OFFSET[stage],
        )
    return candidates


def _selected_candidate_store(ctx: RunContext, stage: int) -> Path | None:
    """The selection store of the snapshot a stage's selection chose, if there is one."""
    from magphase.generative.flow import SELECTED_NAME, stage_dir

    record = stage_dir(ctx.layout.root, stage) / SELECTED_NAME
    if not record.is_file():
        return None
    store = ctx.layout.selection / f"stage{stage}" / f"step{int(json.loads(record.read_text())['step']):07d}"
    return store if store.is_dir() else None


def _selected_snapshot(result: Any) -> dict[str, Any]:
    """The winning ``step{N}`` candidate of a checkpoint selection as ``{step, value, scores}``."""
    step = int(str(result.best).removeprefix("step"))
    return {"step": step, "value": result.scores[result.best], "scores": _jsonable(result.scores)}


def _jsonable(obj: Any) -> Any:
    """Best-effort JSON view of stage summaries (dataclasses, paths, numpy scalars)."""
    import dataclasses

    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "to_json") and callable(obj.to_json):
        return _jsonable(obj.to_json())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_") and not _is_bulky(getattr(obj, f.name))
        }
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    return str(obj)


def _is_bulky(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, (pd.DataFrame, torch.nn.Module, torch.Tensor))
