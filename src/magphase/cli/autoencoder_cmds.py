"""CLI subcommands of the autoencoder stage: ``train-autoencoder``, ``encode``, ``evaluate autoencoder``."""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from magphase.cli._app import app, evaluate_app
from magphase.cli._progress import run_one_stage
from magphase.config import MagphaseConfig, dump_config, load_config
from magphase.errors import ConfigError
from magphase.rundir import RunLayout
from magphase.stages.autoencoder import network_spec
from magphase.stages.base import patch_store
from magphase.training.distributed import is_main_process, resolve_device_name

_CONFIG = typer.Option(None, "--config", "-c", help="magphase config YAML (its autoencoder section)")
_SET = typer.Option(None, "--set", help="override a config value, e.g. --set autoencoder.train.steps=200")
_DRY = typer.Option(False, "--dry-run", help="print the resolved config and the plan, do nothing")


def _config(config: Path | None, overrides: list[str] | None) -> MagphaseConfig:
    return load_config(config, overrides)


def _device(cfg: MagphaseConfig, device: str | None) -> str:
    return resolve_device_name(device or cfg.autoencoder.train.device or cfg.device)


@app.command("train-autoencoder")
def train_autoencoder_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="run directory (writes RUN/autoencoder)"),
    config: Path | None = _CONFIG,
    store: Path | None = typer.Option(
        None, "--store", help="patch store (sets autoencoder.patch_store; default RUN/prepare/patches)"
    ),
    overrides: list[str] | None = _SET,
    dry_run: bool = _DRY,
) -> None:
    """The autoencoder stage: train the sequence-conditioned VAE (paper 2.2) on the patch store's train
    split (resuming from RUN/autoencoder/checkpoint.pt), then Table 3 and Fig. 3 on its test split."""
    cfg = _config(config, [*(overrides or []), *([f"autoencoder.patch_store={store}"] if store else [])])
    layout = RunLayout(out)
    store_path = patch_store(cfg, layout)
    spec = network_spec(cfg.autoencoder)
    if dry_run:
        typer.echo(dump_config(cfg))
        t = cfg.autoencoder.train
        typer.echo(
            f"plan: train the {cfg.autoencoder.preset!r} CVAE {spec} on {store_path} (split train) for "
            f"{t.steps} steps of batch {t.batch_size} -> {layout.autoencoder}; evaluate -> "
            f"{layout.autoencoder_eval}"
        )
        return
    if not store_path.is_dir():
        raise ConfigError(f"autoencoder.patch_store: {store_path} is not a patch store (run prepare first)")
    record = run_one_stage(cfg, out, "autoencoder")
    if not is_main_process():  # under torchrun: one report, from rank 0
        return
    s = record["summary"]
    m = s.get("last_metrics", {})
    typer.echo(
        f"trained to step {s['step']}: loss {m.get('loss', float('nan')):.4g} "
        f"(recon {m.get('recon', float('nan')):.4g}); weights {layout.autoencoder_weights}; "
        f"evaluation {layout.autoencoder_eval}"
    )


