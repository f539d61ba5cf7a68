"""Stage ``sample``: synthetic latent and patch stores from the flow models, and Figs. 4-5.

The stage draws the real-vs-synthetic latent store (stage 1, w of ``evaluation.realfake``) and the
decoded downstream store (stage 2, w of ``evaluation.downstream``; copied from the chosen selection
candidate when that one was drawn with the very same recipe). It also draws the figures that need
samples: Fig. 4 (stage-1 samples beside real patches, per sequence) and Fig. 5 (stage-2 normal vs
abnormal from the same noise, so a pair differs only by the class condition). The report only
copies them.

Synthetic store layout (same manifest columns as the real stores)::

    z          N x 2 x 48 x 48  the sampled latents (a draw, not a posterior: no logvar)
    patches    N x 2 x 96 x 96  decoded by the autoencoder (only when one is given)
    manifest   patch_id = volume = "syn<stage>-<SEQ>-<label>-s<seed>-<i>", sequence, label
               (normal / abnormal / unlabeled), split, slice = row = col = -1, box_overlap = -1,
               plus synthetic = 1, stage, class_token, guidance, steps, solver, seed, sample_index
               (and global_phase, see below)
    meta.json  kind "synthetic" and the provenance (weights, step, autoencoder, settings)

The manifest column ``global_phase`` holds the angle a phase-canonical model's decoded patch was
rotated by (see :mod:`magphase.generative.sampling`); ``z`` stays canonical and ``meta.json`` says
``canonical_phase``.

Work is cut into units of at most ``batch_size`` samples of one group (:func:`sample_chunks`); each
finished unit is published atomically as a small part store in ``OUT.parts/`` with the recipe beside it,
and at the end the parts are merged in order into ``OUT`` (:func:`~magphase.data.store.merge_stores`)
and removed. A killed run, started again with the same recipe, keeps its finished parts and samples only
the rest; a different recipe discards them. Under ``torchrun`` rank ``r`` of ``W`` takes units
``r, r + W, ...`` (shared file system) and rank 0 merges, so the store equals the single-process one.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from magphase.conventions import LABELLED_SEQUENCES, SEQUENCES
from magphase.data.store import Store, StoreWriter, merge_stores
from magphase.errors import ConfigError, DataError
from magphase.evaluation.metrics import class_effect
from magphase.generative.sampling import (
    LATENT_ARRAY,
    PATCH_ARRAY,
    SampleGroup,
    apply_phases,
    decode_latents,
    decode_samples,
    initial_noise,
    model_latent_shape,
    sample_latents,
    sample_phases,
)
from magphase.models.weights import read_weights_metadata
from magphase.rundir import FIG4_NAME, FIG5_NAME, require_file
from magphase.stages.base import RunContext, Stage
from magphase.training.distributed import DistInfo, barrier, broadcast_object
from magphase.utils.atomic import atomic_write_text
from magphase.utils.seeds import derived_rng, offset_seed
from magphase.viz.figures_flow import figure4, figure5

log = logging.getLogger(__name__)


def real_examples(
    store: str | Path | Store,
    sequence: str,
    k: int,
    *,
    split: str | None = "test",
    seed: int = 0,
    label: str | None = None,
) -> np.ndarray:
    """``k`` random real patches of ``sequence`` (``patches`` array), from ``split`` when it has enough."""
    store = store if isinstance(store, Store) else Store(store)
    idx = store.select(sequence=sequence, split=split, label=label)
    if idx.size < k:
        idx = store.select(sequence=sequence, label=label)
    rng = derived_rng(seed, 0xF16)
    pick = np.sort(rng.choice(idx, size=min(k, idx.size), replace=False)) if idx.size else idx
    return store.read("patches", pick)


def _decoded_samples(
    flow: nn.Module,
    autoencoder: nn.Module,
    stage: int,
    group: SampleGroup,
    *,
    guidance: float,
    steps: int,
    seed: int,
    noise: torch.Tensor | None = None,
) -> np.ndarray:
    z = sample_latents(flow, stage=stage, group=group, guidance=guidance, steps=steps, seed=seed, noise=noise)
    return decode_samples(flow, autoencoder, z, group, stage=stage, seed=seed).numpy()


def figure4_from_models(
    flow_stage1: nn.Module,
    autoencoder: nn.Module,
    real_store: str | Path | Store,
    out_png: str | Path,
    *,
    sequences: Sequence[str] = SEQUENCES,
    k: int = 4,
    guidance: float = 1.0,
    steps: int = 25,
    seed: int = 0,
) -> Path:
    """Sample ``k`` stage-1 patches per sequence (w = ``guidance``) and draw them beside ``k`` real ones."""
    synthetic = {
        s: _decoded_samples(
            flow_stage1, autoencoder, 1, SampleGroup(s, None, k), guidance=guidance, steps=steps, seed=seed
        )
        for s in sequences
    }
    real = {s: real_examples(real_store, s, k, seed=seed) for s in sequences}
    return figure4(real, synthetic, out_png, note=f"w = {guidance:g}, Heun K = {steps}")


def figure5_from_models(
    flow_stage2: nn.Module,
    autoencoder: nn.Module,
    out_png: str | Path,
    *,
    sequences: Sequence[str] = LABELLED_SEQUENCES,
    k: int = 4,
    guidance: float = 2.0,
    steps: int = 25,
    seed: int = 0,
) -> Path:
    """Sample ``k`` normal and ``k`` abnormal stage-2 patches per sequence from the same noise."""
    normal, abnormal = {}, {}
    shape = (flow_stage2.in_channels, flow_stage2.input_size, flow_stage2.input_size)
    for s in sequences:
        noise = initial_noise(SampleGroup(s, "normal", k), 2, seed, 0, k, shape)
        for label, target in (("normal", normal), ("abnormal", abnormal)):
            target[s] = _decoded_samples(
                flow_stage2,
                autoencoder,
                2,
                SampleGroup(s, label, k),
                guidance=guidance,
                steps=steps,
                seed=seed,
                noise=noise,
            )
    effect = ", ".join(f"{s} {class_effect(normal[s], abnormal[s]):.2f}" for s in sequences)
    note = f"w = {guidance:g}, Heun K = {steps}, paired noise; class effect {effect}"
    return figure5(normal, abnormal, out_png, note=note)


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of ``n`` items for ``rank`` of ``world_size`` (sizes differ by <= 1)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def _rows(
    group: SampleGroup,
    stage: int,
    start: int,
    stop: int,
    *,
    seed: int,
    split: str,
    guidance: float,
    steps: int,
    solver: str,
    phases: np.ndarray,
) -> list[dict[str, Any]]:
    tag = group.label if group.label is not None else "any"
    rows = []
    for k, i in enumerate(range(start, stop)):
        pid = f"syn{stage}-{group.sequence}-{tag}-s{seed}-{i:06d}"
        rows.append(
            dict(
                patch_id=pid,
                volume=pid,
                sequence=group.sequence,
                label=group.manifest_label,
                split=split,
                slice=-1,
                row=-1,
                col=-1,
                box_overlap=-1.0,
                synthetic=1,
                stage=stage,
                class_token=group.label if group.label is not None else "",
                guidance=guidance,
                steps=steps,
                solver=solver,
                seed=seed,
                sample_index=i,
            )
        )
        if not np.isnan(phases[k]):
            rows[-1]["global_phase"] = float(phases[k])
    return rows


def generate_synthetic_store(
    model: nn.Module,
    out: str | Path,
    groups: Sequence[SampleGroup],
    *,
    stage: int,
    guidance: float,
    steps: int,
    solver: str = "heun",
    seed: int = 0,
    split: str = "train",
    batch_size: int = 256,
    autoencoder: nn.Module | None = None,
    decode_batch_size: int = 64,
    amp: str = "none",
    provenance: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Sample every group and write one synthetic store (latents ``z`` and, with an autoencoder,
    decoded ``patches``); see the module docstring for the layout.

    Args:
        model: flow U-Net (EMA weights) on its device.
        out: store folder to write (atomically).
        groups: what to sample; the store holds the groups in order, each in sample order.
        stage, guidance, steps, solver, seed, batch_size, amp: see :func:`sample_latents`.
        split: value of the manifest's ``split`` column.
        autoencoder: decoder for ``patches`` (``decode(z, seq)``); None writes latents only.
        provenance: extra entries for meta.json (weights path, step, ...).
        dist: rank / world size under ``torchrun`` (None: a single process).
        overwrite: replace an existing store.
        progress: called with the number of samples this rank finished.
    Returns:
        The store path (every rank returns it once rank 0 has merged).
    """
    out = Path(out)
    groups = [g.validate(stage) for g in groups]
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: store already exists (pass overwrite)")
    if batch_size < 1:
        raise ConfigError(f"sampling batch_size must be >= 1, got {batch_size}")
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    shape = model_latent_shape(model)
    arrays: dict[str, tuple[int, ...]] = {LATENT_ARRAY: shape}
    if autoencoder is not None:
        arrays[PATCH_ARRAY] = (2, 96, 96)
    meta = {
        "synthetic": True,
        "stage": stage,
        "guidance": guidance,
        "steps": steps,
        "solver": solver,
        "seed": seed,
        "amp": amp,
        "groups": [dict(sequence=g.sequence, label=g.label, n=g.n) for g in groups],
        "decoded": autoencoder is not None,
        "canonical_phase": bool(getattr(model, "canonical_phase", False)),
        **(provenance or {}),
    }
    chunks = sample_chunks(groups, batch_size)
    parts_dir = parts_folder(out)
    # Everything a finished part depends on: parts of another recipe are discarded, not merged.
    recipe = json.loads(
        json.dumps({"meta": meta, "split": split, "batch_size": batch_size, "arrays": arrays}, default=str)
    )
    if rank == 0:
        _prepare_parts(parts_dir, recipe)
    if world > 1:
        barrier(dist)
    done = 0
    for j in range(rank, len(chunks), world):
        gi, a, b = chunks[j]
        g = groups[gi]
        part = parts_dir / f"part-{j:06d}"
        if _complete_part(part, b - a):
            done += b - a
            if progress is not None:
                progress(b - a)
            continue
        z = sample_latents(
            model,
            stage=stage,
            group=g,
            guidance=guidance,
            steps=steps,
            solver=solver,
            seed=seed,
            start=a,
            stop=b,
            batch_size=batch_size,
            amp=amp,
        )
        payload = {LATENT_ARRAY: z.numpy()}
        phases = sample_phases(model, g, stage, seed, a, b)
        if autoencoder is not None:
            x = decode_latents(autoencoder, z, g.sequence, batch_size=decode_batch_size)
            payload[PATCH_ARRAY] = apply_phases(x, phases).numpy()
        with StoreWriter(part, arrays, kind="synthetic-part", overwrite=True) as writer:
            writer.append(
                _rows(
                    g,
                    stage,
                    a,
                    b,
                    seed=seed,
                    split=split,
                    guidance=guidance,
                    steps=steps,
                    solver=solver,
                    phases=phases,
                ),
                **payload,
            )
        if progress is not None:
            progress(b - a)
    if done:
        log.info("%s: %d samples of this rank were already sampled (resumed)", out, done)
    error = None
    if world > 1:
        barrier(dist)
    if rank == 0:
        try:
            parts = [parts_dir / f"part-{j:06d}" for j in range(len(chunks))]
            missing = [
                p.name for p, (_, a, b) in zip(parts, chunks, strict=True) if not _complete_part(p, b - a)
            ]
            if missing:
                raise RuntimeError(f"{parts_dir}: parts missing after sampling: {missing[:5]}")
            if parts:
                merge_stores(parts, out, kind="synthetic", meta=meta, overwrite=True)
            else:
                with StoreWriter(out, arrays, kind="synthetic", meta=meta, overwrite=True):
                    pass
            shutil.rmtree(parts_dir)
        except Exception as exc:  # every rank must hear of it, or the others wait forever
            error = f"{type(exc).__name__}: {exc}"
            if world == 1:
                raise
    if world > 1:
        error = broadcast_object(error, dist)  # type: ignore[arg-type]
        if error is not None:
            raise RuntimeError(f"merging the synthetic store {out} failed on rank 0: {error}")
    log.info(
        "synthetic store %s: %d samples (stage %d, w=%g, K=%d)",
        out,
        sum(g.n for g in groups),
        stage,
        guidance,
        steps,
    )
    return out


