"""Learnability check of the downstream task: the real-only classifier's learning curve.

The benchmark is right when the normal/abnormal task is neither trivial nor hopeless and still improves
with more data; only then can adding synthetic data show an effect. This trains the real-only downstream
classifier (the ``downstream`` recipe, unchanged) on nested shares of the real training VOLUMES
(``evaluation.learning_curve.fractions``, default 25 / 50 / 100 %), ``runs`` seeds each, and scores it on
the real test split and the external set with volume-bootstrap intervals
(:func:`magphase.evaluation.downstream.add_intervals`). The rise from the smallest share to 100 % comes
with its paired bootstrap interval.

Outputs in ``out_dir``: ``results.csv`` (one row per share x seed, resumable), ``summary.csv`` /
``summary.json`` (as the downstream experiment), ``learning_curve.md``, ``learning_curve.json`` and
``learning_curve.png``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from magphase.config.evaluation import EvaluationConfig
from magphase.evaluation.downstream import (
    TrainingConfiguration,
    format_mean_std,
    format_with_interval,
    run_downstream,
)
from magphase.training.distributed import is_main_process
from magphase.utils.atomic import atomic_write_text


def learning_curve_plan(fractions: tuple[float, ...]) -> list[TrainingConfiguration]:
    """Real-only configurations ``real100``, ``real050``, ... (largest first), experiment
    ``learning_curve``."""
    return [
        TrainingConfiguration(f"real{round(100 * f):03d}", "learning_curve", "real_only", float(f), 0.0)
        for f in sorted(fractions, reverse=True)
    ]


@dataclass
class LearningCurveResult:
    """Outputs of :func:`run_learning_curve`: the per-share summary, the rise and the files."""

    summary: pd.DataFrame
    rise: dict[str, dict[str, float | str]]
    markdown: Path
    json: Path
    figure: Path | None


def _rise(summary: pd.DataFrame) -> dict[str, dict[str, float | str]]:
    """AUROC at 100 % minus AUROC at the smallest share, per set, with its paired interval."""
    smallest = summary.sort_values("real_fraction").iloc[0]
    out: dict[str, dict[str, float | str]] = {}
    for key in ("test", "external"):
        d = float(smallest.get(f"delta_{key}", np.nan))  # smallest - real100
        lo, hi = (
            float(smallest.get(f"delta_{key}_lo", np.nan)),
            float(smallest.get(f"delta_{key}_hi", np.nan)),
        )
        out[key] = {
            "from_fraction": float(smallest["real_fraction"]),
            "rise": -d,
            "lo": -hi,
            "hi": -lo,
            "distinct": str(smallest.get(f"distinct_{key}", "")),
        }
    return out


def learning_curve_markdown(summary: pd.DataFrame, rise: dict[str, dict[str, float | str]]) -> str:
    """The learning-curve table (share, volumes, patches, AUROC train / val / test / external), the rise."""
    runs = int(summary["n_runs"].max()) if len(summary) else 0
    lines = [
        f"Real-only downstream classifier, {runs} seeds per share of the real training volumes: AUROC mean "
        "± std over seeds [95 % volume-bootstrap interval of the mean].",
        "",
        "| share of real volumes | volumes | patches | AUROC train | AUROC val | AUROC test "
        "| AUROC external |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in summary.sort_values("real_fraction").iterrows():
        lines.append(
            f"| {100 * r['real_fraction']:.0f} % | {r['n_real_volumes']:.0f} | {r['n_real']:.0f} "
            f"| {format_mean_std(r['auroc_train_mean'], r['auroc_train_std'])} "
            f"| {format_mean_std(r['auroc_val_mean'], r['auroc_val_std'])} "
            f"| {format_with_interval(r, 'test')} | {format_with_interval(r, 'external')} |"
        )
    lines.append("")
    for key, title in (("test", "internal test"), ("external", "external set")):
        r = rise[key]
        if np.isfinite(float(r["rise"])):
            verdict = "" if r["distinct"] == "yes" else " (not distinguishable from no rise)"
            lines.append(
                f"- Rise from {100 * float(r['from_fraction']):.0f} % to 100 % on the {title}: "
                f"{float(r['rise']):+.3f} [{float(r['lo']):+.3f}, {float(r['hi']):+.3f}]{verdict}."
            )
    return "\n".join(lines) + "\n"


def run_learning_curve(
    real_store: str | Path,
    out_dir: str | Path,
    cfg: EvaluationConfig,
    *,
    external_store: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    figures: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> LearningCurveResult:
    """Train and score the learning curve (resumable; a rerun trains only missing share x seed rows)."""
    out_dir = Path(out_dir)
    lc = cfg.learning_curve
    res = run_downstream(
        real_store,
        None,
        out_dir,
        cfg,
        external_store=external_store,
        seed=seed,
        device=device,
        figures=False,
        on_start=on_start,
        on_result=on_result,
        plan=learning_curve_plan(lc.fractions),
        runs=lc.runs,
    )
    summary = res.summary
    rise = _rise(summary)
    md_path, json_path = out_dir / "learning_curve.md", out_dir / "learning_curve.json"
    fig_path: Path | None = None
    if is_main_process():
        atomic_write_text(learning_curve_markdown(summary, rise), md_path)
        payload = {
            "fractions": list(lc.fractions),
            "runs": lc.runs,
            "rise": rise,
            "shares": json.loads(summary.to_json(orient="records")),
        }
        atomic_write_text(json.dumps(payload, indent=2) + "\n", json_path)
        if figures:
            from magphase.viz.figures_eval import plot_learning_curve

            fig_path = plot_learning_curve(summary, out_dir / "learning_curve.png")
    return LearningCurveResult(summary, rise, md_path, json_path, fig_path)


__all__ = ["LearningCurveResult", "learning_curve_markdown", "learning_curve_plan", "run_learning_curve"]
