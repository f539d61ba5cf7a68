"""CLI subcommands: evaluate. Register with `@app.command(...)` (or `@evaluate_app.command`)."""

from __future__ import annotations

from magphase.cli._app import app, evaluate_app  # noqa: F401
