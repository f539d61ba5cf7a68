"""CLI subcommands of the flow stage: ``train-flow --stage 1|2`` and ``sample``."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import typer
from tqdm import tqdm

from magphase.cli._app import app
from magphase.cli._progress import run_one_stage
from magphase.config import MagphaseConfig, dump_config, load_config
from magphase.errors import ConfigError

_CONFIG = typer.Option(None, "--config", "-c", help="magphase config YAML (its flow section)")
_SET = typer.Option(None, "--set", help="override a config value, e.g. --set flow.stage1.train.steps=200")
_DRY = typer.Option(False, "--dry-run", help="print the resolved config and the plan, do nothing")


def _stage(stage: int) -> int:
    if stage not in (1, 2):
        raise ConfigError(f"--stage must be 1 or 2, got {stage}")
    return stage


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


@app.command("train-flow")
def train_flow_cmd(
    stage: int = typer.Option(
        ..., "--stage", help="1: sequence-conditioned; 2: + normal/abnormal fine-tuning"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (writes RUN/flow/stage<N>)"),
    config: Path | None = _CONFIG,
    latents: Path | None = typer.Option(
        None, "--latents", help="latent store (sets flow.latent_store; default RUN/latents)"
    ),
    overrides: list[str] | None = _SET,
    dry_run: bool = _DRY,
) -> None:
    """The flow1 / flow2 stage: train flow stage 1 (paper 2.3.1) or stage 2 (2.3.2, two phases) on the
    latent store's train split, resuming from the stage's checkpoints; snapshot selection and the
    stage-2 class probe when the config asks for them, as in `magphase run`."""
    from magphase.rundir import RunLayout
    from magphase.stages.base import latent_store
    from magphase.stages.flow2 import stage2_init_weights

    stage = _stage(stage)
    cfg = load_config(config, [*(overrides or []), *([f"flow.latent_store={latents}"] if latents else [])])
    layout = RunLayout(out)
    store = latent_store(cfg, layout)
    flow = cfg.flow
    if dry_run:
        typer.echo(dump_config(cfg))
        net = flow.unet.model_dump()
        if stage == 1:
            t = flow.stage1.train
            typer.echo(
                f"plan: stage 1, U-Net {flow.preset!r} {net} on {store} (split train), {t.steps} steps of "
                f"batch {t.batch_size}, sequence dropout {flow.stage1.sequence_dropout} "
                f"-> {layout.flow(1)}"
            )
        else:
            s2 = flow.stage2
            init = s2.init or f"{layout.flow(1)} (selected snapshot, else final EMA)"
            typer.echo(
                f"plan: stage 2 from {init} on {store}: phase 1 ({s2.phase1.steps} steps, class embedding "
                f"only), phase 2 ({s2.phase2.steps} steps, pretrained lr x {s2.pretrained_lr_scale}), class "
                f"dropout {s2.class_dropout}, unknown sequences {list(s2.unknown_sequences)} "
                f"-> {layout.flow(2)}"
            )
        return
    if not store.is_dir():
        raise ConfigError(f"flow.latent_store: {store} is not a latent store (run encode first)")
    if stage == 2:
        stage2_init_weights(cfg, layout)  # fail early (before phase 1) when stage 1 is missing
    record = run_one_stage(cfg, out, f"flow{stage}")
    s = record["summary"]
    m = s.get("last_metrics", {})
    weights = layout.flow_weights(stage)
    typer.echo(
        f"stage {stage} trained to step {s['step']}: loss {m.get('loss', float('nan')):.4g}; "
        f"inference weights {weights}; {len(layout.flow_snapshots(stage))} kept snapshots"
    )


def _resolve_device(cfg: MagphaseConfig, device: str | None) -> str:
    return device or cfg.device


@app.command("sample")
def sample_cmd(
    stage: int = typer.Option(..., "--stage", help="1: sequence-conditioned model; 2: class-conditioned"),
    out: Path = typer.Option(..., "--out", "-o", help="synthetic store to write (e.g. RUN/synthetic-stage2)"),
    sequence: str = typer.Option(
        ..., "--sequence", "-s", help="sequence(s), comma-separated, e.g. AXT1,AXFLAIR"
    ),
    label: str | None = typer.Option(
        None, "--label", "-l", help="stage 2: normal, abnormal or unknown (comma-separated for several)"
    ),
    n: int = typer.Option(..., "--n", help="samples per (sequence, label)"),
    guidance: float | None = typer.Option(None, "--guidance", "-w", help="CFG scale w (default: config)"),
    steps: int | None = typer.Option(None, "--steps", "-k", help="integration steps K (default: config)"),
    solver: str | None = typer.Option(None, "--solver", help="heun | euler (default: config)"),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="flow weights (.safetensors / snapshot); default: RUN's selected or final"
    ),
    snapshot: int | None = typer.Option(None, "--snapshot", help="use RUN's kept snapshot of this step"),
    run: Path | None = typer.Option(None, "--run", help="run directory (default: the parent of --out)"),
    decode: bool = typer.Option(True, "--decode/--no-decode", help="also write decoded 2x96x96 patches"),
    autoencoder: Path | None = typer.Option(
        None, "--autoencoder", help="autoencoder weights (default: RUN/autoencoder)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="noise seed (default: config seed)"),
    split: str = typer.Option("train", "--split", help="value of the manifest's split column"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="latents per batch and rank"),
    amp: str | None = typer.Option(
        None, "--amp", help="autocast of the network: none | bf16 | fp16 | auto (default: config)"
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N] (default: config)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    dry_run: bool = _DRY,
) -> None:
    """Sample synthetic latents (and decoded complex patches) into a store marked synthetic.

    Runs under torchrun too: each rank integrates its share, rank 0 merges.
    """
    from magphase.generative.sampling import AMP_CHOICES, SampleGroup
    from magphase.models.unet import flow_stage_of, load_flow_model
    from magphase.rundir import RunLayout
    from magphase.stages.sample import generate_synthetic_store, parts_folder, weights_provenance
    from magphase.training.distributed import init_distributed, shutdown_distributed

    cfg = load_config(config, overrides)
    stage = _stage(stage)
    sc = cfg.flow.sampling
    guidance = (
        guidance if guidance is not None else (sc.guidance_stage1 if stage == 1 else sc.guidance_stage2)
    )
    steps = steps if steps is not None else sc.steps
    batch_size = batch_size if batch_size is not None else sc.batch_size
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if not math.isfinite(guidance) or guidance < 0:
        raise ConfigError(f"--guidance must be a finite number >= 0, got {guidance}")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out}: a store is already there (pass --overwrite to replace it)")
    solver = solver or sc.solver
    if solver not in ("heun", "euler"):
        raise ConfigError(f"--solver must be heun or euler, got {solver!r}")
    amp = amp or sc.amp
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    seed = seed if seed is not None else cfg.seed
    run_dir = run if run is not None else out.parent
    labels: list[str | None] = list(_split_list(label)) or [None]
    if stage == 2 and labels == [None]:
        raise ConfigError("stage 2 needs --label (normal, abnormal or unknown)")
    sequences = [s.upper() for s in _split_list(sequence)]
    for name, values in (("--sequence", sequences), ("--label", labels)):
        repeated = sorted({v for v in values if values.count(v) > 1 and v is not None})
        if repeated:
            raise ConfigError(f"{name} names {', '.join(repeated)} more than once")
    groups = [SampleGroup(s, lab, n).validate(stage) for s, lab in itertools.product(sequences, labels)]
    if not groups:
        raise ConfigError("--sequence: give at least one sequence")
    if checkpoint is not None and snapshot is not None:
        raise ConfigError("give --checkpoint or --snapshot, not both")
    if snapshot is not None:
        snaps = RunLayout(run_dir).flow_snapshots(stage)
        if snapshot not in snaps:
            raise ConfigError(f"--snapshot {snapshot}: stage {stage} of {run_dir} kept steps {sorted(snaps)}")
        weights = snaps[snapshot]
    else:
        weights = checkpoint if checkpoint is not None else RunLayout(run_dir).flow_weights(stage)
    ae_path = (autoencoder if autoencoder is not None else RunLayout(run_dir).autoencoder) if decode else None
    if dry_run:
        typer.echo(dump_config(cfg))
        typer.echo(
            f"plan: stage {stage} weights {weights}; {len(groups)} group(s) x {n} samples "
            f"{[(g.sequence, g.label) for g in groups]}; {solver} K={steps}, w={guidance}, amp {amp}, "
            f"seed {seed}; "
            f"decode with {ae_path or '(no decoding)'} -> {out}"
        )
        return
    if flow_stage_of(weights) != stage:
        raise ConfigError(
            f"--checkpoint {weights} is a stage-{flow_stage_of(weights)} model, not stage {stage}"
        )
    info = init_distributed(_resolve_device(cfg, device))
    try:
        model = load_flow_model(weights, device=info.device)
        ae = None
        if ae_path is not None:
            from magphase.models.cvae import load_autoencoder

            ae = load_autoencoder(ae_path, device=info.device)
        if info.is_main and parts_folder(out).is_dir():
            typer.echo(f"{parts_folder(out)}: an earlier run's finished parts are kept if the recipe matches")
        provenance = weights_provenance(weights)
        provenance["autoencoder"] = str(ae_path) if ae_path is not None else None
        total = sum(g.n for g in groups)
        with tqdm(
            total=total,
            desc=f"sample stage {stage}",
            unit="sample",
            dynamic_ncols=True,
            disable=not info.is_main,
        ) as bar:
            path = generate_synthetic_store(
                model,
                out,
                groups,
                stage=stage,
                guidance=guidance,
                steps=steps,
                solver=solver,
                seed=seed,
                split=split,
                batch_size=batch_size,
                amp=amp,
                autoencoder=ae,
                provenance=provenance,
                dist=info,
                overwrite=overwrite,
                progress=bar.update if info.world_size == 1 else None,
            )
    finally:
        shutdown_distributed()
    if info.is_main:
        typer.echo(f"synthetic store: {path} ({total} samples{', decoded' if ae is not None else ''})")


@app.command("flow-snapshots")
def flow_snapshots_cmd(
    stage: int = typer.Option(..., "--stage", help="1 or 2"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory"),
    select: int | None = typer.Option(
        None, "--select", help="record this step as the stage's selected model"
    ),
    criterion: str | None = typer.Option(None, "--criterion", help="why it was selected (stored with it)"),
) -> None:
    """List a flow stage's kept EMA snapshots (for model selection), or record the selected one."""
    from magphase.rundir import RunLayout

    stage = _stage(stage)
    layout = RunLayout(out)
    if select is not None:
        path = layout.select_flow_snapshot(stage, select, criterion=criterion)
        typer.echo(f"selected step {select}: {path}")
    for step, path in layout.flow_snapshots(stage).items():
        typer.echo(f"{step}\t{path}")
    typer.echo(f"inference weights: {layout.flow_weights(stage)}")


