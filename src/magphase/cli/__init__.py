"""The ``magphase`` command. Each stage registers its subcommands from its own module.

Library code logs; only this package prints and draws progress bars.
"""

from __future__ import annotations

import logging

import typer

from magphase import __version__
from magphase.cli._app import app, evaluate_app
from magphase.errors import MagphaseError


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"magphase {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


# Subcommand modules register themselves on import (order = order in --help, so not sorted).
# isort: off
from magphase.cli import (  # noqa: E402,F401
    io_cmds,
    labels_cmds,
    simulate_cmds,
    prepare_cmds,
    autoencoder_cmds,
    flow_cmds,
    phasegen_cmds,
    evaluate_cmds,
    run_cmds,
)
# isort: on


def main() -> None:
    """Console entry point: run the app, turning documented errors into a one-line message."""
    try:
        app()
    except MagphaseError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from exc


__all__ = ["app", "evaluate_app", "main"]
