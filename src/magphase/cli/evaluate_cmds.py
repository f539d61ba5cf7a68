"""CLI subcommands of the evaluation stage (paper 2.4).

``magphase evaluate realfake``       real vs synthetic latents per sequence (Table 4)
``magphase evaluate downstream``     substitution / additive / magnitude-only experiments (Figs. 6-8)
``magphase evaluate learning-curve`` real-only downstream classifier at 25 / 50 / 100 % of the real volumes
``magphase evaluate select-stage1``  stage-1 checkpoint with the LOWEST validation real-vs-synthetic AUROC
``magphase evaluate select-stage2``  stage-2 checkpoint with the HIGHEST validation downstream AUROC

Every command resumes: finished (configuration, run) rows in the output folder are not recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from magphase.cli._app import app, evaluate_app  # noqa: F401
from magphase.cli._progress import item_bar
from magphase.config import MagphaseConfig, dump_config, load_config
from magphase.errors import ConfigError

_CONFIG = typer.Option(None, "--config", "-c", help="magphase config YAML (its evaluation section)")
_SET = typer.Option(None, "--set", help="override a config value, e.g. --set evaluation.downstream.runs=1")
_DEVICE = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: config)")
_DRY = typer.Option(False, "--dry-run", help="print the resolved config and the plan, do nothing")


def _load(
    config: Path | None,
    overrides: list[str] | None,
    device: str | None,
    experiment: Literal["realfake", "downstream"],
) -> tuple[MagphaseConfig, str]:
    """The config and the classifier device: ``--device``, else the experiment's ``train.device``, else
    the config's ``device``; ``auto`` becomes ``cuda`` when available, else ``cpu``."""
    from magphase.training.distributed import resolve_device_name

    cfg = load_config(config, overrides)
    return cfg, resolve_device_name(device or getattr(cfg.evaluation, experiment).train.device or cfg.device)


def _auroc_postfix(row: dict) -> dict[str, str]:
    shown = {k: row[k] for k in ("sequence", "config", "run") if k in row}
    for key in ("auroc_mean", "auroc_test", "auroc_external"):
        if key in row:
            shown[key] = f"{float(row[key]):.3f}"
    return shown


def _candidates(items: list[str] | None) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--candidate {item!r}: expected NAME=STORE")
        name, path = item.split("=", 1)
        out[name.strip()] = Path(path)
    if not out:
        raise ConfigError("give at least one --candidate NAME=STORE")
    return out


def _echo_selection(scores: dict[str, float], best: str) -> None:
    for name, score in scores.items():
        typer.echo(f"{name}: validation AUROC {score:.3f}{'  <- selected' if name == best else ''}")


@evaluate_app.command("realfake")
def realfake_cmd(
    real: Path = typer.Option(..., "--real", help="real latent store (mu, logvar)"),
    synthetic: Path = typer.Option(..., "--synthetic", help="stage-1 synthetic latent store (w = 1)"),
    test: list[Path] | None = typer.Option(
        None, "--test", help="separate synthetic test store(s): one, or n_test_sets (repeat the option)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (results.csv, table4.md, runs/)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    real_latents: str | None = typer.Option(
        None,
        "--real-latents",
        help="posterior | mean (default: evaluation.realfake.real_latents, else flow.latents)",
    ),
    device: str | None = _DEVICE,
    dry_run: bool = _DRY,
) -> None:
    """Real vs synthetic latent classification per sequence: AUROC mean +- std (paper Table 4)."""
    from magphase.data.store import Store
    from magphase.evaluation.realfake import real_split_counts, resolve_real_latents, run_realfake

    cfg, dev = _load(config, overrides, device, "realfake")
    ev = cfg.evaluation
    mode = real_latents or resolve_real_latents(cfg)
    if dry_run:
        typer.echo(dump_config(ev))
        counts = real_split_counts(Store(real), ev.realfake.sequences)
        typer.echo(counts.to_string())
        typer.echo(
            f"plan: {len(counts)} sequences x {ev.realfake.runs} runs, "
            f"{ev.realfake.n_test_sets} synthetic test sets each; {ev.realfake.train.steps} steps per "
            f"classifier; real latents {mode}; device {dev}; out {out}"
        )
        return
    with item_bar("realfake", "run", _auroc_postfix) as (on_start, on_result):
        res = run_realfake(
            real,
            synthetic,
            out,
            ev,
            synthetic_test_stores=test or (),
            seed=cfg.seed,
            device=dev,
            real_latents=mode,
            on_start=on_start,
            on_result=on_result,
        )
    typer.echo(res.table4_md.read_text())
    typer.echo(f"results: {res.results_csv}; table: {res.table4_csv}")


