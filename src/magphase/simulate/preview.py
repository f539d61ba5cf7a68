"""Preview of a simulated dataset: one slice per sequence, magnitude and phase, lesion boxes (cf. Fig. 2).

Each column is one sequence. Rows: full slice magnitude (grey), full slice phase (cyclic 'twilight',
-pi..pi), then a 96 x 96 patch (scaled with the matrix) around the largest box, magnitude and phase.
The complex image is the coil combination of the *noisy* k-space with the true sensitivities from the
sidecar (``sum_c conj(S_c) y_c / sum_c |S_c|^2``), so the phase shown is the data's phase, not a
re-estimate. Slices are shown up/down flipped (radiological view, as fastMRI+ annotators saw them);
boxes (red) come from ``brain.csv``, converted to stored-array rows with
:func:`magphase.io.annotations.box_to_array` and then flipped with the image. Volumes without boxes
(the external set has volume-level labels only) show their ground-truth lesion outlines in cyan.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from magphase.conventions import PATCH_SIZE
from magphase.io.annotations import Box, read_annotations
from magphase.io.fastmri import open_volume
from magphase.mri.fft import ifft2c
from magphase.mri.rss import center_crop
from magphase.simulate.acquisition import read_truth, truth_path_for
from magphase.simulate.contrast import ALL_SIMULATED_SEQUENCES
from magphase.simulate.dataset import PlannedVolume, raw_path, read_plan
from magphase.viz.plotting import MAGNITUDE_CMAP, PHASE_CMAP, PHASE_RANGE, pyplot, save_figure

logger = logging.getLogger(__name__)

#: Preferred class per column: a lesion shows the boxes; unlabeled sequences have none.
_CLASS_PREFERENCE = ("abnormal", "metastasis", "excluded", "normal", "healthy", "unlabeled")


def combine_with_true_maps(kspace: np.ndarray, maps: np.ndarray, recon_shape: tuple[int, int]) -> np.ndarray:
    """Complex coil combination of one slice with known maps.

    Args:
        kspace: ``(C, 2H, W)`` complex k-space of a slice.
        maps: ``(C, H, W)`` true sensitivities on the recon grid.
        recon_shape: ``(H, W)``.

    Returns:
        ``(H, W)`` complex64 ``sum conj(S) x / sum |S|^2`` (0 where the maps vanish).
    """
    images = center_crop(ifft2c(kspace.astype(np.complex64)), recon_shape)
    weight = np.sum(np.abs(maps) ** 2, axis=0)
    combined = np.sum(np.conj(maps) * images, axis=0) / np.maximum(weight, 1e-12)
    return combined.astype(np.complex64)


def _choose_volumes(out_dir: Path) -> list[tuple[PlannedVolume, list[Box]]]:
    plan = read_plan(out_dir)
    boxes_by_file: dict[str, list[Box]] = {}
    csv_path = out_dir / "brain.csv"
    if csv_path.is_file():
        annotations = read_annotations(csv_path)
        boxes_by_file = {stem: list(v.boxes) for stem, v in annotations.volumes.items()}
    chosen = []
    for sequence in ALL_SIMULATED_SEQUENCES:
        candidates = [
            v for v in plan.all_volumes if v.sequence == sequence and raw_path(out_dir, v).is_file()
        ]
        if not candidates:
            continue

        def rank(v: PlannedVolume) -> tuple[int, int, int]:
            cls = _CLASS_PREFERENCE.index(v.volume_class) if v.volume_class in _CLASS_PREFERENCE else 99
            return cls, -len(boxes_by_file.get(v.stem, [])), v.index

        volume = min(candidates, key=rank)
        chosen.append((volume, boxes_by_file.get(volume.stem, [])))
    return chosen


def render_preview(out_dir: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> Path:
    """Draw the preview of a simulated dataset folder to ``png_path`` (PNG, atomically).

    Returns:
        The written path.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    out = Path(out_dir)
    chosen = _choose_volumes(out)
    if not chosen:
        raise FileNotFoundError(f"{out}: no simulated volume to preview")
    fig, axes = plt.subplots(4, len(chosen), figsize=(2.6 * len(chosen), 10.8), squeeze=False)
    for col, (volume, boxes) in enumerate(chosen):
        raw = raw_path(out, volume)
        truth = read_truth(truth_path_for(raw))
        h, w = truth.recon_shape
        area = np.zeros(volume.n_slices)
        for box in boxes:
            area[box.slice] += box.width * box.height
        # Volumes without boxes (external set: volume-level labels only) show the slice with the most
        # lesion, outlined from the ground-truth masks in cyan; otherwise the most brain.
        lesion_union = (
            truth.lesion_masks.any(axis=0) if truth.lesion_masks.size else np.zeros((1, h, w), bool)
        )
        if area.any():
            slice_index = int(np.argmax(area))
        elif lesion_union.any():
            slice_index = int(np.argmax(lesion_union.sum(axis=(1, 2))))
        else:
            slice_index = int(np.argmax(truth.brain_mask.sum(axis=(1, 2))))
        outline = np.flipud(lesion_union[slice_index]) if not boxes and lesion_union.any() else None
        with open_volume(raw) as handle:
            kspace = handle.kspace_slice(slice_index)
        maps = truth.coil_maps_on_grid("recon", slices=slice(slice_index, slice_index + 1))[0]
        image = combine_with_true_maps(kspace, maps, (h, w))
        image /= max(float(np.abs(image).max()), 1e-30)
        # Radiological view: the stored array flipped up/down.
        shown = np.flipud(image)
        slice_boxes = [b for b in boxes if b.slice == slice_index]
        patch = max(16, round(PATCH_SIZE * h / 320))
        if slice_boxes:
            big = max(slice_boxes, key=lambda b: b.width * b.height)
            row0, row1, col0, col1 = big.to_array(h)
            center_row, center_col = h - (row0 + row1) / 2, (col0 + col1) / 2
        elif outline is not None:
            rows, cols = np.nonzero(outline)
            center_row, center_col = float(rows.mean()), float(cols.mean())
        else:
            center_row, center_col = h / 2, w / 2
        top = int(np.clip(round(center_row - patch / 2), 0, h - patch))
        left = int(np.clip(round(center_col - patch / 2), 0, w - patch))
        views = [
            (np.abs(shown), MAGNITUDE_CMAP, 0.0, float(np.percentile(np.abs(shown), 99.5))),
            (np.angle(shown), PHASE_CMAP, *PHASE_RANGE),
        ]
        for row, (data, cmap, vmin, vmax) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            for box in slice_boxes:
                row0, row1, col0, col1 = box.to_array(h)
                # stored rows row0..row1 -> flipped rows h - row1 .. h - row0
                ax.add_patch(
                    Rectangle(
                        (col0 - 0.5, h - row1 - 0.5), col1 - col0, row1 - row0, fill=False, ec="red", lw=0.8
                    )
                )
            ax.add_patch(
                Rectangle((left - 0.5, top - 0.5), patch, patch, fill=False, ec="yellow", lw=0.6, ls="--")
            )
            crop = data[top : top + patch, left : left + patch]
            axes[row + 2, col].imshow(crop, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if outline is not None:
                ax.contour(outline, levels=[0.5], colors="cyan", linewidths=0.6)
                axes[row + 2, col].contour(
                    outline[top : top + patch, left : left + patch],
                    levels=[0.5],
                    colors="cyan",
                    linewidths=0.8,
                )
            for box in slice_boxes:
                row0, row1, col0, col1 = box.to_array(h)
                axes[row + 2, col].add_patch(
                    Rectangle(
                        (col0 - left - 0.5, h - row1 - top - 0.5),
                        col1 - col0,
                        row1 - row0,
                        fill=False,
                        ec="red",
                        lw=0.8,
                    )
                )
        labels = sorted({b.label for b in slice_boxes})
        title = f"{volume.sequence} ({volume.volume_class})\n"
        title += f"{volume.field_strength_t:g} T, {volume.n_coils} coils, {h}x{w}, slice {slice_index}"
        if labels:
            title += "\n" + "; ".join(labels)
        axes[0, col].set_title(title, fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    for row, name in enumerate(("magnitude", "phase", "patch magnitude", "patch phase")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    png = save_figure(fig, png_path, dpi=110)
    logger.info("preview of %d sequences written to %s", len(chosen), png)
    return png


__all__ = ["combine_with_true_maps", "render_preview"]