def sample_chunks(groups: Sequence[SampleGroup], batch_size: int) -> list[tuple[int, int, int]]:
    """The work units of a store: ``(group index, start, stop)`` of at most ``batch_size`` samples, in
    store order. Rank ``r`` of ``W`` takes units ``r, r + W, ...``; each becomes one part store."""
    return [
        (gi, a, min(a + batch_size, g.n)) for gi, g in enumerate(groups) for a in range(0, g.n, batch_size)
    ]


def parts_folder(out: str | Path) -> Path:
    """Where the finished parts of ``out`` are kept until they are merged (what a resumed run reuses)."""
    out = Path(out)
    return out.with_name(f"{out.name}.parts")


def _prepare_parts(parts_dir: Path, recipe: dict[str, Any]) -> None:
    """Keep ``parts_dir`` when it was filled with this recipe (a resumed run), else start it afresh."""
    recipe_file = parts_dir / "recipe.json"
    if parts_dir.is_dir():
        try:
            same = json.loads(recipe_file.read_text()) == recipe
        except (OSError, ValueError):
            same = False
        if same:
            n = len(list(parts_dir.glob("part-*[0-9]")))
            log.info("%s: resuming (%d finished parts)", parts_dir, n)
            return
        log.info("%s: parts of another recipe, starting afresh", parts_dir)
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True)
    atomic_write_text(json.dumps(recipe, indent=2, sort_keys=True), recipe_file)


