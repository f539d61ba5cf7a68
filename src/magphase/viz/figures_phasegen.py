"""PhaseGen figure: real patches, their real phase, and phases PhaseGen drew for the same magnitudes.

Columns are patches (spread over the sequences). Rows: magnitude (grey, 0 to the patch's 99.5th
percentile), real phase, then one row per PhaseGen draw (different seeds) and optionally the constant-phase
baseline. Phase uses the cyclic 'twilight' colormap on -pi..pi and is blanked (white) where the magnitude is
below 3 % of the patch's 99.5th percentile, where no phase is defined. PNGs are written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from magphase.mri.complex import magnitude_phase
from magphase.viz.plotting import phase_colorbar, pyplot, save_figure, show_magnitude, show_phase

#: Phase is not drawn below this fraction of a patch's 99.5th-percentile magnitude.
PHASE_MASK_FRACTION = 0.03


def plot_phasegen(
    real: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray]],
    out_png: str | Path,
    *,
    column_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Grid of ``k`` columns: magnitude, real phase, then the phase of every ``(name, k x 2 x H x W)`` row."""
    plt = pyplot()
    real = np.asarray(real, dtype=np.float32)
    k = real.shape[0]
    names = ["magnitude", "real phase", *[name for name, _ in rows]]
    height = 1.25 * len(names) + 0.6
    fig, axes = plt.subplots(len(names), k, figsize=(1.25 * k + 1.6, height), squeeze=False)
    phase_im = None
    for c in range(k):
        mag, phase = magnitude_phase(real[c])
        vmax = float(np.percentile(mag, 99.5)) or 1.0
        mask = mag < PHASE_MASK_FRACTION * vmax
        show_magnitude(axes[0, c], mag, vmax=vmax, interpolation="nearest")
        phases = [phase] + [magnitude_phase(np.asarray(p[c], dtype=np.float32))[1] for _, p in rows]
        for r, ph in enumerate(phases, start=1):
            phase_im = show_phase(axes[r, c], np.ma.masked_where(mask, ph), interpolation="nearest")
        if column_titles is not None:
            axes[0, c].set_title(column_titles[c], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, name in enumerate(names):
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.subplots_adjust(wspace=0.04, hspace=0.06, right=0.9, top=1 - 0.45 / height, bottom=0.02)
    if phase_im is not None:
        cb = phase_colorbar(fig, phase_im, cax=fig.add_axes((0.915, 0.15, 0.012, 0.5)))
        cb.set_label("phase (rad)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png, dpi=130, bbox_inches="tight")


__all__ = ["PHASE_MASK_FRACTION", "plot_phasegen"]
