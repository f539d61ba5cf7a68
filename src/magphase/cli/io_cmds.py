"""CLI subcommands: io (``magphase info``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from magphase.cli._app import app
from magphase.io.fastmri import open_volume


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:g}"
    return f"{text} {unit}".rstrip()


def _xyz(values: tuple[Any, ...], unit: str = "") -> str:
    text = " x ".join(f"{v:g}" for v in values)
    return f"{text} {unit}".rstrip()


def _format_summary(summary: dict[str, Any]) -> str:
    header = summary["header"]
    limits = header["kspace_encoding_step_1"]
    lines = [
        ("file", summary["file"]),
        ("sequence", summary["sequence"] or "n/a"),
        ("patient_id", summary["patient_id"] or "n/a"),
        ("kspace shape", " x ".join(str(v) for v in summary["kspace_shape"]) + "  (slices x coils x H x W)"),
        ("slices", str(summary["n_slices"])),
        ("coils", str(summary["n_coils"])),
        ("encoded matrix", _xyz(header["encoded_matrix"])),
        ("encoded FOV", _xyz(header["encoded_fov_mm"], "mm")),
        ("recon matrix", _xyz(header["recon_matrix"])),
        ("recon FOV", _xyz(header["recon_fov_mm"], "mm")),
        (
            "phase encoding",
            f"lines {limits['minimum']}..{limits['maximum']}, centre {limits['center']}",
        ),
        ("reconstruction_rss", "present" if summary["has_reconstruction_rss"] else "absent"),
        ("field strength", _number(header["field_strength_t"], "T")),
        ("TR", _number(header["tr_ms"], "ms")),
        ("TE", _number(header["te_ms"], "ms")),
        ("TI", _number(header["ti_ms"], "ms")),
        ("flip angle", _number(header["flip_angle_deg"], "deg")),
        ("protocol", header["protocol_name"] or "n/a"),
        ("scanner", " ".join(v for v in (header["vendor"], header["model"]) if v) or "n/a"),
    ]
    width = max(len(name) for name, _ in lines)
    out = [f"{name:<{width}}  {value}" for name, value in lines]
    out.append("attrs:")
    for key, value in sorted(summary["attrs"].items()):
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        out.append(f"  {key} = {shown}")
    return "\n".join(out)


@app.command("info")
def info(
    file: Path = typer.Argument(..., help="A fastMRI-format .h5 file (real or simulated)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    full: bool = typer.Option(False, "--full", help="Also read every slice and check for NaN/Inf."),
) -> None:
    """Print the header summary of a fastMRI HDF5 file (sequence, shapes, matrices, FOV, TR/TE/TI)."""
    with open_volume(file, required_attrs=()) as volume:
        volume.validate(full=full)
        summary = volume.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(_format_summary(summary))
