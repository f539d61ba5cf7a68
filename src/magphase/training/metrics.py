"""Training metrics: ``metrics.jsonl`` (one JSON object per logged step) and the loss-curve PNG.

Each row holds ``step`` (completed updates), ``epoch`` (items drawn / dataset length), ``time_s`` (wall
seconds since the run started, summed over resumes), ``lr`` (of parameter group 0, for the last update),
``samples_per_s`` (global), ``loss`` and the task's loss terms (means over the logging interval and over
ranks) and ``grad_norm`` (before clipping; only when clipping is on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from magphase.utils.atomic import atomic_write_text
from magphase.viz.plotting import save_figure

METRICS_NAME = "metrics.jsonl"
LOSS_PLOT_NAME = "loss_curves.png"
# Columns that are bookkeeping, not loss terms (never drawn on the loss panel).
NON_LOSS_KEYS = frozenset({"step", "epoch", "time_s", "lr", "samples_per_s", "grad_norm"})


class MetricsWriter:
    """Append-only JSONL writer; each row is flushed so a killed run keeps what it logged."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(dict(row), allow_nan=True) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(path: str | Path, last_step: int) -> int:
    """Drop rows logged after ``last_step`` (a killed run's steps past its checkpoint); returns rows kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= last_step]
    atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), path)
    return len(kept)


def plot_loss_curves(metrics_path: str | Path, png_path: str | Path, title: str | None = None) -> Path | None:
    """Draw every loss term (and the gradient norm) and the learning rate against the step.

    Loss terms share the left panel, on a log axis when all are positive; the learning rate is on the right.
    Returns the PNG path, or None when there is nothing to draw yet.
    """
    # Figure without pyplot: no global backend state, renders with Agg for PNG on any machine.
    from matplotlib.figure import Figure

    rows = read_metrics(metrics_path)
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    terms = sorted({k for r in rows for k in r if k not in NON_LOSS_KEYS and isinstance(r[k], (int, float))})
    terms.sort(key=lambda k: (k != "loss", k))

    fig = Figure(figsize=(12, 4))
    ax_loss, ax_grad, ax_lr = fig.subplots(1, 3)
    # fixed margins: a layout engine would cost more than the drawing itself
    fig.subplots_adjust(left=0.075, right=0.98, bottom=0.13, top=0.86, wspace=0.34)
    all_positive = True
    for key in terms:
        ys = [r.get(key, math.nan) for r in rows]
        finite = [y for y in ys if math.isfinite(y)]
        all_positive &= all(y > 0 for y in finite)
        if key == "loss":  # black dashed on top: stays visible when a term equals the total
            ax_loss.plot(steps, ys, label=key, color="black", ls="--", lw=1.6, zorder=3)
        else:
            ax_loss.plot(steps, ys, label=key, lw=1.2)
    if terms and all_positive:
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="loss (interval mean)", title="loss terms")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)

    if any("grad_norm" in r for r in rows):
        norms = [r.get("grad_norm", math.nan) for r in rows]
        ax_grad.plot(steps, norms, color="tab:red")
        if any(n > 0 for n in norms):  # a log axis needs a positive value (a frozen model has none)
            ax_grad.set_yscale("log")
    ax_grad.set(xlabel="step", ylabel="global grad L2 norm (pre-clip)", title="gradient norm")
    ax_grad.grid(alpha=0.3)

    ax_lr.plot(steps, [r.get("lr", math.nan) for r in rows], color="tab:green")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    ax_lr.grid(alpha=0.3)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    if title:
        fig.suptitle(title)

    return save_figure(fig, png_path, dpi=110)


__all__ = [
    "LOSS_PLOT_NAME",
    "METRICS_NAME",
    "MetricsWriter",
    "plot_loss_curves",
    "read_metrics",
    "truncate_metrics",
]
