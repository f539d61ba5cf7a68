"""Magnitude-based brain mask, one slice at a time (paper 2.1.3: patches must lie >= 80 % in it).

Method (per slice; lengths in mm, converted with the pixel size):

1. Magnitude divided by its maximum and lightly Gaussian-smoothed (``smoothing_mm``), so noise does
   not fragment the mask while thin dark structures (skull, CSF) stay visible.
2. Head: pixels above a quarter of Otsu's threshold (air vs anything), closed and hole-filled,
   largest component. Its centroid and equivalent radius locate the brain's centre.
3. Brain intensity level: the median magnitude in a central disc (``core_radius_fraction`` of the
   head radius), which holds brain in every axial slice. Tissue = magnitude above
   ``tissue_fraction`` x that level. The threshold is relative to the *brain*, not global: in
   T1-weighted images scalp fat is 3-5x brighter than brain (a global Otsu threshold then separates
   fat from everything else), while cortical bone, air and (T1/FLAIR) CSF lie below brain level.
4. Scalp exclusion: the head mask eroded by ``scalp_depth_mm`` bounds the tissue. Scalp plus outer
   skull is thicker than this almost everywhere, and in some sequences (T1: bright diploe, T2:
   dim scalp over a 1-2 pixel bone line) no intensity gap separates them from the brain.
5. The bounded tissue is eroded by ``separation_mm`` (thin bridges through CSF/bone break); the
   component overlapping the central disc most is the brain, plus any component at least
   ``keep_fraction`` of its size (the hemispheres of high slices, split by the falx). They are
   dilated back by the same radius inside the tissue.
6. A closing (``closing_mm``) bridges sulci, holes (ventricles, dark lesion cores) are filled, and
   a final erosion (``shrink_mm``) keeps the mask conservatively inside the brain.
7. Slices whose mask is smaller than ``min_area_fraction`` of the image hold no brain (empty), and
   so do noise-only slices: a "head" covering more than ``max_head_fraction`` of the image or
   less than 4x brighter than its surroundings.

This is a classical skull strip, deliberately simple and explainable: no atlas, no learned model,
no dependency beyond scipy. Its Dice against the simulator's ground-truth brain masks is measured
per sequence in docs/prepare.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Image side of the default pixel size (fastMRI brain recon matrix).
REFERENCE_SIZE = 320
#: Pixel size assumed when none is given: fastMRI brain, 220 mm field of view on 320 pixels.
DEFAULT_PIXEL_MM = 220.0 / 320.0


@dataclass(frozen=True)
class BrainMaskParams:
    """Parameters of :func:`brain_mask_slice` (lengths in mm)."""

    smoothing_mm: float = 0.7
    core_radius_fraction: float = 0.5
    tissue_fraction: float = 0.75
    scalp_depth_mm: float = 11.0
    separation_mm: float = 2.0
    keep_fraction: float = 0.2
    closing_mm: float = 2.75
    shrink_mm: float = 0.7
    min_area_fraction: float = 0.02
    max_head_fraction: float = 0.9


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises the between-class variance of a histogram)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return labels == (int(np.argmax(sizes)) + 1)


#: Radius (pixels) above which morphology switches from a disc structuring element to a distance
#: transform: both give identical results; the structuring element is faster for small radii.
_EDT_RADIUS = 6.0


def _disc(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= radius * radius + 1e-9


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion by a Euclidean disc; outside the image counts as background."""
    if radius <= 0:
        return mask
    if radius < _EDT_RADIUS:
        return ndimage.binary_erosion(mask, _disc(radius))
    padded = np.pad(mask, 1)
    return (ndimage.distance_transform_edt(padded) > radius + 1e-9)[1:-1, 1:-1]


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disc."""
    if radius <= 0 or not mask.any():
        return mask
    if radius < _EDT_RADIUS:
        return ndimage.binary_dilation(mask, _disc(radius))
    return ndimage.distance_transform_edt(~mask) <= radius + 1e-9


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border (4-connectivity, as scipy's
    ``binary_fill_holes``), by labelling the background once instead of iterated dilations."""
    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, border[border > 0])


