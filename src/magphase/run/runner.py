"""Run stages in order, skipping the ones finished with this config, resuming the others.

A stage's hash covers the config keys it declares (``Stage.config``) and the hash of every
earlier stage, so a change upstream reruns everything after it. A finished stage's marker
(:meth:`magphase.rundir.RunLayout.write_marker`) holds that hash; ``run_pipeline`` skips stages whose
marker matches. Each stage's own work resumes (training from its last checkpoint, prepare per volume,
evaluation per finished classifier, sampling per part). Library code logs; the CLI passes progress
factories and an ``on_stage`` callback to print.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magphase.config import MagphaseConfig, config_hash, dump_config
from magphase.errors import ConfigError
from magphase.rundir import STAGE_NAMES, RunLayout
from magphase.stages import BY_NAME, STAGES
from magphase.stages.base import ProgressFactory, RunContext
from magphase.training.distributed import is_main_process, resolve_device_name
from magphase.utils.atomic import atomic_write_text
from magphase.utils.faults import in_stage

log = logging.getLogger(__name__)


def stage_sections(cfg: MagphaseConfig, stage: str) -> list[Any]:
    """The config pieces a stage's own output depends on (upstream stages chain in separately)."""
    return [cfg.seed, *BY_NAME[stage].sections(cfg)]


def stage_hashes(cfg: MagphaseConfig) -> dict[str, str]:
    """Chained hashes: a stage's hash covers its own sections and every earlier stage's hash."""
    out: dict[str, str] = {}
    prev = ""
    for stage in STAGES:
        prev = config_hash(prev, *stage_sections(cfg, stage.name))
        out[stage.name] = prev
    return out


def stage_status(layout: RunLayout, cfg: MagphaseConfig) -> dict[str, str]:
    """``done`` (marker matches this config), ``stale`` (marker of another config) or ``todo``."""
    hashes = stage_hashes(cfg)
    status = {}
    for stage in STAGE_NAMES:
        record = layout.read_marker(stage)
        if record is None:
            status[stage] = "todo"
        else:
            status[stage] = "done" if record.get("config_hash") == hashes[stage] else "stale"
    return status


def _select_range(start: str | None, until: str | None) -> list[str]:
    for name in (start, until):
        if name is not None and name not in STAGE_NAMES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    i = STAGE_NAMES.index(start) if start else 0
    j = STAGE_NAMES.index(until) if until else len(STAGE_NAMES) - 1
    if j < i:
        raise ConfigError(f"--until {until} comes before --from {start}")
    return list(STAGE_NAMES[i : j + 1])


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
    status = stage_status(RunLayout(Path(run_dir)), cfg)
    chosen = _select_range(start, until)
    plans = []
    rerun_downstream = False
    for stage in STAGE_NAMES:
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


def _context(
    cfg: MagphaseConfig, layout: RunLayout, progress: ProgressFactory | None, *, write_config: bool = True
) -> RunContext:
    layout.root.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        layout.remove_partials()
        if write_config or not layout.config_file.is_file():
            atomic_write_text(dump_config(cfg), layout.config_file)
        layout.write_hardware()
    return RunContext(cfg=cfg, layout=layout, device=resolve_device_name(cfg.device), progress=progress)


#: Config keys naming input data, what each must be, and the stages that read it.
_DATA_INPUTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("raw", "folder", ("simulate", "prepare")),
    ("annotations", "file", ("prepare",)),
    ("file_list", "file", ("prepare",)),
    ("external_raw", "folder", ("prepare-external",)),
    ("external_labels", "file", ("prepare-external",)),
)


def check_inputs(cfg: MagphaseConfig, stages: list[str]) -> None:
    """Refuse, before any work starts, a run whose data paths are missing or that has nothing to read.

    Raises:
        ConfigError: naming the config key (``data.raw`` ...) and the path.
    """
    for key, kind, readers in _DATA_INPUTS:
        value = getattr(cfg.data, key)
        if value is None or not any(s in stages for s in readers):
            continue
        path = Path(value)
        ok = path.is_dir() if kind == "folder" else path.is_file()
        if not ok:
            what = "no such folder" if kind == "folder" else "no such file"
            raise ConfigError(f"data.{key}: {path}: {what}")
    if cfg.data.raw is None and "simulate" in stages and cfg.simulate.volumes < 1:
        raise ConfigError(
            "simulate.volumes: 0 volumes to simulate and no data.raw to read: nothing to train on"
        )
    if (
        cfg.data.external_raw is not None
        and cfg.data.external_labels is None
        and "prepare-external" in stages
    ):
        raise ConfigError("data.external_labels: data.external_raw is set but its labels CSV is not")


def _locked(layout: RunLayout) -> contextlib.AbstractContextManager[Any]:
    """The run folder's lock, taken by the main process only (torchrun ranks share rank 0's)."""
    if not is_main_process():
        return contextlib.nullcontext()
    layout.root.mkdir(parents=True, exist_ok=True)
    return layout.lock()


def _execute(ctx: RunContext, stage: str, config_hash_: str) -> dict[str, Any]:
    ctx.layout.clear_marker(stage)
    t0 = time.perf_counter()
    with in_stage(stage):
        summary = BY_NAME[stage].run(ctx)
    record = {
        "stage": stage,
        "config_hash": config_hash_,
        "seconds": round(time.perf_counter() - t0, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": ctx.device,
        "summary": summary,
    }
    if is_main_process():  # under torchrun every rank runs the stage; rank 0 marks it finished
        ctx.layout.write_marker(stage, record)
    return record


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
    """Run the stages of ``plan_run`` in order; returns ``{stage: marker record}`` of the stages run.

    ``on_stage(stage, event)`` is called with ``start``/``skip``/``done`` for the CLI to print.
    """
    layout = RunLayout(Path(run_dir))
    plans = plan_run(cfg, run_dir, start, until, force)
    check_inputs(cfg, [p.stage for p in plans if p.action == "run"])
    with _locked(layout):
        ctx = _context(cfg, layout, progress)
        hashes = stage_hashes(cfg)
        results: dict[str, Any] = {}
        for plan in plans:
            if plan.action == "skip":
                if on_stage:
                    on_stage(plan.stage, "skip")
                continue
            if on_stage:
                on_stage(plan.stage, "start")
            log.info("stage %s: %s", plan.stage, plan.reason)
            results[plan.stage] = _execute(ctx, plan.stage, hashes[plan.stage])
            if on_stage:
                on_stage(plan.stage, "done")
    return results


def run_stage(
    cfg: MagphaseConfig,
    run_dir: str | Path,
    stage: str,
    *,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Run one stage in ``run_dir`` (a CLI verb), whatever its marker says, and mark it finished.

    It is the same ``run`` that ``magphase run`` calls, behind the same marker: a later ``magphase run``
    with the same config skips it. Upstream stages are not checked; their outputs must exist.
    """
    if stage not in BY_NAME:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
    layout = RunLayout(Path(run_dir))
    check_inputs(cfg, [stage])
    with _locked(layout):
        # RUN/config.yaml stays the config of the last whole run; a single stage writes it only if absent.
        ctx = _context(cfg, layout, progress, write_config=False)
        log.info("stage %s (single stage)", stage)
        return _execute(ctx, stage, stage_hashes(cfg)[stage])
