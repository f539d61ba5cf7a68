"""CLI subcommands of the PhaseGen branch: ``magphase phasegen train | sample | figure | eval``."""

from __future__ import annotations

from pathlib import Path

import typer
from tqdm import tqdm

from magphase.cli._app import phasegen_app
from magphase.config import dump_config, load_config
from magphase.errors import ConfigError
from magphase.models.weights import EMA_WEIGHTS_NAME

_CONFIG = typer.Option(None, "--config", "-c", help="magphase config YAML (its phasegen section)")
_SET = typer.Option(None, "--set", help="override a config value, e.g. --set phasegen.train.steps=200")


@phasegen_app.command("train")
def train_phasegen_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="run directory (writes RUN/phasegen)"),
    store: Path | None = typer.Option(
        None, "--store", help="patch store (default: config, else RUN/prepare/patches)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from RUN/phasegen/checkpoint.pt"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
    dry_run: bool = typer.Option(False, "--dry-run", help="print the resolved config and the plan"),
) -> None:
    """Train PhaseGen (magnitude-conditioned complex phase diffusion) on a patch store's train split."""
    from magphase.rundir import RunLayout
    from magphase.stages.phasegen import train_phasegen
    from magphase.training.progress import TqdmProgress

    cfg = load_config(config, overrides)
    pg = cfg.phasegen
    layout = RunLayout(out)
    src = store or (Path(pg.patch_store) if pg.patch_store is not None else layout.patches)
    if dry_run:
        typer.echo(dump_config(cfg))
        d = pg.diffusion
        typer.echo(
            f"plan: complex U-Net {pg.preset!r} {pg.network.model_dump()} on {src} (split train); "
            f"T = {d.timesteps} ({d.schedule}), {d.noise} noise, {d.loss} loss; {pg.train.steps} steps of "
            f"batch {pg.train.batch_size} -> {layout.phasegen}"
        )
        return
    with TqdmProgress("phasegen") as bar:
        result = train_phasegen(cfg, layout.phasegen, src, resume=resume, progress=bar)
    m = result.last_metrics
    typer.echo(
        f"PhaseGen trained to step {result.step}: loss {m.get('loss', float('nan')):.4g}; "
        f"EMA weights {result.ema_path}; curves {result.loss_plot_path}"
    )


def _weights(run: Path | None, weights: Path | None) -> Path:
    from magphase.rundir import RunLayout

    if weights is not None:
        return weights
    if run is None:
        raise ConfigError("give --weights or --run (its phasegen/ema.safetensors is used)")
    return RunLayout(run).phasegen / EMA_WEIGHTS_NAME


@phasegen_app.command("sample")
def sample_phasegen_cmd(
    source: Path = typer.Option(..., "--source", help="patch store whose magnitudes get a new phase"),
    out: Path = typer.Option(..., "--out", "-o", help="synthetic store to write"),
    run: Path | None = typer.Option(None, "--run", help="run directory holding phasegen/"),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="PhaseGen EMA weights (.safetensors)"),
    split: str | None = typer.Option(None, "--split", help="only this split of the source (default: all)"),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="at most this many patches (evenly spaced)"
    ),
    sampler: str | None = typer.Option(None, "--sampler", help="ddim | ddpm (default: config)"),
    steps: int | None = typer.Option(None, "--steps", "-k", min=1, help="ddim steps K (default: config)"),
    eta: float | None = typer.Option(None, "--eta", help="ddim stochasticity in [0, 1] (default: config)"),
    seed: int | None = typer.Option(None, "--seed", help="noise seed (default: config seed)"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    amp: str | None = typer.Option(None, "--amp", help="none | bf16 | fp16 | auto (default: config)"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N] (default: config)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing store"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
) -> None:
    """Give every magnitude of a patch store a phase drawn by PhaseGen; the magnitude is kept exactly."""
    from magphase.data.store import Store
    from magphase.models.complex_unet import load_phasegen
    from magphase.stages.phasegen import generate_phasegen_store
    from magphase.training.distributed import resolve_device_name

    cfg = load_config(config, overrides)
    sc = cfg.phasegen.sampling
    sampler = sampler or sc.sampler
    if sampler not in ("ddim", "ddpm"):
        raise ConfigError(f"--sampler must be ddim or ddpm, got {sampler!r}")
    eta = sc.eta if eta is None else eta
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {eta}")
    amp = amp or sc.amp
    if amp not in ("none", "bf16", "fp16", "auto"):
        raise ConfigError(f"--amp must be none, bf16, fp16 or auto, got {amp!r}")
    path = _weights(run, weights)
    model = load_phasegen(path, device=resolve_device_name(device or cfg.device))
    src = Store(source)
    n = len(src.select(split=split)) if split is not None else len(src)
    n = min(n, limit) if limit is not None else n
    with tqdm(total=n, desc="phasegen", unit="patch", dynamic_ncols=True) as bar:
        written = generate_phasegen_store(
            model,
            src,
            out,
            split=split,
            limit=limit,
            sampler=sampler,
            steps=steps if steps is not None else sc.steps,
            eta=eta,
            seed=cfg.seed if seed is None else seed,
            batch_size=batch_size or sc.batch_size,
            amp=amp,
            project=sc.project,
            provenance={"weights": str(path)},
            overwrite=overwrite,
            progress=bar.update,
        )
    typer.echo(f"PhaseGen store: {written} ({n} patches, {sampler}, magnitudes of {source})")


@phasegen_app.command("figure")
def phasegen_figure_cmd(
    source: Path = typer.Option(..., "--source", help="real patch store"),
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write"),
    run: Path | None = typer.Option(None, "--run", help="run directory holding phasegen/"),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="PhaseGen EMA weights (.safetensors)"),
    k: int = typer.Option(6, "--k", min=1, help="patches (columns)"),
    draws: int = typer.Option(2, "--draws", help="PhaseGen draws per patch (rows)"),
    split: str = typer.Option("test", "--split", help="split to pick patches from"),
    steps: int | None = typer.Option(None, "--steps", "-k", min=1, help="ddim steps K (default: config)"),
    seed: int | None = typer.Option(None, "--seed", help="noise seed (default: config seed)"),
    config: Path | None = _CONFIG,
    overrides: list[str] | None = _SET,
) -> None:
    """Real magnitude and phase beside PhaseGen phases drawn for the same magnitudes."""
    from magphase.models.complex_unet import load_phasegen
    from magphase.stages.phasegen import phasegen_figure

    cfg = load_config(config, overrides)
    sc = cfg.phasegen.sampling
    model = load_phasegen(_weights(run, weights))
    path = phasegen_figure(
        model,
        source,
        out,
        k=k,
        draws=draws,
        split=split,
        sampler=sc.sampler,
        steps=steps if steps is not None else sc.steps,
        seed=cfg.seed if seed is None else seed,
        amp=sc.amp,
    )
    typer.echo(f"figure: {path}")


@phasegen_app.command("eval")
def phasegen_eval_cmd(
    synthetic: Path = typer.Option(..., "--synthetic", help="store written by magphase phasegen sample"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for phasegen_phase.csv / .md"),
    real: Path | None = typer.Option(None, "--real", help="real patch store (default: the one recorded)"),
) -> None:
    """Phase statistics of PhaseGen phases against the real phases of the same magnitudes."""
    from magphase.evaluation.phase import evaluate_phasegen
    from magphase.stages.phasegen import write_phasegen_eval

    typer.echo(write_phasegen_eval(evaluate_phasegen(synthetic, real), out))
