"""CLI subcommand ``magphase simulate``: the built-in simulated brain dataset (fastMRI format)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
import yaml
from tqdm import tqdm

from magphase.cli._app import app
from magphase.config import load_config
from magphase.config.simulate import SimulateConfig
from magphase.errors import ConfigError
from magphase.simulate.acquisition import sites_with_effects
from magphase.simulate.dataset import (
    SimulatedDatasetPlan,
    VolumeOutcome,
    estimated_bytes,
    merge_annotations,
    plan_table,
    read_plan,
    run_simulation,
    write_plan,
)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must be I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return index, count


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def resolve_cli_config(
    config: Path | None,
    preset: str | None,
    volumes: int | None,
    external: int | None,
    workers: int | None,
    seed: int | None,
) -> tuple[SimulateConfig, int]:
    """The simulate section with CLI flags applied (flags > config file > preset > defaults) and the seed.

    Flags become ``simulate.*`` overrides of the config file, so a ``--preset`` fills only the keys
    that neither the file nor another flag gives.
    """
    flags = {
        "preset": preset,
        "volumes": volumes,
        "external_volumes": external,
        "workers": workers,
        "seed": seed,
    }
    overrides = [f"simulate.{key}={value}" for key, value in flags.items() if value is not None]
    cfg = load_config(config, overrides)
    section = cfg.simulate
    return section, section.seed if section.seed is not None else cfg.seed


@app.command("simulate")
def simulate(
    out: Path | None = typer.Option(None, "--out", "-o", help="dataset folder (created; resumable)"),
    volumes: int | None = typer.Option(
        None, "--volumes", "-n", help="training-like volumes (fastMRI brain mix)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="dataset seed (default: simulate.seed, then seed)"),
    shard: str | None = typer.Option(None, "--shard", help="I/N: render only volumes i with i % N == I"),
    preset: str | None = typer.Option(None, "--preset", help="demo | reproduce"),
    external: int | None = typer.Option(
        None, "--external", help="external test-set volumes (other institution)"
    ),
    workers: int | None = typer.Option(None, "--workers", "-j", help="parallel processes"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="magphase config YAML (its simulate section)"
    ),
    preview: Path | None = typer.Option(
        None, "--preview", help="also draw one slice per sequence to this PNG"
    ),
    merge: Path | None = typer.Option(
        None, "--merge", help="only merge the shards' annotations of this folder"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the resolved config and the plan, write nothing"
    ),
) -> None:
    """Simulate multi-coil brain k-space with lesions and fastMRI+-style labels (resumable, shardable)."""
    if merge is not None:
        merge_annotations(merge, require_complete=True)
        plan = read_plan(merge)
        typer.echo(f"merged annotations of {len(plan.all_volumes)} volumes in {merge}")
        if preview is not None:
            from magphase.simulate.preview import render_preview

            typer.echo(f"preview: {render_preview(merge, preview)}")
        return
    if out is None:
        raise ConfigError("give --out DIR (or --merge DIR)")
    section, dataset_seed = resolve_cli_config(config, preset, volumes, external, workers, seed)
    shard_index, shard_count = parse_shard(shard)
    plan = SimulatedDatasetPlan.build(section, dataset_seed)
    plan.sites = sites_with_effects(plan.sites, section.acquisition_effects)
    selected = plan.shard(shard_index, shard_count)
    if dry_run:
        typer.echo(
            yaml.safe_dump(
                {"simulate": section.model_dump(mode="json"), "seed": dataset_seed}, sort_keys=False
            )
        )
        typer.echo(plan_table(plan))
        typer.echo(
            f"shard {shard_index}/{shard_count}: {len(selected)} of {len(plan.all_volumes)} volumes, "
            f"~{_gb(sum(estimated_bytes(v) for v in selected))} on disk; plan {plan.plan_hash()}"
        )
        return

    write_plan(out, plan)  # refuses a folder holding another plan before anything is drawn
    bar = tqdm(total=len(selected), unit="vol", desc="simulate", dynamic_ncols=True)

    def progress(outcome: VolumeOutcome) -> None:
        bar.set_postfix_str(f"{outcome.status} {outcome.stem}", refresh=False)
        bar.update(1)

    start = time.perf_counter()
    try:
        summary = run_simulation(
            out, plan, shard=(shard_index, shard_count), workers=section.workers, progress=progress
        )
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    typer.echo(plan_table(plan))
    typer.echo(
        f"{summary.written} volumes written, {summary.kept} kept (shard {shard_index}/{shard_count}); "
        f"{_gb(summary.bytes)} on disk; {elapsed:.1f} s with {section.workers} worker(s)"
    )
    if summary.written:
        per_volume = ", ".join(f"{k} {v / summary.written:.2f} s" for k, v in summary.stage_seconds.items())
        typer.echo(f"per written volume: {per_volume}")
    for note in summary.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW)
    if summary.merged:
        typer.echo(f"annotations: {out / 'brain.csv'}, {out / 'brain_file_list.csv'}")
        if plan.external:
            typer.echo(f"external labels: {out / 'external' / 'labels.csv'}")
    else:
        typer.echo(
            f"annotations not merged yet: run the other shards, then `magphase simulate --merge {out}`"
        )
    if preview is not None:
        from magphase.simulate.preview import render_preview

        typer.echo(f"preview: {render_preview(out, preview)}")
