"""The stage interface: what every stage module of :mod:`magphase.stages` provides.

A stage is a :class:`Stage`: its name, what it reads and writes (names of :class:`RunLayout`
paths, for the docs and ``--dry-run``), the config pieces its output depends on (hashed into its
completion marker, chained with every earlier stage's hash by the runner) and ``run(ctx)``, which
does the work and returns a JSON-able summary. ``magphase run`` calls ``run`` for each stage in
order; each CLI verb of a stage calls the same ``run`` through :func:`magphase.run.run_stage`.
Work inside a stage resumes (training from its last checkpoint, stores per part), so a killed
stage started again continues rather than restarts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magphase.config import MagphaseConfig
from magphase.rundir import RunLayout

#: ``factory(description, total) -> callback(n_done_increment)`` or None (the CLI draws bars).
ProgressFactory = Callable[[str, int | None], Callable[..., None] | None]


def patch_store(cfg: MagphaseConfig, layout: RunLayout) -> Path:
    """The patch store of a run: ``autoencoder.patch_store``, else ``RUN/prepare/patches``."""
    given = cfg.autoencoder.patch_store
    return Path(given) if given is not None else layout.patches


def latent_store(cfg: MagphaseConfig, layout: RunLayout) -> Path:
    """The latent store of a run: ``flow.latent_store``, else ``RUN/latents``."""
    given = cfg.flow.latent_store
    return Path(given) if given is not None else layout.latents


@dataclass
class RunContext:
    """What a stage's ``run`` receives: the resolved config, the run layout and the device."""

    cfg: MagphaseConfig
    layout: RunLayout
    device: str
    progress: ProgressFactory | None = None

    def bar(self, desc: str, total: int | None = None) -> Callable[..., None] | None:
        return self.progress(desc, total) if self.progress is not None else None

    # Inputs that the config may point elsewhere than the run directory.
    @property
    def raw(self) -> Path:
        """Raw volumes: ``data.raw``, else this run's simulated dataset."""
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

    @property
    def patches(self) -> Path:
        """The patch store: ``autoencoder.patch_store``, else ``RUN/prepare/patches``."""
        return patch_store(self.cfg, self.layout)

    @property
    def external_patches(self) -> Path | None:
        """The external test store: ``autoencoder.external_store``, else ``RUN/prepare-external/patches``
        when it exists, else None."""
        given = self.cfg.autoencoder.external_store
        if given is not None:
            return Path(given)
        return self.layout.external_patches if self.layout.external_patches.is_dir() else None

    @property
    def latents(self) -> Path:
        """The latent store the flow stages train on: ``flow.latent_store``, else ``RUN/latents``."""
        return latent_store(self.cfg, self.layout)


@dataclass(frozen=True)
class Stage:
    """One box of the pipeline (see the module docstring)."""

    name: str
    description: str
    run: Callable[[RunContext], dict[str, Any]]
    config: tuple[str, ...]  # dotted config keys the stage's output depends on (hashed into its marker)
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    config_exclude: tuple[str, ...] = ()  # dotted keys inside `config` that do not change the output

    def sections(self, cfg: MagphaseConfig) -> list[Any]:
        """The values of :attr:`config` in ``cfg`` (a section minus its excluded keys as a JSON dict)."""
        out = []
        for key in self.config:
            value: Any = cfg
            for part in key.split("."):
                value = getattr(value, part)
            drop = {k[len(key) + 1 :] for k in self.config_exclude if k.startswith(key + ".")}
            if drop:
                value = value.model_dump(mode="json", exclude=drop)
            out.append(value)
        return out


def engine_progress(bar: Callable[..., None] | None) -> Callable[..., None] | None:
    """Adapt a ``bar(increment)`` callback to the training engine's ProgressEvent stream."""
    if bar is None:
        return None
    state: dict[str, int | None] = {"step": None}

    def callback(event: Any) -> None:
        step = getattr(event, "step", None)
        if step is None:
            return
        if state["step"] is None:
            state["step"] = step
            if step:
                bar(step)
            return
        if step > state["step"]:  # type: ignore[operator]
            bar(step - state["step"])  # type: ignore[operator]
            state["step"] = step

    return callback


def counting_progress(ctx: RunContext, desc: str) -> tuple[Callable[[int], None], Callable[..., None]]:
    """``(on_start(total), progress(*_))`` for library loops that announce their total first."""
    holder: dict[str, Any] = {}

    def on_start(total: int) -> None:
        holder["bar"] = ctx.bar(desc, total)

    def progress(*_args: Any) -> None:
        if holder.get("bar"):
            holder["bar"](1)

    return on_start, progress


def jsonable(obj: Any) -> Any:
    """Best-effort JSON view of stage summaries (dataclasses, paths, numpy scalars)."""
    import numpy as np

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "to_json") and callable(obj.to_json):
        return jsonable(obj.to_json())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_") and not _is_bulky(getattr(obj, f.name))
        }
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    return str(obj)


def _is_bulky(value: Any) -> bool:
    import pandas as pd
    import torch

    return isinstance(value, (pd.DataFrame, torch.nn.Module, torch.Tensor))


__all__ = [
    "ProgressFactory",
    "RunContext",
    "Stage",
    "counting_progress",
    "engine_progress",
    "jsonable",
    "latent_store",
    "patch_store",
]
