"""Figures of the downstream experiments (paper Figs. 6-8): AUROC mean +- std against the data composition.

Input: the per-configuration summary of :func:`magphase.evaluation.downstream.summarize_downstream`
(columns ``config, condition, real_fraction, synthetic_fraction, input_mode`` and
``auroc_{test,external}_{mean,std}``).

- Fig. 6 / 7: substitution on the real test split / the external test set. x = percentage of real training
  data; squares = real data only, circles = real + synthetic substitution; the dashed line and grey band
  are the 100 %-real baseline mean +- std.
- Fig. 8: additive, panel (a) real test split, (b) external test set; x = synthetic data added as a
  percentage of the real training size; dashed baseline as above.

PNGs are written atomically (temp file + ``os.replace``). Magnitude-only configurations are not drawn
here (they are tabulated in ``summary.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from magphase.viz.plotting import pyplot, save_figure

log = logging.getLogger(__name__)

_METRIC_TITLES = {"test": "real test split", "external": "external test set"}
_REAL_COLOR = "#4c72b0"
_SYN_COLOR = "#dd8452"
_BASE_COLOR = "0.35"


def _baseline(summary: pd.DataFrame, metric: str) -> tuple[float, float]:
    base = summary[(summary["config"] == "real100")]
    if base.empty:
        return float("nan"), float("nan")
    return float(base[f"auroc_{metric}_mean"].iloc[0]), float(base[f"auroc_{metric}_std"].iloc[0])


def _draw_baseline(ax, summary: pd.DataFrame, metric: str) -> None:
    mean, std = _baseline(summary, metric)
    if np.isfinite(mean):
        ax.axhline(mean, color=_BASE_COLOR, ls="--", lw=1.2, label=f"100% real-data baseline ({mean:.3f})")
        if np.isfinite(std) and std > 0:
            ax.axhspan(mean - std, mean + std, color=_BASE_COLOR, alpha=0.12, lw=0)


def _series(ax, frame: pd.DataFrame, x: np.ndarray, metric: str, **style) -> None:
    y = frame[f"auroc_{metric}_mean"].to_numpy(dtype=float)
    e = frame[f"auroc_{metric}_std"].to_numpy(dtype=float)
    ok = np.isfinite(y)
    if ok.any():
        ax.errorbar(x[ok], y[ok], yerr=np.nan_to_num(e[ok]), capsize=3, lw=1.4, ms=6, **style)


def _finish(ax, xlabel: str, title: str, frames: list[pd.DataFrame], metric: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUROC")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(np.arange(0, 101, 10))
    ax.set_xlim(-4, 104)
    ax.grid(alpha=0.3)
    # y range from the data (mean +- std of every drawn point and the baseline), padded, inside [0, 1]
    lows, highs = [], []
    for f in frames:
        m = f[f"auroc_{metric}_mean"].to_numpy(float)
        e = np.nan_to_num(f[f"auroc_{metric}_std"].to_numpy(float))
        lows.append(m - e)
        highs.append(m + e)
    lo_all, hi_all = np.concatenate(lows), np.concatenate(highs)
    finite = np.isfinite(lo_all) & np.isfinite(hi_all)
    if finite.any():
        lo, hi = float(lo_all[finite].min()), float(hi_all[finite].max())
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    ax.legend(loc="best", fontsize=8, framealpha=0.85)


def plot_substitution(summary: pd.DataFrame, metric: str, out_png: str | Path) -> Path:
    """Fig. 6 (``metric="test"``) or Fig. 7 (``metric="external"``): AUROC vs percentage of real data."""
    plt = pyplot()
    s = summary[summary["input_mode"] == "complex"]
    real_only = s[s["condition"] == "real_only"].sort_values("real_fraction")
    substituted = pd.concat([s[s["condition"] == "real_synthetic"], s[s["config"] == "real100"]]).sort_values(
        "real_fraction"
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _draw_baseline(ax, summary, metric)
    _series(
        ax,
        real_only,
        100 * real_only["real_fraction"].to_numpy() - 0.8,
        metric,
        color=_REAL_COLOR,
        marker="s",
        label="Real data only",
    )
    _series(
        ax,
        substituted,
        100 * substituted["real_fraction"].to_numpy() + 0.8,
        metric,
        color=_SYN_COLOR,
        marker="o",
        label="Real data + synthetic substitution",
    )
    base = summary[summary["config"] == "real100"]
    _finish(
        ax,
        "Percentage of real data (%)",
        f"Substitution: {_METRIC_TITLES[metric]}",
        [real_only, substituted, base],
        metric,
    )
    return save_figure(fig, out_png, dpi=130, bbox_inches="tight")


def plot_additive(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """Fig. 8: AUROC vs synthetic data added (% of the real training size); (a) test split, (b) external."""
    plt = pyplot()
    s = summary[summary["input_mode"] == "complex"]
    added = s[s["condition"] == "real_plus_synthetic"].sort_values("synthetic_fraction")
    metrics = [m for m in ("test", "external") if np.isfinite(s[f"auroc_{m}_mean"].to_numpy(float)).any()]
    metrics = metrics or ["test"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.0 * len(metrics), 4.2), squeeze=False)
    for ax, metric, tag in zip(axes[0], metrics, "ab", strict=False):
        _draw_baseline(ax, summary, metric)
        _series(
            ax,
            added,
            100 * added["synthetic_fraction"].to_numpy(),
            metric,
            color=_SYN_COLOR,
            marker="o",
            label="Real data + additional synthetic data",
        )
        _finish(
            ax,
            "Synthetic data added (% of real training set)",
            f"({tag}) Additive: {_METRIC_TITLES[metric]}",
            [added, summary[summary["config"] == "real100"]],
            metric,
        )
    return save_figure(fig, out_png, dpi=130, bbox_inches="tight")


def write_downstream_figures(summary: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Figs. 6, 7 (when the external AUROC exists) and 8 into ``out_dir``; returns ``{name: path}``."""
    out_dir = Path(out_dir)
    figs: dict[str, Path] = {}
    has = summary["condition"].isin(["real_only", "real_synthetic"]).any()
    if has:
        figs["fig6"] = plot_substitution(summary, "test", out_dir / "fig6_substitution_test.png")
        if np.isfinite(summary["auroc_external_mean"].to_numpy(float)).any():
            figs["fig7"] = plot_substitution(summary, "external", out_dir / "fig7_substitution_external.png")
    if (summary["condition"] == "real_plus_synthetic").any():
        figs["fig8"] = plot_additive(summary, out_dir / "fig8_additive.png")
    log.info("downstream figures: %s", {k: str(v) for k, v in figs.items()})
    return figs


