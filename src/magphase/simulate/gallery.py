"""Gallery of the simulated findings: every catalogue label on every sequence, magnitude and phase.

One row per finding (:data:`magphase.simulate.findings.CATALOGUE_LABELS`), two columns (magnitude,
phase) per sequence. Each cell is the noise-free ground truth of :func:`~magphase.simulate.phantom.
render_volume` (what an ideal coil combination returns, before noise), cropped around the finding on
the slice where its annotated section is largest, shown up/down flipped like the fastMRI+ annotators
saw it, with the annotated mask outlined. The same subject (seed) and lesion are rendered for every
sequence of a row, so a row compares the finding's contrast across sequences; its size is the median
fitted fastMRI+ box of the label. A companion finding is drawn with the lesion it belongs to (edema
around a mass, a craniotomy over a resection cavity), outlined for the row's label only.

    python -m magphase.simulate.gallery --out docs/figures/findings.png
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from magphase.simulate.findings import (
    ANNOTATION_PIXEL_MM,
    CATALOGUE_LABELS,
    DEFAULT_SECTION_TO_DIAMETER,
    SECTION_TO_DIAMETER,
    load_findings,
)
from magphase.simulate.phantom import GroundTruthVolume, VolumeSpec, render_volume
from magphase.utils.seeds import derive_seed
from magphase.viz.plotting import MAGNITUDE_CMAP, PHASE_CMAP, PHASE_RANGE, pyplot, save_figure

logger = logging.getLogger(__name__)

GALLERY_SEQUENCES: tuple[str, ...] = ("AXFLAIR", "AXT1", "AXT1POST", "AXT2")
#: The lesion a companion finding is shown with (it is placed relative to it, see lesions.plan_lesions).
GALLERY_HOSTS: dict[str, tuple[str, ...]] = {"Edema": ("Mass",), "Craniotomy": ("Resection cavity",)}
GALLERY_SLICES = 12
_CENTRE_SLICE = GALLERY_SLICES // 2


def typical_radius_mm(label: str) -> float:
    """Half the in-plane diameter of a lesion whose box is the label's median fitted box."""
    median_box = load_findings().data["labels"][label]["box_size_px_percentiles"][10]
    return (
        0.5 * median_box * SECTION_TO_DIAMETER.get(label, DEFAULT_SECTION_TO_DIAMETER) * ANNOTATION_PIXEL_MM
    )


def finding_spec(label: str, sequence: str, seed: int = 0) -> VolumeSpec:
    """The gallery volume of ``label`` on ``sequence``: the label (with its host) centred mid-slab."""
    lesions = (*GALLERY_HOSTS.get(label, ()), label)
    return VolumeSpec(
        seed=derive_seed(seed, CATALOGUE_LABELS.index(label)),
        sequence=sequence,
        n_slices=GALLERY_SLICES,
        lesions=lesions,
        lesion_radii_mm=tuple(round(typical_radius_mm(x), 2) for x in lesions),
        lesion_slices=(_CENTRE_SLICE,) * len(lesions),
    )


def finding_crop(
    truth: GroundTruthVolume, label: str, min_px: int = 96
) -> tuple[int, slice, slice, np.ndarray]:
    """(slice, rows, cols, mask) of the square crop around the label's largest annotated section."""
    masks = [lesion.mask for lesion in truth.lesions if lesion.label == label]
    if not masks:
        raise ValueError(f"{label!r} missed every slice of the gallery volume")
    mask = np.any(np.stack(masks), axis=0)
    s = int(np.argmax(mask.sum(axis=(1, 2))))
    rows, cols = np.nonzero(mask[s])
    h, w = mask.shape[1:]
    side = int(min(max(min_px, 1.5 * max(np.ptp(rows), np.ptp(cols)) + 16), h, w))
    r0 = int(np.clip((rows.min() + rows.max()) // 2 - side // 2, 0, h - side))
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - side // 2, 0, w - side))
    return s, slice(r0, r0 + side), slice(c0, c0 + side), mask[s]


def render_finding_gallery(
    png_path: str | os.PathLike[str],
    labels: tuple[str, ...] = CATALOGUE_LABELS,
    sequences: tuple[str, ...] = GALLERY_SEQUENCES,
    seed: int = 0,
) -> Path:
    """Write the gallery PNG (see module docstring) and return its path."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(labels), 2 * len(sequences), figsize=(1.25 * 2 * len(sequences), 1.3 * len(labels)), squeeze=False
    )
    for i, label in enumerate(labels):
        for j, sequence in enumerate(sequences):
            truth = render_volume(finding_spec(label, sequence, seed))
            s, rows, cols, mask = finding_crop(truth, label)
            image = np.flipud(truth.image[s, rows, cols])
            outline = np.flipud(mask[rows, cols]).astype(float)
            mag = np.abs(image)
            ax_m, ax_p = axes[i, 2 * j], axes[i, 2 * j + 1]
            ax_m.imshow(mag, cmap=MAGNITUDE_CMAP, vmin=0, vmax=float(np.percentile(mag, 99.5)) or 1.0)
            ax_p.imshow(np.angle(image), cmap=PHASE_CMAP, vmin=PHASE_RANGE[0], vmax=PHASE_RANGE[1])
            for ax in (ax_m, ax_p):
                ax.contour(outline, levels=[0.5], colors="red", linewidths=0.5)
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax_m.set_title(f"{sequence}\nmagnitude", fontsize=7)
                ax_p.set_title(f"{sequence}\nphase", fontsize=7)
            logger.info("gallery: %s on %s, slice %d", label, sequence, s)
        axes[i, 0].set_ylabel(label.replace(" ", "\n", 1), fontsize=7)
    fig.tight_layout(pad=0.3)
    return save_figure(fig, png_path, dpi=80, palette=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw every simulated finding on every sequence.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"wrote {render_finding_gallery(args.out, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["GALLERY_SEQUENCES", "finding_crop", "finding_spec", "render_finding_gallery", "typical_radius_mm"]
