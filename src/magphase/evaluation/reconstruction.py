"""Autoencoder evaluation (paper Sec. 3.1): Table 3 per sequence and Fig. 3 example reconstructions.

Every patch of the evaluated split (``test``) is encoded and decoded from ``mu`` (deterministic; or from
one seeded posterior draw) and scored with :func:`magphase.evaluation.metrics.reconstruction_metrics`:
phase coherence (paper Eq. 2), magnitude SSIM and magnitude PSNR (data range 1). Table 3 gives mean and
standard deviation over the patches of each sequence, with the paper's published values beside.

Outputs (``OUT`` = ``RUN/autoencoder/evaluation``)::

    OUT/per_patch.csv     patch_id, volume, sequence, label, phase_coherence, ssim, psnr (+ baseline_*)
    OUT/table3.csv        per sequence (+ "all"): n, mean/std of each metric, paper values, targets met
    OUT/table3.md         the same as a Markdown table
    OUT/fig3_reconstructions.png   original / reconstruction / difference, magnitude and phase,
                          for one abnormal and one normal patch (the median-PSNR patch of each kind)
    OUT/metrics.json      the table as JSON plus the evaluation settings
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from magphase.conventions import SEQUENCES
from magphase.data.datasets import PatchDataset
from magphase.data.store import Store
from magphase.evaluation.metrics import reconstruction_metrics, summarize
from magphase.evaluation.paper import PAPER_TABLE3
from magphase.models.cvae import ConditionalVAE
from magphase.mri.complex import channels_to_complex
from magphase.utils.atomic import atomic_write_csv, atomic_write_text
from magphase.viz.plotting import MAGNITUDE_CMAP, PHASE_CMAP, PHASE_RANGE, phase_colorbar, pyplot, save_figure

log = logging.getLogger(__name__)

METRICS = ("phase_coherence", "ssim", "psnr")

#: The issue's acceptance targets (the paper's worst sequence, rounded): every sequence must reach them.
TARGETS: dict[str, float] = {"phase_coherence": 0.997, "ssim": 0.93, "psnr": 35.0}
_DECIMALS = {"phase_coherence": 4, "ssim": 3, "psnr": 1}
_HEADERS = {"phase_coherence": "Phase coherence (γ)", "ssim": "Mag. SSIM", "psnr": "Mag. PSNR (dB)"}


@dataclass
class AutoencoderEvaluation:
    """What :func:`evaluate_autoencoder` returns."""

    per_patch: pd.DataFrame
    table: pd.DataFrame
    out_dir: Path
    table_csv: Path
    table_md: Path
    figure: Path | None
    metrics_json: Path


# ------------------------------------------------------------------------------------ reconstruction
@torch.no_grad()
def reconstruct(
    model: ConditionalVAE,
    x: torch.Tensor,
    seq: torch.Tensor,
    decode_mean: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x_hat`` of a batch: decode ``mu`` (``decode_mean``) or one posterior draw (seeded: ``generator``)."""
    mu, logvar = model.encode(x, seq)
    if decode_mean:
        return model.decode(mu, seq)
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
    return model.decode(mu + torch.exp(0.5 * logvar) * eps, seq)


def baseline_reconstruction(x: torch.Tensor) -> torch.Tensor:
    """The no-training reference: 2 x 2 mean pooling then bilinear up-sampling (the shortcut path alone).

    It tells how much of a reconstruction score the 4x compression gives away for free on the data at hand.
    """
    return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)


