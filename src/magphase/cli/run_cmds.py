"""CLI subcommands: ``run`` (every stage in order, resumable) and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from magphase.cli._app import app
from magphase.config import dump_config, load_config


def _bars() -> tuple[Any, list[Any]]:
    """A progress factory for the pipeline plus the list of bars it opened (closed by the caller)."""
    from tqdm.auto import tqdm

    opened: list[Any] = []

    def factory(desc: str, total: int | None):
        bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        opened.append(bar)

        def update(n: int = 1, *_: Any) -> None:
            bar.update(n if isinstance(n, int) else 1)

        return update

    return factory, opened


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

    from magphase.pipeline import plan_run, run_pipeline

    cfg = load_config(config_opt or config, overrides)
    plan = plan_run(cfg, out, start, until, force)
    if dry_run:
        typer.echo(dump_config(cfg))
        typer.echo("# plan")
        for p in plan:
            typer.echo(f"{p.stage:18s} {p.action:5s} ({p.reason})")
        return
    factory, opened = _bars()
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
    report = out / "report" / "report.md"
    typer.echo(f"finished in {time.perf_counter() - t0:.0f} s")
    if report.is_file():
        typer.echo(f"report: {report}")


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run folder written by `magphase run`."),
    config: Path = typer.Option(None, "--config", "-c", help="Config (default: RUN/config.yaml)."),
    no_flow_figures: bool = typer.Option(False, "--no-flow-figures", help="Skip sampling Figs. 4-5."),
) -> None:
    """Write RUN/report/report.md with Tables 1, 3, 4, the downstream results and Figs. 2-8."""
    from magphase.report.report import write_report

    cfg = load_config(config) if config else None
    path = write_report(run, cfg, draw_flow_figures=not no_flow_figures)
    typer.echo(f"report: {path}")