@evaluate_app.command("downstream")
def downstream_cmd(
    real: Path = typer.Option(..., "--real", help="real patch store"),
    synthetic: Path | None = typer.Option(
        None, "--synthetic", help="decoded stage-2 synthetic patch store (w = 2)"
    ),
    external: Path | None = typer.Option(None, "--external", help="external test patch store"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (results.csv, summary.md, figures)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    device: str | None = _DEVICE,
    dry_run: bool = _DRY,
) -> None:
    """Downstream normal-vs-abnormal classification: substitution, additive, magnitude-only (Figs. 6-8)."""
    from magphase.evaluation.downstream import plan_configurations, run_downstream

    cfg, dev = _load(config, overrides, device, "downstream")
    ev = cfg.evaluation
    if dry_run:
        typer.echo(dump_config(ev))
        plan = plan_configurations(ev.downstream)
        typer.echo("configurations: " + ", ".join(c.name for c in plan))
        typer.echo(
            f"plan: {len(plan)} configurations x {ev.downstream.runs} runs of {ev.downstream.train.steps} "
            f"steps; external {'yes' if external else 'no'}; device {dev}; out {out}"
        )
        return
    with item_bar("downstream", "run", _auroc_postfix) as (on_start, on_result):
        res = run_downstream(
            real,
            synthetic,
            out,
            ev,
            external_store=external,
            seed=cfg.seed,
            device=dev,
            on_start=on_start,
            on_result=on_result,
        )
    typer.echo(res.summary_md.read_text())
    typer.echo(f"results: {res.results_csv}; figures: {', '.join(str(p) for p in res.figures.values())}")


@evaluate_app.command("learning-curve")
def learning_curve_cmd(
    real: Path = typer.Option(..., "--real", help="real patch store"),
    external: Path | None = typer.Option(None, "--external", help="external test patch store"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (learning_curve.md/.json/.png)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    device: str | None = _DEVICE,
    dry_run: bool = _DRY,
) -> None:
    """Learnability check: real-only downstream AUROC at growing shares of the real training volumes
    (evaluation.learning_curve.fractions x runs seeds; the downstream recipe), with bootstrap intervals."""
    from magphase.evaluation.learning_curve import learning_curve_plan, run_learning_curve

    cfg, dev = _load(config, overrides, device, "downstream")
    ev = cfg.evaluation
    lc = ev.learning_curve
    if dry_run:
        typer.echo(dump_config(ev))
        plan = learning_curve_plan(lc.fractions)
        typer.echo(
            f"plan: {', '.join(c.name for c in plan)} x {lc.runs} seeds of {ev.downstream.train.steps} "
            f"steps; external {'yes' if external else 'no'}; device {dev}; out {out}"
        )
        return
    with item_bar("learning curve", "run", _auroc_postfix) as (on_start, on_result):
        res = run_learning_curve(
            real,
            out,
            ev,
            external_store=external,
            seed=cfg.seed,
            device=dev,
            on_start=on_start,
            on_result=on_result,
        )
    typer.echo(res.markdown.read_text())
    typer.echo(f"figure: {res.figure}" if res.figure else f"summary: {res.json}")


@evaluate_app.command("select-stage1")
def select_stage1_cmd(
    real: Path = typer.Option(..., "--real", help="real latent store"),
    candidate: list[str] | None = typer.Option(
        None, "--candidate", help="NAME=STORE: synthetic latents of one stage-1 checkpoint (repeat)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (selection.csv, selection.json)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    device: str | None = _DEVICE,
) -> None:
    """Choose the stage-1 checkpoint whose samples are hardest to tell from real (lowest val AUROC)."""
    from magphase.evaluation.realfake import resolve_real_latents, select_stage1_checkpoint

    cfg, dev = _load(config, overrides, device, "realfake")
    res = select_stage1_checkpoint(
        real,
        _candidates(candidate),
        out,
        cfg.evaluation,
        seed=cfg.seed,
        device=dev,
        real_latents=resolve_real_latents(cfg),
    )
    _echo_selection(res.scores, res.best)


@evaluate_app.command("select-stage2")
def select_stage2_cmd(
    real: Path = typer.Option(..., "--real", help="real patch store"),
    candidate: list[str] | None = typer.Option(
        None, "--candidate", help="NAME=STORE: decoded synthetic patches of one stage-2 checkpoint (repeat)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (selection.csv, selection.json)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    device: str | None = _DEVICE,
) -> None:
    """Choose the stage-2 checkpoint whose samples train the best classifier (highest val AUROC)."""
    from magphase.evaluation.downstream import select_stage2_checkpoint

    cfg, dev = _load(config, overrides, device, "downstream")
    res = select_stage2_checkpoint(
        real, _candidates(candidate), out, cfg.evaluation, seed=cfg.seed, device=dev
    )
    _echo_selection(res.scores, res.best)
