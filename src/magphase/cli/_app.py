"""The typer application objects shared by every subcommand module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="magphase",
    help="Generative modelling of complex-valued brain MRI (magnitude + phase).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
evaluate_app = typer.Typer(
    help="Evaluate a trained stage (autoencoder, realfake, downstream).", no_args_is_help=True
)
app.add_typer(evaluate_app, name="evaluate")
phasegen_app = typer.Typer(
    help="PhaseGen: magnitude-conditioned phase diffusion (train, sample, eval, figure).",
    no_args_is_help=True,
)
app.add_typer(phasegen_app, name="phasegen")
