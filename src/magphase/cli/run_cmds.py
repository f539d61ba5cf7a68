"""CLI subcommands: ``run`` (every stage in order, resumable) and ``report``."""

from __future__ import annotations

from pathlib import Path

import typer

from magphase.cli._app import app
from magphase.cli._progress import run_one_stage, stage_bars
from magphase.config import dump_config, load_config
from magphase.errors import ConfigError
from magphase.rundir import RunLayout


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(None, help="YAML config (e.g. configs/demo.yaml); defaults if omitted."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created; reused to resume)."),
    config_opt: Path = typer.Option(None, "--config", "-c", help="Same as the positional CONFIG."),
    start: str = typer.Option(None, "--from", help="First stage to (re)run."),
    until: str = typer.Option(None, "--until", help="Last stage to run."),
    force: bool = typer.Option(False, "--force", help="Rerun every selected stage even if finished."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the resolved config and the plan; run nothing."
    ),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config value: key.sub=value."),
) -> None:
    """Run the whole protocol (simulate, prepare, autoencoder, encode, flow 1/2, sample, evaluations,
    report), skipping stages already finished with the same config and resuming interrupted ones."""
    import time

    from magphase.run import check_inputs, plan_run, run_pipeline

    cfg = load_config(config_opt or config, overrides)
    plan = plan_run(cfg, out, start, until, force)
    check_inputs(cfg, [p.stage for p in plan if p.action == "run"])
    if dry_run:
        typer.echo(dump_config(cfg))
        typer.echo("# plan")
        for p in plan:
            typer.echo(f"{p.stage:18s} {p.action:5s} ({p.reason})")
        return
    factory, opened = stage_bars()
    t0 = time.perf_counter()

    def on_stage(stage: str, event: str) -> None:
        if event == "skip":
            typer.echo(f"[skip] {stage} (finished with this config)")
        elif event == "start":
            typer.echo(f"[run ] {stage} ...")
        else:
            for bar in opened:
                bar.close()
            opened.clear()
            typer.echo(f"[done] {stage}  ({time.perf_counter() - t0:.0f} s elapsed)")

    try:
        run_pipeline(cfg, out, start=start, until=until, force=force, progress=factory, on_stage=on_stage)
    finally:
        for bar in opened:
            bar.close()
    report = RunLayout(out).report_file
    typer.echo(f"finished in {time.perf_counter() - t0:.0f} s")
    if report.is_file():
        typer.echo(f"report: {report}")


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `magphase run`."),
    config: Path = typer.Option(None, "--config", "-c", help="Config (default: RUN/config.yaml)."),
) -> None:
    """Write RUN/report/report.md with Tables 1, 3, 4, the downstream results and Figs. 2-8 (the report
    stage: it reads what the other stages wrote and computes nothing)."""
    layout = RunLayout(run)
    if not layout.root.is_dir():
        raise ConfigError(f"{run}: no such run folder")
    cfg = load_config(config if config else (layout.config_file if layout.config_file.is_file() else None))
    record = run_one_stage(cfg, run, "report")
    typer.echo(f"report: {record['summary']['report']}")
