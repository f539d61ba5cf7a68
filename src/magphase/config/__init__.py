"""Typed configuration for every stage: YAML in, validated pydantic models, resolved YAML out.

Each stage owns one section model in its own module; :class:`MagphaseConfig` composes them.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from magphase.config.autoencoder import AutoencoderConfig
from magphase.config.evaluation import EvaluationConfig
from magphase.config.flow import FlowConfig
from magphase.config.phasegen import PhaseGenConfig
from magphase.config.prepare import PrepareConfig
from magphase.config.presets import PresetTable, Section, section_type
from magphase.config.simulate import SimulateConfig
from magphase.errors import ConfigError


class DataPaths(Section):
    """Where the raw data lives. Relative paths resolve against the run directory's parent cwd."""

    raw: str | None = Field(None, description="folder of fastMRI-format .h5 files (None: simulate)")
    annotations: str | None = Field(None, description="fastMRI+ brain.csv")
    file_list: str | None = Field(None, description="fastMRI+ brain_file_list.csv")
    external_raw: str | None = Field(None, description="external test set folder of .h5 files")
    external_labels: str | None = Field(None, description="external test set volume labels CSV")


class PipelineConfig(Section):
    """How ``magphase run`` chains the stages (paper 2.4.3 model selection included)."""

    workers: int = Field(1, ge=1, le=512, description="processes for prepare (simulate has its own)")
    select_stage1: bool = Field(
        True, description="pick the stage-1 snapshot with the lowest validation real-vs-synthetic AUROC"
    )
    select_stage2: bool = Field(
        True, description="pick the stage-2 snapshot with the highest validation downstream AUROC"
    )
    phasegen: bool = Field(
        False, description="also train PhaseGen and evaluate its phases on the test split (stage phasegen)"
    )
    max_selection_candidates: int = Field(
        3, ge=2, le=100, description="snapshots scored per stage (evenly spread, the last included)"
    )
    keep_raw: bool = Field(
        True,
        description=(
            "False: a run that simulates its data prepares each training volume as soon as it is "
            "written and deletes its raw file, so the disk holds patches, not k-space (external "
            "volumes are kept)"
        ),
    )


class MagphaseConfig(Section):
    """The whole configuration of a run. Every random choice derives from ``seed``."""

    name: str = "default"
    seed: int = Field(0, ge=0, le=2**63 - 1, description="root of every random choice")
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto | cpu | cuda | cuda:N | mps"
    )
    data: DataPaths = DataPaths()
    simulate: SimulateConfig = SimulateConfig()
    prepare: PrepareConfig = PrepareConfig()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    flow: FlowConfig = FlowConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    phasegen: PhaseGenConfig = PhaseGenConfig()
    pipeline: PipelineConfig = PipelineConfig()


def preset_tables() -> dict[str, PresetTable]:
    """Every section's preset table, by section name."""
    tables: dict[str, PresetTable] = {}
    for name, field in MagphaseConfig.model_fields.items():
        table = getattr(section_type(field.annotation), "PRESETS", None)
        if table is not None:
            tables[name] = table
    return tables


def _deep_update(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=3", "seed=1"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({_yaml_problem(exc)})") from exc
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line, column)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> MagphaseConfig:
    """Load a YAML config (or the defaults), apply ``key=value`` overrides, validate.

    Raises:
        ConfigError: unreadable YAML, unknown keys or invalid values, with the offending key path.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{p}: config file not found") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"{p}: is a folder, not a config file") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {_yaml_problem(exc)}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data = _deep_update(data, parse_overrides(overrides))
    try:
        return MagphaseConfig.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid config: {msgs}") from exc


def dump_config(cfg: BaseModel) -> str:
    """Resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_hash(*parts: BaseModel | dict | str | int | None) -> str:
    """Stable short hash of config sections (what a stage's completion marker records)."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


__all__ = [
    "AutoencoderConfig",
    "DataPaths",
    "EvaluationConfig",
    "FlowConfig",
    "MagphaseConfig",
    "PipelineConfig",
    "PrepareConfig",
    "SimulateConfig",
    "config_hash",
    "dump_config",
    "load_config",
    "parse_overrides",
    "preset_tables",
]