@app.command("encode")
def encode_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="latent store to write (e.g. RUN/latents)"),
    config: Path | None = _CONFIG,
    autoencoder: Path | None = typer.Option(
        None, "--autoencoder", help="autoencoder run folder or weights (default: autoencoder/ beside --out)"
    ),
    store: Path | None = typer.Option(None, "--store", help="patch store (default: from config / RUN)"),
    external_store: Path | None = typer.Option(
        None, "--external-store", help="external test patch store (default: from config / RUN, if present)"
    ),
    external_out: Path | None = typer.Option(
        None, "--external-out", help="latent store of the external set (default: <OUT>-external)"
    ),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda[:N] (default: config)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="re-encode even when the output is up to date"),
    overrides: list[str] | None = _SET,
    dry_run: bool = _DRY,
) -> None:
    """Write the latent store (mu, logvar N x 2 x 48 x 48, same manifest) for every split of the patch store,
    and for the external test store. Up-to-date outputs (same store and weights) are skipped."""
    from magphase.models.cvae import load_autoencoder
    from magphase.stages.encode import encode_store

    cfg = _config(config, overrides)
    layout = RunLayout(out.parent)
    weights = autoencoder if autoencoder is not None else layout.autoencoder
    default_store = patch_store(cfg, layout)
    jobs = [(store if store is not None else default_store, out)]
    ext = external_store
    if ext is None and cfg.autoencoder.external_store is not None:
        ext = Path(cfg.autoencoder.external_store)
    if ext is None and layout.external_patches.is_dir():
        ext = layout.external_patches
    if ext is not None:
        ext_out = external_out if external_out is not None else out.with_name(f"{out.name}-external")
        jobs.append((ext, ext_out))
    if dry_run:
        typer.echo(dump_config(cfg))
        for src, dst in jobs:
            typer.echo(f"plan: encode {src} with {weights} -> {dst}")
        return
    model = load_autoencoder(weights, device=_device(cfg, device))
    for src, dst in jobs:
        from magphase.data.store import Store

        total = len(Store(src))
        with tqdm(total=total, desc=f"encode {src.name}", unit="patch", dynamic_ncols=True) as bar:
            encode_store(
                model,
                src,
                dst,
                autoencoder=weights,
                batch_size=cfg.autoencoder.encode_batch_size,
                sequence_aliases=cfg.autoencoder.sequence_aliases,
                canonical_phase=cfg.autoencoder.canonical_phase,
                overwrite=overwrite,
                progress=bar.update,
            )
        typer.echo(f"latent store: {dst} ({total} items)")


@evaluate_app.command("autoencoder")
def evaluate_autoencoder_cmd(
    out: Path = typer.Option(
        ..., "--out", "-o", help="run directory (reads RUN/autoencoder, writes RUN/autoencoder/evaluation)"
    ),
    config: Path | None = _CONFIG,
    store: Path | None = typer.Option(None, "--store", help="patch store (default: from config / RUN)"),
    autoencoder: Path | None = typer.Option(None, "--autoencoder", help="weights (default: RUN/autoencoder)"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda[:N] (default: config)"),
    overrides: list[str] | None = _SET,
    dry_run: bool = _DRY,
) -> None:
    """Table 3 (phase coherence, magnitude SSIM and PSNR per sequence) and Fig. 3 on the test split."""
    from magphase.data.store import Store
    from magphase.evaluation.reconstruction import evaluate_autoencoder
    from magphase.models.cvae import load_autoencoder
    from magphase.models.weights import read_weights_metadata

    cfg = _config(config, overrides)
    ev = cfg.autoencoder.eval
    layout = RunLayout(out)
    weights = autoencoder if autoencoder is not None else layout.autoencoder
    default_store = patch_store(cfg, layout)
    store_path = store if store is not None else default_store
    target = layout.autoencoder_eval
    if dry_run:
        typer.echo(dump_config(cfg))
        typer.echo(f"plan: evaluate {weights} on {store_path} (split {ev.split}) -> {target}")
        return
    model = load_autoencoder(weights, device=_device(cfg, device))
    patches = Store(store_path)
    n = len(patches.select(split=ev.split))
    if n == 0:
        raise ConfigError(f"autoencoder.eval.split: {store_path} has no patches in split {ev.split!r}")
    extra = {"autoencoder": str(weights), "patch_store": str(store_path)}
    extra["autoencoder_step"] = read_weights_metadata(weights).get("step")
    record = layout.read_marker("autoencoder")
    if autoencoder is None and record is not None:
        extra["train_time_s"] = record["summary"].get("train_time_s")
        extra["train_patches"] = record["summary"].get("train_patches")
    with tqdm(total=n, desc="evaluate autoencoder", unit="patch", dynamic_ncols=True) as bar:
        result = evaluate_autoencoder(
            model,
            patches,
            target,
            split=ev.split,
            batch_size=ev.batch_size,
            decode_mean=ev.decode_mean,
            seed=cfg.seed,
            sequence_aliases=cfg.autoencoder.sequence_aliases,
            figure_abnormal_sequence=ev.figure_abnormal_sequence,
            figure_normal_sequence=ev.figure_normal_sequence,
            extra=extra,
            progress=bar.update,
        )
    typer.echo(result.table_md.read_text())
    typer.echo(f"written: {result.table_csv}, {result.table_md}, {result.figure}, {result.metrics_json}")
