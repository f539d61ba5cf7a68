"""Stage ``phasegen``: train PhaseGen, give the test split's magnitudes a generated phase, evaluate, draw."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from magphase.config import MagphaseConfig
from magphase.config.phasegen import DiffusionSettings, PhaseGenConfig
from magphase.data.datasets import PatchDataset
from magphase.data.store import Store, StoreWriter
from magphase.errors import ConfigError, DataError
from magphase.generative.phase_diffusion import (
    GLOBAL_PHASE_MODES,
    alphas_cumprod,
    draw_noise,
    sample_phase,
    training_target,
)
from magphase.models.complex_unet import ComplexUNet, complex_unet_config
from magphase.mri.complex import channels_to_complex, complex_to_channels
from magphase.stages.base import RunContext, Stage, engine_progress
from magphase.training.engine import TrainResult, TrainTaskBase, fit
from magphase.utils.atomic import atomic_write_text
from magphase.utils.seeds import derived_rng
from magphase.viz.figures_phasegen import plot_phasegen

log = logging.getLogger(__name__)


def pick_patches(store: Store, k: int, split: str | None = "test", seed: int = 0) -> np.ndarray:
    """``k`` store indices spread over the sequences (round robin, random within a sequence)."""
    idx = store.select(split=split) if split is not None else np.arange(len(store))
    if idx.size == 0:
        raise DataError(store.path, "split", f"no patches in split {split!r}")
    rng = derived_rng(seed, 0x96)
    seqs = store.manifest["sequence"].astype(str).to_numpy()[idx]
    pools = {s: list(rng.permutation(idx[seqs == s])) for s in sorted(set(seqs))}
    out: list[int] = []
    while len(out) < min(k, idx.size):
        for s in pools:
            if pools[s] and len(out) < k:
                out.append(int(pools[s].pop()))
    return np.array(out, dtype=np.int64)


def phasegen_figure(
    model: nn.Module,
    store: str | Path | Store,
    out_png: str | Path,
    *,
    k: int = 6,
    draws: int = 2,
    split: str | None = "test",
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    amp: str = "none",
) -> Path:
    """Draw ``draws`` PhaseGen phases for ``k`` real patches of ``store``; plot them beside the real phase."""
    store = store if isinstance(store, Store) else Store(store)
    idx = pick_patches(store, k, split, seed)
    real = store.read("patches", idx)
    mag = channels_to_complex(torch.from_numpy(real)).abs()
    rows = []
    for d in range(draws):
        z = sample_phase(model, mag, sampler=sampler, steps=steps, seed=seed + d, amp=amp)
        rows.append((f"PhaseGen #{d + 1}", complex_to_channels(z).numpy()))
    seqs = store.manifest["sequence"].astype(str).to_numpy()[idx]
    label = f"{sampler}, K = {steps}" if sampler == "ddim" else "ddpm"
    return plot_phasegen(
        real, rows, out_png, column_titles=list(seqs), title=f"PhaseGen phases for real magnitudes ({label})"
    )


class PhaseGenTask(TrainTaskBase):
    """The engine task: noise-prediction loss of the complex diffusion on magnitude-scaled patches."""

    def __init__(
        self, network: dict[str, Any], diffusion: DiffusionSettings, global_phase: str = "canonical"
    ):
        if global_phase not in GLOBAL_PHASE_MODES:
            raise ConfigError(
                f"phasegen.global_phase must be one of {GLOBAL_PHASE_MODES}, got {global_phase!r}"
            )
        self.network = dict(network)
        self.diffusion = diffusion
        self.global_phase = global_phase
        self.abar = alphas_cumprod(diffusion).float()

    def build_model(self) -> nn.Module:
        return ComplexUNet(**self.network, timesteps=self.diffusion.timesteps)

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x0 = training_target(batch["x"], self.global_phase)
        b, device = x0.shape[0], x0.device
        t = torch.randint(0, self.diffusion.timesteps, (b,), device=device)
        noise = draw_noise(self.diffusion.noise, tuple(x0.shape), device=device)
        abar = self.abar.to(device)[t].view(b, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        pred = model(x_t, x0.abs(), t)
        diff = torch.view_as_real(pred.to(torch.complex64)) - torch.view_as_real(noise)
        loss = diff.abs().mean() if self.diffusion.loss == "l1" else diff.pow(2).mean()
        return loss.float(), {}

    def model_config(self) -> dict[str, Any]:
        cfg = complex_unet_config(**self.network, timesteps=self.diffusion.timesteps)
        cfg["diffusion"] = self.diffusion.model_dump(mode="json")
        cfg["global_phase"] = self.global_phase
        return cfg


def write_phasegen_eval(table: pd.DataFrame, out: Path) -> str:
    """Write ``phasegen_phase.csv`` and ``.md`` (what the report reads) into ``out``; returns the Markdown."""
    from magphase.evaluation.phase import phasegen_markdown

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table.to_csv(index=False), out / "phasegen_phase.csv")
    md = phasegen_markdown(table)
    atomic_write_text(md, out / "phasegen_phase.md")
    return md


def train_phasegen(
    cfg: MagphaseConfig,
    out: str | Path,
    store: str | Path,
    *,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train PhaseGen on the ``train`` split of the patch store ``store`` into the engine folder ``out``
    (``RUN/phasegen`` in a run)."""
    pg: PhaseGenConfig = cfg.phasegen
    dataset = PatchDataset(store, split="train")
    task = PhaseGenTask(pg.network.model_dump(mode="json"), pg.diffusion, pg.global_phase)
    log.info("PhaseGen: %d training patches -> %s", len(dataset), out)
    return fit(
        task, dataset, pg.train.resolved(cfg.seed, cfg.device), Path(out), resume=resume, progress=progress
    )


