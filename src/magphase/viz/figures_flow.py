"""Figures of the flow stage: Fig. 4 (stage-1 samples beside real patches, per sequence) and Fig. 5
(stage-2 normal vs abnormal samples for the labelled sequences).

Patches are float32 ``k x 2 x H x W`` ([real, imag]). Every patch is drawn as two panels: magnitude
(grey, from 0 to a per-sequence upper limit shared by real and synthetic so they are comparable) above
phase (cyclic 'twilight' colormap, fixed range -pi..pi). PNGs are written atomically.

The ``*_from_models`` helpers sample the flow model, decode with the autoencoder and pick real patches
from a patch store; Fig. 5 uses the SAME initial noise for the normal and the abnormal column of a
pair, so the two differ only by the class condition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from magphase.mri.complex import magnitude_phase
from magphase.viz.plotting import phase_colorbar, pyplot, save_figure, show_magnitude, show_phase

log = logging.getLogger(__name__)


def _magnitude_limit(*arrays: np.ndarray) -> float:
    mags = [magnitude_phase(a)[0].ravel() for a in arrays if len(a)]
    if not mags:
        return 1.0
    hi = float(np.percentile(np.concatenate(mags), 99.5))
    return hi if hi > 0 else 1.0


def plot_patch_comparison(
    rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
    column_titles: tuple[str, str],
    out_png: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Side-by-side grid: for each row key, ``k`` patches of group A then ``k`` of group B.

    Args:
        rows: row label (e.g. sequence) -> (patches A, patches B), each ``k x 2 x H x W`` float.
        column_titles: names of group A and B (e.g. ``("real", "synthetic")``).
        out_png: output path.
        title: figure title.
    Returns:
        The PNG path. Each row label spans two image rows: magnitude (grey) and phase ('twilight').
    """
    plt = pyplot()
    keys = list(rows)
    k = max(max(len(a), len(b)) for a, b in rows.values()) if keys else 0
    if k == 0:
        raise ValueError("nothing to draw: every row is empty")
    ncols = 2 * k
    height = 2.3 * len(keys) + 0.7
    fig = plt.figure(figsize=(1.15 * ncols + 1.5, height))
    # A narrow empty column separates the two groups.
    grid = fig.add_gridspec(
        2 * len(keys),
        ncols + 1,
        width_ratios=[1] * k + [0.18] + [1] * k,
        wspace=0.04,
        hspace=0.06,
        top=1 - 0.55 / height,
        bottom=0.02,
        left=0.08,
        right=0.9,
    )
    axes = np.empty((2 * len(keys), ncols), dtype=object)
    for rr in range(2 * len(keys)):
        for c in range(ncols):
            axes[rr, c] = fig.add_subplot(grid[rr, c if c < k else c + 1])
    mag_im = phase_im = None
    for r, key in enumerate(keys):
        a, b = (np.asarray(x, dtype=np.float32) for x in rows[key])
        vmax = _magnitude_limit(a, b)
        for c in range(ncols):
            group, j = (a, c) if c < k else (b, c - k)
            ax_m, ax_p = axes[2 * r, c], axes[2 * r + 1, c]
            for ax in (ax_m, ax_p):
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if j >= len(group):
                ax_m.axis("off")
                ax_p.axis("off")
                continue
            mag, phase = magnitude_phase(group[j])
            mag_im = show_magnitude(ax_m, mag, vmax=vmax, interpolation="nearest")
            phase_im = show_phase(ax_p, phase, interpolation="nearest")
            if r == 0 and j == 0:
                ax_m.set_title(column_titles[0 if c < k else 1], fontsize=10, loc="left")
        axes[2 * r, 0].set_ylabel(f"{key}\nmagnitude", fontsize=9)
        axes[2 * r + 1, 0].set_ylabel("phase", fontsize=9)
    if phase_im is not None:
        cax = fig.add_axes((0.915, 0.12, 0.012, 0.3))
        cb = phase_colorbar(fig, phase_im, cax=cax)
        cb.set_label("phase (rad)", fontsize=8)
    if mag_im is not None:
        cax = fig.add_axes((0.915, 0.55, 0.012, 0.3))
        cb = fig.colorbar(mag_im, cax=cax, ticks=[0])
        cb.ax.set_yticklabels(["0"])
        cb.set_label("magnitude (0 .. row's 99.5th pct.)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top")
    return save_figure(fig, out_png, dpi=130, bbox_inches="tight")


def figure4(
    real: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    out_png: str | Path,
    *,
    note: str = "",
) -> Path:
    """Fig. 4: per sequence, real patches (left) beside stage-1 synthetic patches (right)."""
    rows = {s: (real.get(s, np.zeros((0, 2, 1, 1))), synthetic[s]) for s in synthetic}
    title = "Stage 1: real vs synthetic patches per sequence" + (f" ({note})" if note else "")
    return plot_patch_comparison(rows, ("real", "synthetic"), out_png, title=title)


def figure5(
    normal: Mapping[str, np.ndarray],
    abnormal: Mapping[str, np.ndarray],
    out_png: str | Path,
    *,
    note: str = "",
) -> Path:
    """Fig. 5: per labelled sequence, stage-2 samples conditioned on normal (left) and abnormal (right)."""
    rows = {s: (normal[s], abnormal[s]) for s in normal}
    title = "Stage 2: synthetic normal vs abnormal" + (f" ({note})" if note else "")
    return plot_patch_comparison(rows, ("normal", "abnormal"), out_png, title=title)


__all__ = [
    "figure4",
    "figure5",
    "plot_patch_comparison",
]