def _complete_part(part: Path, n: int) -> bool:
    if not part.is_dir():
        return False
    try:
        store = Store(part)
        ok = len(store) == n
        store.close()
        return ok
    except (DataError, OSError):
        return False


def weights_provenance(path: str | Path) -> dict[str, Any]:
    """meta.json entries describing a flow weights file (path, step, stage)."""
    meta = read_weights_metadata(path)
    return {
        "flow_weights": str(path),
        "flow_step": meta.get("step"),
        "flow_stage": meta["model_config"]["stage"],
    }


#: Seed offsets (added to ``seed * 1000``) of the sample stores: the stage's own stores, and the
#: snapshot-selection candidates of each flow stage.
SAMPLE_SEED_OFFSET = {1: 1, 2: 2}
SELECTION_SEED_OFFSET = {1: 11, 2: 12}


def sample_store(
    ctx: RunContext,
    weights: Path,
    out: Path,
    groups: list[SampleGroup],
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
    from magphase.data.store import copy_store
    from magphase.models.cvae import load_autoencoder
    from magphase.models.unet import load_flow_model

    sampling = ctx.cfg.flow.sampling
    seed = offset_seed(ctx.cfg.seed, seed_offset)
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
    ae = ctx.layout.autoencoder_weights
    if decode:  # decoded patches also depend on the autoencoder weights
        require_file(ae, "no exported EMA weights: train the autoencoder first")
        ae_stat = ae.stat()
        recipe.update(
            autoencoder=str(ae), autoencoder_size=ae_stat.st_size, autoencoder_mtime_ns=ae_stat.st_mtime_ns
        )
    if _holds_recipe(out, recipe):
        log.info("%s is up to date", out)
        return out
    if reuse is not None and _holds_recipe(reuse, recipe):
        return copy_store(reuse, out, copied_from=str(reuse))
    model = load_flow_model(weights, device=ctx.device)
    autoencoder = load_autoencoder(ae, device=ctx.device) if decode else None
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
        progress=ctx.bar(f"sample stage {stage}", sum(g.n for g in groups)),
    )


