"""CLI subcommands: labels. Register with `@app.command(...)`."""

from __future__ import annotations

from magphase.cli._app import app  # noqa: F401
