"""Magnitude-based brain mask, one slice at a time (paper 2.1.3: patches must lie >= 80 % in it).

Method (per slice; lengths in pixels of a 320-pixel image, scaled with the slice size):

1. Magnitude divided by its maximum, Gaussian-smoothed (``smoothing_sigma``) so thermal noise
   and fine texture do not fragment the mask.
2. Foreground = smoothed magnitude above ``threshold_scale`` x Otsu's threshold. Otsu separates
   the two modes of a head slice, air/bone (no signal) and soft tissue.
3. The foreground is eroded by ``separation_radius``: in every sequence cortical bone is dark, so
   after this erosion the scalp/fat ring no longer touches the brain anywhere.
4. The largest connected component is kept (the brain: a ring of scalp has far fewer pixels than
   the disc of brain it surrounds), then dilated back by the same radius inside the foreground
   (morphological reconstruction of the brain's outline).
5. A closing (``closing_radius``) bridges sulci and the dark CSF rim of T1/FLAIR images, holes
   (ventricles, dark lesion cores) are filled, and a final erosion (``shrink_radius``) keeps the
   mask conservatively inside the brain, so that a patch passing the 80 % rule is brain tissue.
6. Slices whose mask is smaller than ``min_area_fraction`` of the image are treated as holding no
   brain (empty mask).

This is a classical skull strip, deliberately simple and explainable: no atlas, no learned model,
no dependency beyond scipy. Its agreement with the simulator's ground-truth brain masks is
measured by :func:`dice` (docs/prepare.md quotes the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Image side the radii below are expressed for (fastMRI brain recon matrix).
REFERENCE_SIZE = 320


@dataclass(frozen=True)
class BrainMaskParams:
    """Parameters of :func:`brain_mask_slice` (pixels at a 320-pixel slice; scaled with size)."""

    smoothing_sigma: float = 2.0
    threshold_scale: float = 1.0
    separation_radius: float = 4.0
    closing_radius: float = 6.0
    shrink_radius: float = 2.0
    min_area_fraction: float = 0.02


def _disk(radius: float) -> np.ndarray:
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= radius * radius + 1e-9


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


def brain_mask_slice(magnitude: np.ndarray, params: BrainMaskParams | None = None) -> np.ndarray:
    """Brain mask of one slice from its magnitude (see the module docstring for the method).

    Args:
        magnitude: float ``(H, W)``, non-negative (any scale; a complex slice is also accepted).
        params: method parameters (defaults: :class:`BrainMaskParams`).
    Returns:
        bool ``(H, W)``; all ``False`` when the slice holds no brain.
    """
    p = params or BrainMaskParams()
    mag = np.abs(np.asarray(magnitude)).astype(np.float64)
    if mag.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {mag.shape}")
    peak = float(mag.max()) if mag.size else 0.0
    empty = np.zeros(mag.shape, dtype=bool)
    if not np.isfinite(peak) or peak <= 0:
        return empty
    scale = min(mag.shape) / REFERENCE_SIZE
    smooth = ndimage.gaussian_filter(mag / peak, p.smoothing_sigma * scale)
    foreground = smooth > p.threshold_scale * otsu_threshold(smooth)

    sep = _disk(p.separation_radius * scale)
    core = ndimage.binary_erosion(foreground, sep)
    labels, n = ndimage.label(core)
    if n == 0:
        return empty
    sizes = ndimage.sum_labels(core, labels, index=np.arange(1, n + 1))
    brain = labels == (int(np.argmax(sizes)) + 1)
    # Grow back to the outline, but never beyond the foreground (the dark skull stops it).
    brain = ndimage.binary_dilation(brain, sep) & foreground

    close = _disk(p.closing_radius * scale)
    pad = close.shape[0]
    padded = np.pad(brain, pad)
    padded = ndimage.binary_closing(padded, close)
    brain = ndimage.binary_fill_holes(padded[pad:-pad, pad:-pad])
    if p.shrink_radius > 0:
        brain = ndimage.binary_erosion(brain, _disk(p.shrink_radius * scale))
    if brain.sum() < p.min_area_fraction * brain.size:
        return empty
    return brain


def brain_mask(volume: np.ndarray, params: BrainMaskParams | None = None) -> np.ndarray:
    """Brain masks of every slice of a volume.

    Args:
        volume: ``(S, H, W)`` magnitude or complex images.
    Returns:
        bool ``(S, H, W)``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected (slices, H, W), got shape {volume.shape}")
    return np.stack([brain_mask_slice(s, params) for s in volume])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |a & b| / (|a| + |b|)`` of two masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