def _holds_recipe(store: Path, recipe: dict[str, Any]) -> bool:
    if not store.is_dir():
        return False
    try:
        return Store(store).meta.get("recipe") == recipe
    except DataError:
        return False


def _selected_candidate_store(ctx: RunContext, stage: int) -> Path | None:
    """The selection store of the snapshot a stage's selection chose, if there is one."""
    record = ctx.layout.selected_flow_snapshot(stage)
    if record is None:
        return None
    store = ctx.layout.selection_store(stage, int(record["step"]))
    return store if store.is_dir() else None


def draw_sample_figures(ctx: RunContext) -> dict[str, str]:
    """Figs. 4-5 from the trained models (selected or final EMA weights) into ``RUN/samples/figures``."""
    from magphase.models.cvae import load_autoencoder
    from magphase.models.unet import load_flow_model

    layout, cfg = ctx.layout, ctx.cfg
    out = layout.sample_figures
    out.mkdir(parents=True, exist_ok=True)
    autoencoder = load_autoencoder(layout.autoencoder_weights, device=ctx.device)
    steps = cfg.flow.sampling.steps
    fig4 = figure4_from_models(
        load_flow_model(layout.flow_weights(1), device=ctx.device),
        autoencoder,
        ctx.patches,
        out / FIG4_NAME,
        guidance=cfg.evaluation.realfake.guidance,
        steps=steps,
        seed=cfg.seed,
    )
    fig5 = figure5_from_models(
        load_flow_model(layout.flow_weights(2), device=ctx.device),
        autoencoder,
        out / FIG5_NAME,
        guidance=cfg.evaluation.downstream.guidance,
        steps=steps,
        seed=cfg.seed,
    )
    return {"fig4": str(fig4), "fig5": str(fig5)}


