"""The run directory: the one owner of where every stage reads and writes, and of stage completion.

Layout (``RUN`` = the run directory; each stage writes only below its own folder)::

    RUN/config.yaml                    the resolved config of the last ``magphase run``
    RUN/hardware.json                  the machine that ran it (python, torch, CPU/GPU)
    RUN/run.lock                       while a run or stage verb works here: its pid, host, start
    RUN/.stages/<stage>.json           completion marker: config hash, seconds, device, summary
    RUN/data/                          simulate: fastMRI-format raw volumes + brain.csv (+ external/)
    RUN/prepare/patches                prepare: patch store, Table 1, Fig. 2, rejects
    RUN/prepare-external/patches       prepare-external: the external test store
    RUN/autoencoder/                   autoencoder: engine folder (ema.safetensors), val.jsonl, evaluation/
    RUN/latents, RUN/latents-external  encode: latent stores (mu, logvar)
    RUN/flow/stage1/                   flow1: engine folder, snapshots/, selected.json
    RUN/flow/stage2/{phase1,phase2}/   flow2: engine folders; init.json, selected.json, class_probe.json
    RUN/evaluation/selection/stage{1,2}/step<N>   snapshot-selection sample stores
    RUN/samples/{realfake,downstream}  sample: synthetic stores; figures/ (Figs. 4-5)
    RUN/evaluation/realfake/           realfake: Table 4
    RUN/evaluation/downstream/         downstream: substitution / additive, Figs. 6-8
    RUN/phasegen/                      phasegen: engine folder, test-samples/, evaluation/
    RUN/report/                        report: report.md, report.json and copies of every figure

A stage is finished when its marker holds the hash of the config that produced it
(:meth:`RunLayout.write_marker`); ``magphase run`` compares that hash and skips or reruns. No other
"done" file exists. Stages and the report ask a :class:`RunLayout` for paths; nothing else joins
run paths.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magphase.data.store import remove_stale_partials_under
from magphase.errors import ConfigError, DataError
from magphase.models.weights import EMA_WEIGHTS_NAME
from magphase.training.checkpoint import list_snapshots
from magphase.utils.atomic import atomic_write_text, remove_stale_temp_files
from magphase.utils.lockfile import PidLock

log = logging.getLogger(__name__)

#: Every stage, in run order (the stage functions live in :mod:`magphase.stages`).
STAGE_NAMES: tuple[str, ...] = (
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
MARKERS_DIR = ".stages"
LOCK_NAME = "run.lock"
#: In ``RUN/flow/stage{1,2}``: the snapshot that model selection chose.
SELECTED_NAME = "selected.json"
#: In ``RUN/flow/stage2``: which stage-1 weights (path, tensor digest) its checkpoints started from.
STAGE2_INIT_NAME = "init.json"
#: In ``RUN/flow/stage2``: the stage-2 class probe (the flow model used as a classifier).
CLASS_PROBE_NAME = "class_probe.json"
FIG4_NAME = "fig4_stage1_samples.png"
FIG5_NAME = "fig5_stage2_samples.png"


def _flow_stage(stage: int) -> int:
    if stage not in (1, 2):
        raise ValueError(f"flow stage must be 1 or 2, got {stage}")
    return stage


@dataclass(frozen=True)
class RunLayout:
    """Where every stage of a run directory reads and writes (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------------------- run files
    @property
    def config_file(self) -> Path:
        return self.root / "config.yaml"

    @property
    def hardware_file(self) -> Path:
        return self.root / "hardware.json"

    # ---------------------------------------------------------------------------------- stages
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
    def autoencoder_weights(self) -> Path:
        """``RUN/autoencoder/ema.safetensors`` (it may not exist yet: see :func:`require_file`)."""
        return self.autoencoder / EMA_WEIGHTS_NAME

    @property
    def latents(self) -> Path:
        return self.root / "latents"

    @property
    def external_latents(self) -> Path:
        return self.root / "latents-external"

    def flow(self, stage: int) -> Path:
        """``RUN/flow/stage{1,2}``."""
        return self.root / "flow" / f"stage{_flow_stage(stage)}"

    def flow_training(self, stage: int) -> Path:
        """The engine folder holding a flow stage's final weights and kept snapshots."""
        return self.flow(1) if stage == 1 else self.flow(2) / "phase2"

    def flow_snapshots(self, stage: int) -> dict[int, Path]:
        """``{step: path}`` of the stage's kept EMA snapshots (stage 2: phase 2's), ascending."""
        return list_snapshots(self.flow_training(stage))

    def select_flow_snapshot(self, stage: int, step: int, **info: Any) -> Path:
        """Record the snapshot chosen by model selection (``info``: criterion, value, ...); from then
        on :meth:`flow_weights` returns it. Returns the ``selected.json`` path."""
        snaps = self.flow_snapshots(stage)
        if step not in snaps:
            raise ConfigError(f"flow stage {stage} has no snapshot at step {step} (kept: {sorted(snaps)})")
        # Stored relative to the run directory so a moved run stays valid.
        record = {"stage": stage, "step": step, "path": str(snaps[step].relative_to(self.root)), **info}
        return atomic_write_text(
            json.dumps(record, indent=2, default=str) + "\n", self.flow(stage) / SELECTED_NAME
        )

    def selected_flow_snapshot(self, stage: int) -> dict[str, Any] | None:
        """The selection record of a flow stage, or None when none was made."""
        path = self.flow(stage) / SELECTED_NAME
        return json.loads(path.read_text()) if path.is_file() else None

    def flow_weights(self, stage: int) -> Path:
        """The inference weights of a flow stage: the selected snapshot if any, else the final EMA.

        Raises:
            DataError: the stage has not produced weights.
        """
        selected = self.selected_flow_snapshot(stage)
        if selected is not None:
            return self.root / selected["path"]
        return require_file(
            self.flow_training(stage) / EMA_WEIGHTS_NAME,
            f"flow stage {stage} has no EMA weights (train it first)",
        )

    @property
    def stage2_init_record(self) -> Path:
        return self.flow(2) / STAGE2_INIT_NAME

    @property
    def class_probe(self) -> Path:
        return self.flow(2) / CLASS_PROBE_NAME

    @property
    def selection(self) -> Path:
        return self.root / "evaluation" / "selection"

    def selection_store(self, stage: int, step: int) -> Path:
        """The sample store a snapshot selection drew for the candidate of ``step``."""
        return self.selection / f"stage{_flow_stage(stage)}" / f"step{step:07d}"

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
    def sample_figures(self) -> Path:
        return self.samples / "figures"

    @property
    def realfake(self) -> Path:
        return self.root / "evaluation" / "realfake"

    @property
    def downstream(self) -> Path:
        return self.root / "evaluation" / "downstream"

    @property
    def phasegen(self) -> Path:
        return self.root / "phasegen"

    @property
    def phasegen_samples(self) -> Path:
        return self.phasegen / "test-samples"

    @property
    def phasegen_eval(self) -> Path:
        return self.phasegen / "evaluation"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_file(self) -> Path:
        return self.report / "report.md"

    # ----------------------------------------------------------------------------------- lock
    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    def lock(self) -> PidLock:
        """``with layout.lock():`` this process alone writes the run folder (stale locks are taken over)."""
        return PidLock(self.lock_file, what="run folder")

    def remove_partials(self) -> list[Path]:
        """Delete what killed writers left in the run folder (atomic temp files, partial stores).

        Call it holding :meth:`lock`: then no other process of this run writes here.
        """
        removed = remove_stale_temp_files(self.root) + remove_stale_partials_under(self.root)
        for path in removed:
            log.info("removed %s (left by a killed writer)", path)
        return removed

    # -------------------------------------------------------------------------------- markers
    @property
    def markers(self) -> Path:
        return self.root / MARKERS_DIR

    def marker(self, stage: str) -> Path:
        if stage not in STAGE_NAMES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_NAMES)}")
        return self.markers / f"{stage}.json"

    def read_marker(self, stage: str) -> dict[str, Any] | None:
        """A stage's completion record, or None (absent or unreadable: the stage counts as not done)."""
        path = self.marker(stage)
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def write_marker(self, stage: str, record: dict[str, Any]) -> Path:
        """Mark ``stage`` finished (atomically); ``record`` holds at least ``config_hash``."""
        if "config_hash" not in record:
            raise ValueError("a stage marker needs the config_hash")
        return atomic_write_text(json.dumps(record, indent=2, default=str) + "\n", self.marker(stage))

    def clear_marker(self, stage: str) -> None:
        self.marker(stage).unlink(missing_ok=True)

    def stage_records(self) -> dict[str, dict[str, Any]]:
        """Every finished stage's marker, in run order (the report's run-time table)."""
        out = {}
        for stage in STAGE_NAMES:
            record = self.read_marker(stage)
            if record is not None:
                out[stage] = record
        return out

    # ------------------------------------------------------------------------------- hardware
    def write_hardware(self) -> Path:
        return atomic_write_text(json.dumps(hardware_summary(), indent=2) + "\n", self.hardware_file)

    def read_hardware(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.hardware_file.read_text()) if self.hardware_file.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None


def require_file(path: Path, why: str) -> Path:
    """``path`` if it is a file, else a :class:`DataError` naming it and ``why``."""
    if not path.is_file():
        raise DataError(path, None, why)
    return path


def hardware_summary() -> dict[str, Any]:
    """Python, torch, platform, CPU count and GPU of this machine (recorded with a run)."""
    import os

    import torch

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


__all__ = [
    "CLASS_PROBE_NAME",
    "FIG4_NAME",
    "FIG5_NAME",
    "LOCK_NAME",
    "MARKERS_DIR",
    "SELECTED_NAME",
    "STAGE2_INIT_NAME",
    "STAGE_NAMES",
    "RunLayout",
    "hardware_summary",
    "require_file",
]
