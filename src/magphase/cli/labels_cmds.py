"""CLI subcommand ``magphase labels``: fastMRI+ volume classes per sequence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from magphase.cli._app import app
from magphase.config import load_config
from magphase.errors import ConfigError
from magphase.io.annotations import (
    VOLUME_CLASSES,
    AnnotationSet,
    LabelRules,
    read_annotations,
    write_volume_labels,
)


def _load_rules(path: Path | None, config: Path | None) -> LabelRules:
    if path is not None and config is not None:
        raise ConfigError("give --rules or --config, not both")
    if config is not None:
        # The prepare stage labels volumes with the same rules, so use its section.
        return load_config(config).prepare.labels
    if path is None:
        return LabelRules()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read label rules: {exc}") from exc
    try:
        return LabelRules.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid label rules: {exc}") from exc


def labels_report(annotations: AnnotationSet) -> dict[str, Any]:
    """JSON-ready summary: counts per sequence x class, totals, rules and rejects."""
    counts = annotations.summary()
    total = {name: sum(row[name] for row in counts.values()) for name in VOLUME_CLASSES}
    return {
        "annotations": annotations.source,
        "file_list": annotations.file_list_source,
        "rules": annotations.rules.model_dump(),
        "counts": counts,
        "total": total,
        "volumes": sum(total.values()),
        "rejects": {
            "count": len(annotations.rejects),
            "by_kind": annotations.reject_counts(),
            "rows": [
                {
                    "source": r.source,
                    "row": r.row,
                    "file": r.file,
                    "field": r.field,
                    "kind": r.kind,
                    "reason": r.reason,
                }
                for r in annotations.rejects
            ],
        },
    }


def format_labels_table(report: dict[str, Any]) -> str:
    """Plain-text table of :func:`labels_report`: one row per sequence, then the total."""
    columns = (*VOLUME_CLASSES, "total")
    rows = [(name, [*row.values(), sum(row.values())]) for name, row in report["counts"].items()]
    rows.append(("total", [*report["total"].values(), report["volumes"]]))
    width = max(len("sequence"), *(len(name) for name, _ in rows))
    lines = ["  ".join([f"{'sequence':<{width}}", *(f"{c:>9}" for c in columns)])]
    lines += ["  ".join([f"{name:<{width}}", *(f"{v:>9d}" for v in values)]) for name, values in rows]
    by_kind = ", ".join(f"{kind} {n}" for kind, n in report["rejects"]["by_kind"].items())
    lines.append(f"rejected rows: {report['rejects']['count']}" + (f" ({by_kind})" if by_kind else ""))
    return "\n".join(lines)


@app.command("labels")
def labels(
    annotations: Path = typer.Option(..., "--annotations", "-a", help="fastMRI+ brain.csv"),
    file_list: Path | None = typer.Option(None, "--file-list", "-l", help="brain_file_list.csv"),
    rules: Path | None = typer.Option(
        None, "--rules", help="YAML of LabelRules fields (default: paper 2.1.1)"
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="magphase config YAML: use its prepare.labels rules"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="write one CSV row per volume (class, reason)"),
    show_rejects: bool = typer.Option(False, "--rejects", help="list every rejected row"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of the table"),
) -> None:
    """Volume classes (normal / abnormal / excluded / unlabeled) per sequence from fastMRI+ annotations."""
    annotation_set = read_annotations(annotations, file_list, rules=_load_rules(rules, config))
    if out is not None:
        write_volume_labels(out, annotation_set)
    report = labels_report(annotation_set)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"annotations: {annotations}" + (f"  file list: {file_list}" if file_list else ""))
    typer.echo(format_labels_table(report))
    if show_rejects:
        for reject in annotation_set.rejects:
            typer.echo(
                f"  {reject.source}:{reject.row}  {reject.file or '-'}  [{reject.field}] "
                f"{reject.kind}: {reject.reason}"
            )
    if out is not None:
        typer.echo(f"per-volume labels: {out}")