def run(ctx: RunContext) -> dict[str, Any]:
    """The real-vs-synthetic latent store (stage 1, w of realfake), the decoded downstream store
    (stage 2, w of downstream; copied from the chosen selection candidate when that one was drawn with
    this very recipe), and Figs. 4-5."""
    from magphase.evaluation.downstream import downstream_required_counts
    from magphase.evaluation.realfake import realfake_required_counts

    ev, layout = ctx.cfg.evaluation, ctx.layout
    counts1 = realfake_required_counts(ctx.latents, ev.realfake.n_test_sets, ev.realfake.sequences)
    groups1 = [SampleGroup(seq, None, n) for seq, n in counts1.items() if n > 0]
    sample_store(
        ctx,
        layout.flow_weights(1),
        layout.realfake_samples,
        groups1,
        stage=1,
        guidance=ev.realfake.guidance,
        decode=False,
        seed_offset=SAMPLE_SEED_OFFSET[1],
    )
    counts2 = downstream_required_counts(ctx.patches, ev.downstream)
    groups2 = [SampleGroup(seq, label, n) for (label, seq), n in counts2.items() if n > 0]
    # After a stage-2 selection the chosen candidate's store was drawn with this very recipe (same
    # weights, groups, guidance and steps) under the selection's seed: it is copied, not drawn again.
    selected = _selected_candidate_store(ctx, 2)
    sample_store(
        ctx,
        layout.flow_weights(2),
        layout.downstream_samples,
        groups2,
        stage=2,
        guidance=ev.downstream.guidance,
        decode=True,
        seed_offset=SELECTION_SEED_OFFSET[2] if selected is not None else SAMPLE_SEED_OFFSET[2],
        reuse=selected,
    )
    return {
        "realfake": {k: int(v) for k, v in counts1.items()},
        "downstream": {f"{lab}/{seq}": int(n) for (lab, seq), n in counts2.items()},
        "figures": draw_sample_figures(ctx),
    }


STAGE = Stage(
    name="sample",
    description="synthetic stores (w = 1 latents for Table 4; w = 2 decoded for downstream), Figs. 4-5",
    run=run,
    config=("flow.sampling", "evaluation"),
    reads=("flow(1)", "flow(2)", "autoencoder_weights", "latents", "patches"),
    writes=("realfake_samples", "downstream_samples", "sample_figures"),
)
