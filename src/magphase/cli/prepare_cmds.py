"""CLI subcommands: ``magphase prepare`` (raw volumes -> patch store) and ``prepare-external``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from magphase.cli._app import app
from magphase.cli._progress import item_bar
from magphase.config import dump_config, load_config
from magphase.errors import ConfigError


@app.command("prepare")
def prepare_cmd(
    raw: Path | None = typer.Option(
        None, "--raw", help="folder of fastMRI-format .h5 volumes (config data.raw)"
    ),
    annotations: Path | None = typer.Option(
        None, "--annotations", "-a", help="fastMRI+ brain.csv (config data.annotations); none: all unlabeled"
    ),
    file_list: Path | None = typer.Option(None, "--file-list", "-l", help="fastMRI+ brain_file_list.csv"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (store in OUT/patches)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="magphase config YAML"),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="override a config key, e.g. prepare.nifti=true"
    ),
    workers: int = typer.Option(
        1, "--workers", "-j", min=1, help="volumes processed in parallel (processes)"
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: process only every N-th volume from I (no merge)"
    ),
    merge: bool = typer.Option(
        False, "--merge", help="only merge finished per-volume results into the store"
    ),
    nifti: bool = typer.Option(False, "--nifti", help="also export combined volumes as NIfTI (OUT/nifti)"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: config device)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the resolved config and the plan, then exit"
    ),
) -> None:
    """Combine coils (ESPIRiT), mask the brain, cut 96x96 patches, split by volume: the patch store.

    Re-running resumes (finished volumes are skipped). On a cluster run one job per
    `--shard I/N` into the same --out, then `magphase prepare --merge` once.
    """
    from magphase.data.prepare import discover_volumes, parse_shard, prepare
    from magphase.data.splits import table1_markdown
    from magphase.training.distributed import resolve_device_name

    cfg = load_config(config, overrides)
    raw = raw or (Path(cfg.data.raw) if cfg.data.raw else None)
    if raw is None:
        raise ConfigError("no raw data: give --raw or set data.raw in the config")
    annotations = annotations or (Path(cfg.data.annotations) if cfg.data.annotations else None)
    file_list = file_list or (Path(cfg.data.file_list) if cfg.data.file_list else None)
    if merge and shard is not None:
        raise ConfigError("--merge runs alone, after every --shard job has finished")
    shard_tuple = parse_shard(shard)
    dev = resolve_device_name(device or cfg.device)
    if dry_run:
        typer.echo(dump_config(cfg.prepare))
        tasks = discover_volumes(raw, annotations, file_list, cfg.prepare)
        mine = tasks[shard_tuple[0] :: shard_tuple[1]]
        counts = Counter(t.label for t in mine)
        typer.echo(
            f"plan: {len(mine)} of {len(tasks)} volumes in {raw} ({dict(counts)}); device {dev}; "
            f"workers {workers}; out {out}" + ("; merge only" if merge else "")
        )
        return
    status_counts: Counter[str] = Counter()

    def count_status(outcome) -> Counter[str]:
        status_counts[outcome.status] += 1
        return status_counts

    with item_bar("prepare", "vol", count_status) as (on_start, progress):
        summary = prepare(
            raw,
            out,
            annotations=annotations,
            file_list=file_list,
            cfg=cfg.prepare,
            seed=cfg.seed,
            device=dev,
            workers=workers,
            shard=shard_tuple,
            merge=merge or shard is None,
            process=not merge,
            nifti=nifti or cfg.prepare.nifti,
            progress=progress,
            on_start=on_start,
        )
    if summary is None:
        typer.echo(f"shard {shard} done; run `magphase prepare --merge --out {out}` after every shard")
        return
    typer.echo(table1_markdown(summary.table1))
    typer.echo(f"store: {summary.store} ({summary.n_patches} patches from {summary.n_volumes} volumes)")
    typer.echo(f"rejected volumes: {summary.n_rejected} (see {out / 'rejects.csv'})")
    if summary.n_annotation_rejects:
        typer.echo(
            f"rejected annotation rows: {summary.n_annotation_rejects} (see {out / 'annotation_rejects.csv'})"
        )
    if summary.brain_mask_dice:
        d = summary.brain_mask_dice
        typer.echo(
            f"brain mask Dice vs ground truth: mean {d['mean']:.3f}, min {d['min']:.3f} ({d['volumes']} vols)"
        )


@app.command("prepare-external")
def prepare_external_cmd(
    raw: Path | None = typer.Option(None, "--raw", help="external .h5 volumes (config data.external_raw)"),
    labels: Path | None = typer.Option(
        None, "--labels", help="CSV file,label,sequence (config data.external_labels)"
    ),
    facial: Path | None = typer.Option(None, "--facial", help="CSV file,slice,facial: slices to skip"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (store in OUT/patches)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="magphase config YAML"),
    overrides: list[str] | None = typer.Option(None, "--set", help="override a config key"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: config device)"),
) -> None:
    """External test set (paper 2.1.4): k-space to 320x320, combine, 4 centre patches of a 4x4 grid."""
    from magphase.data.external import prepare_external
    from magphase.training.distributed import resolve_device_name

    cfg = load_config(config, overrides)
    raw = raw or (Path(cfg.data.external_raw) if cfg.data.external_raw else None)
    labels = labels or (Path(cfg.data.external_labels) if cfg.data.external_labels else None)
    if raw is None or labels is None:
        raise ConfigError(
            "give --raw and --labels (or data.external_raw / data.external_labels in the config)"
        )
    if facial is None and (labels.parent / "facial_slices.csv").exists():
        facial = labels.parent / "facial_slices.csv"
        typer.echo(f"facial slices: {facial}")
    with item_bar("prepare-external", "vol") as (on_start, progress):
        summary = prepare_external(
            raw,
            labels,
            out,
            facial_csv=facial,
            cfg=cfg.prepare,
            seed=cfg.seed,
            device=resolve_device_name(device or cfg.device),
            progress=progress,
            on_start=on_start,
        )
    typer.echo(summary.table.to_string(index=False))
    typer.echo(f"store: {summary.store} ({summary.n_patches} patches from {summary.n_volumes} volumes)")
    typer.echo(f"rejected volumes: {summary.n_rejected} (see {out / 'rejects.csv'})")