def plot_learning_curve(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """Learning curve: AUROC vs share of the real training volumes.

    Test and external: mean +- std over seeds (error bars) and the 95 % volume-bootstrap interval of the
    mean (shaded, where computed). Train and validation AUROC as thin dotted lines: the gap between train
    and the held-out sets shows whether the recipe fits its data.
    """
    plt = pyplot()
    s = summary.sort_values("real_fraction")
    x = 100 * s["real_fraction"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"test": (_REAL_COLOR, "s"), "external": (_SYN_COLOR, "o")}
    drawn = []
    for metric, (color, marker) in styles.items():
        y = s[f"auroc_{metric}_mean"].to_numpy(float)
        if not np.isfinite(y).any():
            continue
        drawn.append(metric)
        _series(ax, s, x, metric, color=color, marker=marker, label=_METRIC_TITLES[metric])
        if f"auroc_{metric}_lo" in s:
            lo, hi = s[f"auroc_{metric}_lo"].to_numpy(float), s[f"auroc_{metric}_hi"].to_numpy(float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)
    for metric, color in (("train", "0.25"), ("val", "0.55")):
        y = s[f"auroc_{metric}_mean"].to_numpy(float) if f"auroc_{metric}_mean" in s else np.array([])
        if y.size and np.isfinite(y).any():
            ax.plot(x, y, ls=":", marker=".", color=color, lw=1.1, label=f"{metric} (real)")
    ax.set_xlabel("Share of the real training volumes (%)")
    ax.set_ylabel("AUROC")
    ax.set_title("Learning curve: real-only downstream classifier", fontsize=10)
    ax.set_xlim(0, 104)
    ax.set_xticks(np.arange(0, 101, 25))
    vals = [
        s[c].to_numpy(float)
        for c in s.columns
        if c.startswith("auroc_") and c.endswith(("_mean", "_lo", "_hi"))
    ]
    allv = np.concatenate(vals) if vals else np.array([])
    allv = allv[np.isfinite(allv)]
    if allv.size:
        pad = max(0.02, 0.1 * (allv.max() - allv.min()))
        ax.set_ylim(max(0.0, allv.min() - pad), min(1.0, allv.max() + pad))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return save_figure(fig, out_png, dpi=130, bbox_inches="tight")


__all__ = ["plot_additive", "plot_learning_curve", "plot_substitution", "write_downstream_figures"]