@app.command("flow-probe")
def flow_probe_cmd(
    weights: Path = typer.Option(..., "--weights", "-w", help="stage-2 flow weights (.safetensors)"),
    latents: Path = typer.Option(..., "--latents", "-l", help="latent store (the encode stage's output)"),
    split: str = typer.Option("val", "--split", help="split of the latent store to probe"),
    repeats: int = typer.Option(4, "--repeats", help="(noise, t) draws per latent"),
    max_items: int | None = typer.Option(None, "--max-items", help="probe at most this many latents"),
    seed: int = typer.Option(0, "--seed"),
    mean: bool = typer.Option(
        False, "--mean", help="probe on the posterior means (for a model trained with flow.latents=mean)"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result as JSON here"),
) -> None:
    """How much normal/abnormal information a stage-2 model carries: AUROC of its class likelihood."""
    import json

    from magphase.data.datasets import LatentFlowDataset
    from magphase.evaluation.probe import class_probe
    from magphase.models.unet import load_flow_model
    from magphase.utils.atomic import atomic_write_text

    model = load_flow_model(weights)
    if not model.class_conditioned:
        raise ConfigError(f"{weights}: a stage-1 model has no class condition to probe")
    result = class_probe(
        model,
        LatentFlowDataset(latents, split=split),
        repeats=repeats,
        max_items=max_items,
        seed=seed,
        posterior=not mean,
    )

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    typer.echo(f"{result.split}: {result.n} labelled latents ({result.n_abnormal} abnormal), {repeats} draws")
    typer.echo(
        f"AUROC {fmt(result.auroc)}  " + "  ".join(f"{s} {fmt(a)}" for s, a in result.per_sequence.items())
    )
    if json_out is not None:
        atomic_write_text(json.dumps(result.to_dict(), indent=2) + "\n", json_out)
        typer.echo(f"wrote {json_out}")