def patch_store(ctx: RunContext) -> Path:
    """The patch store PhaseGen trains on: ``phasegen.patch_store``, else the run's patch store."""
    given = ctx.cfg.phasegen.patch_store
    return Path(given) if given is not None else ctx.patches


def generate_phasegen_store(
    model: nn.Module,
    source: str | Path | Store,
    out: str | Path,
    *,
    split: str | list[str] | None = None,
    limit: int | None = None,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    amp: str = "none",
    project: bool = True,
    provenance: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Give every patch of ``source`` (one split; at most ``limit``, evenly spaced) a PhaseGen phase.

    The new store has the source's manifest rows (sequence, label, split, slice, ...) with ``patch_id``
    prefixed ``pg-``, ``synthetic = 1`` and ``source_patch_id``; its ``patches`` keep the source magnitude
    exactly. ``meta.json``: kind ``synthetic``, ``generator = phasegen`` and the sampler settings.
    """
    src = source if isinstance(source, Store) else Store(source)
    if "patches" not in src.arrays:
        raise DataError(src.path, "patches", "source store lacks this array")
    idx = src.select(split=split) if split is not None else np.arange(len(src))
    if limit is not None and limit < idx.size:
        # Evenly spaced over the split (stores are in volume order): every sequence keeps its share.
        idx = idx[np.unique(np.linspace(0, idx.size - 1, limit).round().astype(np.int64))]
    if idx.size == 0:
        raise DataError(src.path, "split", f"no patches in split {split!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: store already exists (pass overwrite)")
    manifest = src.manifest
    meta = {
        "synthetic": True,
        "generator": "phasegen",
        "source": str(src.path),
        "split": split,
        "sampler": sampler,
        "steps": steps,
        "eta": eta,
        "seed": seed,
        "amp": amp,
        "project": project,
        **(provenance or {}),
    }
    with StoreWriter(
        out, {"patches": tuple(src.arrays["patches"])}, kind="synthetic", meta=meta, overwrite=True
    ) as w:
        for a in range(0, idx.size, batch_size):
            sel = idx[a : a + batch_size]
            x = torch.from_numpy(src.read("patches", sel))
            z = sample_phase(
                model,
                channels_to_complex(x).abs(),
                sampler=sampler,
                steps=steps,
                eta=eta,
                seed=seed,
                start=a,
                batch_size=batch_size,
                amp=amp,
                project=project,
            )
            rows = []
            for k, r in enumerate(manifest.iloc[sel].to_dict("records")):
                rows.append(
                    {
                        **r,
                        "patch_id": f"pg-{r['patch_id']}",
                        "synthetic": 1,
                        "source_patch_id": r["patch_id"],
                        "sample_index": a + k,
                    }
                )
            w.append(rows, patches=complex_to_channels(z).numpy())
            if progress is not None:
                progress(len(sel))
    log.info("PhaseGen store %s: %d patches (%s, K=%d)", out, idx.size, sampler, steps)
    return out


def run(ctx: RunContext) -> dict[str, Any]:
    """PhaseGen: train, give the test split's magnitudes a generated phase, evaluate, draw."""
    if not ctx.cfg.pipeline.phasegen:
        return {"skipped": "pipeline.phasegen is off"}
    from magphase.evaluation.phase import evaluate_phasegen
    from magphase.models.complex_unet import load_phasegen

    pg, layout = ctx.cfg.phasegen, ctx.layout
    bar = ctx.bar("phasegen", pg.train.steps)
    result = train_phasegen(
        ctx.cfg, layout.phasegen, patch_store(ctx), resume=True, progress=engine_progress(bar)
    )
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
    store = layout.phasegen_samples
    try:
        fresh = store.is_dir() and Store(store).meta.get("recipe") == recipe
    except DataError:
        fresh = False
    if not fresh:
        real = Store(ctx.patches)
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
    out = layout.phasegen_eval
    table = evaluate_phasegen(store, ctx.patches)
    write_phasegen_eval(table, out)
    fig = phasegen_figure(
        model,
        ctx.patches,
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


STAGE = Stage(
    name="phasegen",
    description="PhaseGen (if pipeline.phasegen): model, test-split phases, phase statistics, figure",
    run=run,
    config=("pipeline.phasegen", "phasegen"),
    reads=("patches",),
    writes=("phasegen", "phasegen_samples", "phasegen_eval"),
)