def score_split(
    model: ConditionalVAE,
    store: Store,
    split: str = "test",
    *,
    batch_size: int = 64,
    decode_mean: bool = True,
    seed: int = 0,
    sequence_aliases: dict[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Per-patch metrics of one split: the manifest's identifying columns, :data:`METRICS` of the model and
    ``baseline_<metric>`` of :func:`baseline_reconstruction`."""
    dataset = PatchDataset(store, split=split, sequence_aliases=sequence_aliases)
    device = next(model.parameters()).device
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    parts.update({f"baseline_{m}": [] for m in METRICS})
    for start in range(0, len(dataset), batch_size):
        items = np.arange(start, min(start + batch_size, len(dataset)))
        x = torch.from_numpy(store.read("patches", dataset.indices[items])).to(device)
        seq = torch.from_numpy(dataset.sequences[items]).to(device)
        x_hat = reconstruct(model, x, seq, decode_mean, generator)
        x_cpu = x.float().cpu()
        for k, v in reconstruction_metrics(x_hat.float().cpu(), x_cpu).items():
            parts[k].append(v)
        for k, v in reconstruction_metrics(baseline_reconstruction(x_cpu), x_cpu).items():
            parts[f"baseline_{k}"].append(v)
        if progress is not None:
            progress(len(items))
    cols = [c for c in ("patch_id", "volume", "sequence", "label", "split") if c in store.manifest.columns]
    frame = store.manifest.iloc[dataset.indices][cols].reset_index(drop=True)
    frame["store_index"] = dataset.indices
    for k, v in parts.items():
        frame[k] = np.concatenate(v)
    return frame


# --------------------------------------------------------------------------------------------- table
def table3(per_patch: pd.DataFrame) -> pd.DataFrame:
    """Table 3: one row per sequence present (paper order), then ``all``; mean/std per metric + paper."""
    rows: list[dict[str, Any]] = []
    present = [s for s in SEQUENCES if s in set(per_patch["sequence"])]
    present += sorted(set(per_patch["sequence"]) - set(SEQUENCES))
    for name, group in [(s, per_patch[per_patch["sequence"] == s]) for s in present] + [("all", per_patch)]:
        row: dict[str, Any] = {"sequence": name, "n": len(group)}
        meets = True
        for m in METRICS:
            mean, std = summarize(group[m].to_numpy())
            row[f"{m}_mean"], row[f"{m}_std"] = mean, std
            paper = PAPER_TABLE3.get(name, {}).get(m)
            row[f"paper_{m}_mean"] = paper[0] if paper else math.nan
            row[f"paper_{m}_std"] = paper[1] if paper else math.nan
            if f"baseline_{m}" in group:
                row[f"baseline_{m}_mean"] = summarize(group[f"baseline_{m}"].to_numpy())[0]
            meets &= bool(mean >= TARGETS[m])
        row["meets_targets"] = meets
        rows.append(row)
    return pd.DataFrame(rows)


def _pm(mean: float, std: float, decimals: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def table3_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """Markdown of :func:`table3`: ours beside the paper's values, targets in the caption."""
    header = ["Sequence", "n"]
    for m in METRICS:
        header += [f"{_HEADERS[m]}", "paper"]
    header.append("targets met")
    lines = []
    if title:
        lines += [title, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [str(r["sequence"]), str(int(r["n"]))]
        for m in METRICS:
            d = _DECIMALS[m]
            cells.append(_pm(r[f"{m}_mean"], r[f"{m}_std"], d))
            cells.append(_pm(r[f"paper_{m}_mean"], r[f"paper_{m}_std"], d))
        cells.append("yes" if r["meets_targets"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    if all(f"baseline_{m}_mean" in table for m in METRICS):
        lines += [
            "",
            "Reference without training (2 x 2 mean pooling + bilinear up-sampling), means:",
            "",
            "| Sequence | " + " | ".join(_HEADERS[m] for m in METRICS) + " |",
            "|" + "---|" * (len(METRICS) + 1),
        ]
        for _, r in table.iterrows():
            cells = [f"{r[f'baseline_{m}_mean']:.{_DECIMALS[m]}f}" for m in METRICS]
            lines.append(f"| {r['sequence']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± standard deviation over the patches of each sequence. Targets: phase coherence ≥ "
        f"{TARGETS['phase_coherence']}, SSIM ≥ {TARGETS['ssim']}, PSNR ≥ {TARGETS['psnr']} dB (means).",
    ]
    return "\n".join(lines) + "\n"


def write_table3(table: pd.DataFrame, out_dir: str | Path, title: str | None = None) -> tuple[Path, Path]:
    """Write ``table3.csv`` and ``table3.md`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = atomic_write_csv(table, out_dir / "table3.csv")
    md_path = atomic_write_text(table3_markdown(table, title), out_dir / "table3.md")
    return csv_path, md_path


# -------------------------------------------------------------------------------------------- figure
def _median_psnr_index(frame: pd.DataFrame) -> int:
    order = frame["psnr"].rank(method="first").to_numpy()
    return int(frame.index[int(np.argmin(np.abs(order - (len(frame) + 1) / 2)))])


def pick_figure_patches(
    per_patch: pd.DataFrame, abnormal_sequence: str = "AXT1POST", normal_sequence: str = "AXT1PRE"
) -> list[tuple[str, int]]:
    """``[(title, row of per_patch)]``: one abnormal and one normal patch, each the median-PSNR patch of its
    candidates (a typical reconstruction, not the best). Preference: the given sequence and label, then
    the label in any sequence; for "normal", unlabeled patches of the sequence next (the paper's normal
    example is AXT1PRE, a sequence without labels). Kinds without a candidate are left out."""
    seq, lab = per_patch["sequence"], per_patch.get("label", pd.Series("", index=per_patch.index))
    choices = {
        "abnormal": [(seq == abnormal_sequence) & (lab == "abnormal"), lab == "abnormal"],
        "normal": [
            (seq == normal_sequence) & (lab == "normal"),
            (seq == normal_sequence) & (lab != "abnormal"),
            lab == "normal",
            lab != "abnormal",
        ],
    }
    picks: list[tuple[str, int]] = []
    for kind, masks in choices.items():
        for mask in masks:
            cand = per_patch[mask & np.isfinite(per_patch["psnr"])]
            if len(cand):
                i = _median_psnr_index(cand)
                r = per_patch.loc[i]
                label = r["label"] if "label" in r else kind
                picks.append((f"{kind} ({r['sequence']}, {label})", i))
                break
    return picks


def plot_reconstructions(
    examples: list[tuple[str, np.ndarray, np.ndarray, dict[str, float]]],
    path: str | Path,
    mag_diff_max: float = 0.05,
) -> Path:
    """Fig. 3: per example a group of original / reconstruction / difference, magnitude (top, grey) and
    phase (bottom, cyclic 'twilight' over [-pi, pi]); the phase difference is ``angle(x_hat conj(x))``,
    wrapped to [-pi, pi]. Each example is ``(title, x, x_hat, metrics)`` with ``x`` ``2 x H x W``."""
    plt = pyplot()
    n = len(examples)
    fig = plt.figure(figsize=(7.8 * n, 5.6), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(1, max(n, 1), wspace=0.04))
    for sub, (title, x, x_hat, metrics) in zip(subfigs, examples, strict=False):
        z, z_hat = channels_to_complex(x), channels_to_complex(x_hat)
        mag, mag_hat = np.abs(z), np.abs(z_hat)
        dphase = np.angle(z_hat * np.conj(z))
        vmax = float(max(mag.max(), 1e-6))
        axes = sub.subplots(2, 3)
        panels = [
            (mag, MAGNITUDE_CMAP, 0.0, vmax, "original"),
            (mag_hat, MAGNITUDE_CMAP, 0.0, vmax, "reconstruction"),
            (np.abs(mag_hat - mag), "inferno", 0.0, mag_diff_max, "|difference|"),
            (np.angle(z), PHASE_CMAP, *PHASE_RANGE, "original"),
            (np.angle(z_hat), PHASE_CMAP, *PHASE_RANGE, "reconstruction"),
            (dphase, PHASE_CMAP, *PHASE_RANGE, "difference (wrapped)"),
        ]
        for k, (ax, (img, cmap, lo, hi, name)) in enumerate(zip(axes.flat, panels, strict=True)):
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=9)
            if k == 0:
                ax.set_ylabel("magnitude")
            if k == 3:
                ax.set_ylabel("phase (rad)")
            if k == 2:
                sub.colorbar(im, ax=ax, shrink=0.85, extend="max")
            if k == 5:
                phase_colorbar(sub, im, ax=ax, shrink=0.85)
        sub.suptitle(
            f"{title}\nγ = {metrics['phase_coherence']:.4f}, SSIM = {metrics['ssim']:.3f}, "
            f"PSNR = {metrics['psnr']:.1f} dB",
            fontsize=10,
        )
    return save_figure(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------- stage
def evaluate_autoencoder(
    model: ConditionalVAE,
    store: str | Path | Store,
    out_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    decode_mean: bool = True,
    seed: int = 0,
    sequence_aliases: dict[str, str] | None = None,
    figure_abnormal_sequence: str = "AXT1POST",
    figure_normal_sequence: str = "AXT1PRE",
    extra: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> AutoencoderEvaluation:
    """Score ``split`` of the patch store, write Table 3 (CSV + Markdown), Fig. 3 and per-patch metrics.

    Args:
        model: the trained autoencoder (:func:`magphase.models.cvae.load_autoencoder`).
        store: the patch store.
        out_dir: output folder (created).
        extra: additional provenance written into ``metrics.json`` (weights, step, training time).
    """
    store = store if isinstance(store, Store) else Store(store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_patch = score_split(
        model,
        store,
        split,
        batch_size=batch_size,
        decode_mean=decode_mean,
        seed=seed,
        sequence_aliases=sequence_aliases,
        progress=progress,
    )
    atomic_write_csv(per_patch, out_dir / "per_patch.csv")
    table = table3(per_patch)
    csv_path, md_path = write_table3(
        table, out_dir, title=f"Table 3: reconstruction quality on the {split} split"
    )

    figure: Path | None = None
    picks = pick_figure_patches(per_patch, figure_abnormal_sequence, figure_normal_sequence)
    if picks:
        examples = []
        dataset = PatchDataset(store, split=None, sequence_aliases=sequence_aliases)
        device = next(model.parameters()).device
        for title, row in picks:
            r = per_patch.loc[row]
            j = int(r["store_index"])
            x = torch.from_numpy(store.read("patches", slice(j, j + 1))).to(device)
            seq = torch.from_numpy(dataset.sequences[[j]]).to(device)
            x_hat = reconstruct(model, x, seq, decode_mean=True)
            metrics = {m: float(r[m]) for m in METRICS}
            examples.append((title, x[0].cpu().numpy(), x_hat[0].float().cpu().numpy(), metrics))
        figure = plot_reconstructions(examples, out_dir / "fig3_reconstructions.png")

    summary = {
        "split": split,
        "decode": "mu" if decode_mean else "posterior draw",
        "seed": seed,
        "targets": TARGETS,
        "all_sequences_meet_targets": bool(table[table["sequence"] != "all"]["meets_targets"].all()),
        "table3": json.loads(table.to_json(orient="records")),
        **(extra or {}),
    }
    metrics_json = atomic_write_text(json.dumps(summary, indent=2) + "\n", out_dir / "metrics.json")
    log.info("autoencoder evaluation on %d %s patches -> %s", len(per_patch), split, out_dir)
    return AutoencoderEvaluation(per_patch, table, out_dir, csv_path, md_path, figure, metrics_json)


__all__ = [
    "METRICS",
    "TARGETS",
    "AutoencoderEvaluation",
    "baseline_reconstruction",
    "evaluate_autoencoder",
    "pick_figure_patches",
    "plot_reconstructions",
    "reconstruct",
    "score_split",
    "table3",
    "table3_markdown",
    "write_table3",
]