def _closing(mask: np.ndarray, radius: float) -> np.ndarray:
    """Closing by a Euclidean disc; the image is padded so that objects at its edge stay closed."""
    if radius <= 0:
        return mask
    pad = int(np.ceil(radius)) + 1
    return _erode(_dilate(np.pad(mask, pad), radius), radius)[pad:-pad, pad:-pad]


def brain_mask_slice(
    magnitude: np.ndarray, params: BrainMaskParams | None = None, pixel_mm: float | None = None
) -> np.ndarray:
    """Brain mask of one slice from its magnitude (see the module docstring for the method).

    Args:
        magnitude: float ``(H, W)``, non-negative (any scale; a complex slice is also accepted).
        params: method parameters (defaults: :class:`BrainMaskParams`).
        pixel_mm: in-plane pixel size; default: a 220 mm field of view over ``min(H, W)`` pixels.
    Returns:
        bool ``(H, W)``; all ``False`` when the slice holds no brain.
    """
    p = params or BrainMaskParams()
    mag = np.abs(np.asarray(magnitude)).astype(np.float64)
    if mag.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {mag.shape}")
    empty = np.zeros(mag.shape, dtype=bool)
    peak = float(mag.max()) if mag.size else 0.0
    if not np.isfinite(peak) or peak <= 0:
        return empty
    px = pixel_mm if pixel_mm is not None else DEFAULT_PIXEL_MM * REFERENCE_SIZE / min(mag.shape)
    smooth = ndimage.gaussian_filter(mag / peak, p.smoothing_mm / px)

    head = _closing(smooth > 0.25 * otsu_threshold(smooth), 3.5 / px)
    head = _largest_component(_fill_holes(head))
    if head is None:
        return empty
    rows, cols = np.nonzero(head)
    radius = np.sqrt(head.sum() / np.pi)
    yy, xx = np.ogrid[: mag.shape[0], : mag.shape[1]]
    core_disc = head & (
        (yy - rows.mean()) ** 2 + (xx - cols.mean()) ** 2 <= (p.core_radius_fraction * radius) ** 2
    )
    if not core_disc.any():
        return empty
    level = float(np.median(smooth[core_disc]))
    # A "head" filling the image, or no brighter than what surrounds it, is noise, not anatomy.
    outside = ~_dilate(head, 3.5 / px)
    if head.mean() > p.max_head_fraction or (outside.any() and level < 4 * float(np.median(smooth[outside]))):
        return empty
    inner_head = _erode(head, p.scalp_depth_mm / px)
    tissue = (smooth > p.tissue_fraction * level) & inner_head

    sep = p.separation_mm / px
    core = _erode(tissue, sep)
    labels, n = ndimage.label(core)
    if n == 0:
        return empty
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(core, labels, index=index)
    overlap = ndimage.sum_labels(core_disc, labels, index=index)
    if overlap.max() <= 0:
        return empty
    main = int(np.argmax(overlap))
    brain = np.isin(labels, index[sizes >= p.keep_fraction * sizes[main]])
    # Grow back to the outline, but never beyond the tissue (the dark skull/CSF stops it).
    brain = _dilate(brain, sep) & tissue
    brain = _fill_holes(_closing(brain, p.closing_mm / px))
    if p.shrink_mm / px >= 1:
        brain = _erode(brain, p.shrink_mm / px)
    if brain.sum() < p.min_area_fraction * brain.size:
        return empty
    return brain


def brain_mask(
    volume: np.ndarray, params: BrainMaskParams | None = None, pixel_mm: float | None = None
) -> np.ndarray:
    """Brain masks of every slice of a volume.

    Args:
        volume: ``(S, H, W)`` magnitude or complex images.
        pixel_mm: in-plane pixel size (see :func:`brain_mask_slice`).
    Returns:
        bool ``(S, H, W)``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected (slices, H, W), got shape {volume.shape}")
    return np.stack([brain_mask_slice(s, params, pixel_mm) for s in volume])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
