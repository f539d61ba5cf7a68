"""Figures of the training data (paper Fig. 2): example patches, magnitude and phase.

Magnitude is drawn in grey on [0, 1] (slices are normalised to their maximum magnitude, so a
patch's values are comparable across patches); phase with the cyclic colormap ``twilight`` on
[-pi, pi], so a wrap from +pi to -pi shows no false edge.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from magphase.mri.complex import magnitude_phase
from magphase.viz.plotting import phase_colorbar, pyplot, save_figure, show_magnitude, show_phase

log = logging.getLogger(__name__)


class PatchSource(Protocol):
    """What the figure reads from a patch store (:class:`magphase.data.store.Store` is one)."""

    @property
    def manifest(self) -> pd.DataFrame: ...

    def read(self, name: str, index: Any) -> np.ndarray: ...


def choose_examples(manifest: pd.DataFrame, n: int, seed: int = 0) -> list[tuple[int | None, int | None]]:
    """Pick ``n`` (normal index, abnormal index) pairs for display, deterministically.

    Normal examples come from normal volumes (else any normal patch, else unlabeled ones);
    abnormal examples prefer patches that contain their whole box and large boxes (visible
    lesions), from different volumes where possible. A missing class gives ``None``.
    """
    rng = np.random.default_rng(seed)
    label = manifest["label"].to_numpy()
    source = manifest["source_label"].to_numpy() if "source_label" in manifest.columns else label
    normal = np.flatnonzero((label == "normal") & (source == "normal"))
    if normal.size == 0:
        normal = np.flatnonzero(label == "normal")
    if normal.size == 0:
        normal = np.flatnonzero(label == "unlabeled")
    abnormal_frame = manifest[label == "abnormal"]
    if len(abnormal_frame) and {"box_row0", "box_row1", "box_col0", "box_col1"} <= set(manifest.columns):
        area = (abnormal_frame["box_row1"] - abnormal_frame["box_row0"]) * (
            abnormal_frame["box_col1"] - abnormal_frame["box_col0"]
        )
        whole = abnormal_frame[(abnormal_frame["box_overlap"] >= 0.999) & (area >= area.quantile(0.5))]
        if len(whole):
            abnormal_frame = whole
    if len(abnormal_frame):
        abnormal_frame = abnormal_frame.drop_duplicates("volume")
    abnormal = np.array(abnormal_frame.index.to_numpy(), dtype=np.int64)
    normal = rng.permutation(normal)[:n]
    abnormal = rng.permutation(abnormal)[:n]
    count = min(n, max(len(normal), len(abnormal)))
    return [
        (int(normal[i]) if i < len(normal) else None, int(abnormal[i]) if i < len(abnormal) else None)
        for i in range(count)
    ]


def plot_example_patches(store: PatchSource, out_png: str | Path, seed: int = 0, n_rows: int = 2) -> Path:
    """Fig. 2: rows of [magnitude, phase] for a normal and an abnormal patch; written atomically.

    Abnormal patches get their annotation box outlined (dashed) when the manifest has box columns.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    st = store
    m = st.manifest
    pairs = choose_examples(m, n_rows, seed)
    n_rows = max(1, len(pairs))
    fig, axes = plt.subplots(n_rows, 4, figsize=(12, 3.1 * n_rows + 0.3), squeeze=False)
    im_phase = None
    for r in range(n_rows):
        pair = pairs[r] if r < len(pairs) else (None, None)
        for k, (idx, cls) in enumerate(zip(pair, ("Normal", "Abnormal"), strict=True)):
            ax_mag, ax_ph = axes[r, 2 * k], axes[r, 2 * k + 1]
            for ax in (ax_mag, ax_ph):
                ax.set_xticks([])
                ax.set_yticks([])
            if idx is None:
                ax_mag.set_title(f"(no {cls.lower()} patch)")
                continue
            mag, phase = magnitude_phase(st.read("patches", idx))
            row = m.iloc[idx]
            if row["label"] == "unlabeled":
                cls = "Unlabeled"
            # Slices are normalised to their maximum (often scalp fat), so brain patches are dim on
            # [0, 1]: display each patch on [0, its 99.5th percentile] and say so in the title.
            top = float(np.percentile(mag, 99.5)) or 1.0
            show_magnitude(ax_mag, mag, vmax=top)
            im_phase = show_phase(ax_ph, phase)
            ax_mag.set_title(
                f"Magnitude ({cls})\n{row['sequence']}, slice {row['slice']}, [0, {top:.2f}]", fontsize=9
            )
            ax_ph.set_title(f"Phase ({cls})", fontsize=9)
            if cls == "Abnormal" and "box_row0" in m.columns and int(row["box_row0"]) >= 0:
                r0, c0 = int(row["box_row0"]) - int(row["row"]), int(row["box_col0"]) - int(row["col"])
                h, w = (
                    int(row["box_row1"]) - int(row["box_row0"]),
                    int(row["box_col1"]) - int(row["box_col0"]),
                )
                for ax in (ax_mag, ax_ph):
                    ax.add_patch(
                        Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, ec="yellow", ls="--", lw=1.0)
                    )
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    if im_phase is not None:
        cax = fig.add_axes((0.935, 0.25, 0.012, 0.5))
        phase_colorbar(fig, im_phase, cax=cax, label="phase (rad)")
    out_png = save_figure(fig, out_png, dpi=110)
    log.info("wrote %s", out_png)
    return out_png
