"""Sub-template tissue detail of the phantom, and the image statistics that check it.

The MNI152 template is an average of 152 brains on a 1 mm grid: its tissue boundaries are blurred
over ~1 mm (measured: a WM-share edge has the slope of a Gaussian step of sigma 1.1 mm, a GM/CSF
edge 0.9 mm) and tissue inside a class is uniform. An individual's scan has sharp boundaries
(partial volume of one voxel), folding detail that the average has lost and intrinsic tissue
heterogeneity (myelin, iron). `render_volume` adds three such terms at the rendered pixel
resolution (see docs/simulated-data.md, "Texture"):

- `refine_share`: boundary sharpening of a tissue share s in [0, 1] from the template's edge width
  to a target width, with a random sub-voxel displacement of the boundary (individual folding);
- `power_law_field`: zero-mean, unit-variance Gaussian random fields with a power-law (1/f
  amplitude) in-plane spectrum, the spatial pattern of tissue heterogeneity;
- `signal_log_derivatives`: how a sequence's signal changes with R1, R2 and PD, so a relaxation-
  parameter texture becomes a contrast-consistent signal texture;
- `perivascular_spaces`: fluid-filled spaces around penetrating vessels (dots and short lines of
  CSF-like signal, sub-millimetre to 2 mm) in the centrum semiovale and the basal ganglia.

The statistics functions (`radial_power_spectrum`, `spectrum_slope`, `local_cov`,
`neighbour_phase_difference_std`, `baseline_patch_psnr`) are what benchmarks/texture.py reports
and the tests assert.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi
from scipy import special

from magphase.simulate.contrast import Protocol, signal

_EPS = 1e-3


def power_law_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    pixel_mm: tuple[float, float],
    exponent: float = 2.0,
    longest_mm: float = 40.0,
    shortest_mm: float = 0.0,
) -> np.ndarray:
    """Independent 2-D Gaussian random fields per slice, power spectrum ~ |f|^-exponent.

    shape: (S, H, W); pixel_mm: (row, col) pixel size. Frequencies below 1/longest_mm are
    flattened (the field has no structure larger than ~longest_mm: that scale is the subject
    warp's and the bias field's); `shortest_mm` > 0 rolls the spectrum off with a Gaussian
    exp(-(f shortest_mm)^2 / 2) (a smooth surface displacement). Each slice is scaled to zero
    mean and unit standard deviation. Returns float32 (S, H, W).
    """
    s, h, w = shape
    fy = np.fft.fftfreq(h, d=pixel_mm[0])[:, None]
    fx = np.fft.rfftfreq(w, d=pixel_mm[1])[None, :]
    f = np.sqrt(fy**2 + fx**2)
    amplitude = np.maximum(f, 1.0 / longest_mm) ** (-exponent / 2.0)
    if shortest_mm > 0:
        amplitude = amplitude * np.exp(-0.5 * (f * shortest_mm) ** 2)
    amplitude[0, 0] = 0.0
    # White Gaussian noise drawn directly as a spectrum (complex normal per rfft bin), shaped, and
    # transformed once: a stationary Gaussian field with the requested spectrum.
    spectrum = rng.standard_normal((s, h, w // 2 + 1), dtype=np.float32) + 1j * rng.standard_normal(
        (s, h, w // 2 + 1), dtype=np.float32
    )
    spectrum *= amplitude.astype(np.float32)
    field = sfft.irfft2(spectrum, s=(h, w), workers=1).astype(np.float32)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= np.maximum(field.std(axis=(1, 2), keepdims=True), 1e-12)
    return field


def refine_share(share: np.ndarray, gain: float, offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Sharpen a partial-volume share: Phi(gain * Phi^-1(s) + offset), float32, same shape.

    A share s that is a Gaussian-blurred step of width sigma_template, s = Phi(d / sigma_template)
    (d the signed distance to the boundary), becomes a step of width sigma_template / gain whose
    boundary moved by offset * sigma_target (offset in units of the target width). s = 0 and
    s = 1 stay; 0.5 maps to Phi(offset).
    """
    s = np.clip(np.asarray(share, np.float32), _EPS, 1.0 - _EPS)
    out = special.ndtr(gain * special.ndtri(s) + offset).astype(np.float32)
    # Keep exact zeros and ones (the clip would otherwise leak 1e-3 of a tissue everywhere).
    out = np.where(share <= 0.0, 0.0, np.where(share >= 1.0, 1.0, out))
    return out.astype(np.float32)


def signal_log_derivatives(protocol: Protocol, pd: float, t1_ms: float, t2_ms: float) -> np.ndarray:
    """dS/d ln R1, dS/d ln R2, dS/d ln PD of the protocol's signal at (pd, t1, t2), float64 (3,).

    Central differences in the log of the rates; S is signed (inversion recovery can be negative).
    """
    h = 1e-3
    out = np.empty(3)
    for i in range(2):
        up = [t1_ms, t2_ms]
        dn = [t1_ms, t2_ms]
        up[i] = up[i] / math.exp(h)  # rate up by e^h -> time down
        dn[i] = dn[i] * math.exp(h)
        out[i] = (float(signal(protocol, pd, *up)) - float(signal(protocol, pd, *dn))) / (2 * h)
    out[2] = float(signal(protocol, pd, t1_ms, t2_ms))
    return out


def perivascular_spaces(
    rng: np.random.Generator,
    regions: list[tuple[np.ndarray, float]],
    pixel_mm: tuple[float, float],
    diameter_mm: tuple[float, float] = (1.0, 0.35),
    max_length_mm: float = 6.0,
) -> np.ndarray:
    """Partial-volume fraction (S, H, W) float32 of fluid-filled perivascular spaces.

    regions: (candidate mask (S, H, W) bool, density per mm^2 of that mask per slice). Each slice
    gets Poisson(density x area) spaces at random candidate pixels. A space is a tube of
    log-normal diameter (median, log-std `diameter_mm`) seen in a thick axial slice as a dot
    (running through the slice) or a short line (oblique, in-plane length up to `max_length_mm`),
    drawn as an anisotropic Gaussian whose FWHM across is the diameter, convolved with the
    pixel's box (variance + pixel^2 / 12), so a space thinner than a pixel is a faint dot, as
    partial volume makes it.
    """
    shape = regions[0][0].shape
    out = np.zeros(shape, np.float32)
    py, px = pixel_mm
    for mask, density in regions:
        for s in range(shape[0]):
            candidates = np.flatnonzero(mask[s])
            if candidates.size == 0:
                continue
            n = rng.poisson(density * candidates.size * py * px)
            if n == 0:
                continue
            centres = rng.choice(candidates, size=n)
            diameters = diameter_mm[0] * np.exp(diameter_mm[1] * rng.standard_normal(n))
            lengths = rng.uniform(0.0, max_length_mm, n) * (rng.random(n) < 0.4)
            angles = rng.uniform(0.0, np.pi, n)
            for centre, d, length, angle in zip(centres, diameters, lengths, angles, strict=True):
                r0, c0 = divmod(int(centre), shape[2])
                sigma_across = d / 2.3548
                sigma_along = math.sqrt(sigma_across**2 + length**2 / 12.0)
                reach = int(math.ceil(3.0 * sigma_along / min(py, px))) + 1
                rs = slice(max(0, r0 - reach), min(shape[1], r0 + reach + 1))
                cs = slice(max(0, c0 - reach), min(shape[2], c0 + reach + 1))
                yy = (np.arange(rs.start, rs.stop) - r0)[:, None] * py
                xx = (np.arange(cs.start, cs.stop) - c0)[None, :] * px
                u = yy * math.cos(angle) + xx * math.sin(angle)
                v = -yy * math.sin(angle) + xx * math.cos(angle)
                # Pixel box convolution, per axis: variance grows, peak falls, area is kept.
                var_u = sigma_along**2 + (py**2 + px**2) / 24.0
                var_v = sigma_across**2 + (py**2 + px**2) / 24.0
                peak = math.sqrt(sigma_along**2 / var_u) * math.sqrt(sigma_across**2 / var_v)
                blob = peak * np.exp(-0.5 * (u**2 / var_u + v**2 / var_v))
                view = out[s, rs, cs]
                np.maximum(view, blob.astype(np.float32), out=view)
    return np.minimum(out, 1.0)


# ---------------------------------------------------------------------------------------------
# Image statistics (what benchmarks/texture.py reports and the tests assert).


def radial_power_spectrum(image: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square real or complex patch (Hann windowed, mean removed).

    Returns (frequency cycles/mm, power) for the rings 1 .. N/2 - 1.
    """
    img = np.asarray(image)
    n = img.shape[0]
    if img.ndim != 2 or img.shape[1] != n:
        raise ValueError(f"expected a square 2-D patch, got {img.shape}")
    window = np.outer(np.hanning(n), np.hanning(n))
    x = (img - img.mean()) * window
    power = np.abs(np.fft.fftshift(np.fft.fft2(x))) ** 2
    yy, xx = np.indices((n, n)) - n // 2
    ring = np.round(np.sqrt(yy**2 + xx**2)).astype(int)
    sums = np.bincount(ring.ravel(), power.ravel())
    counts = np.bincount(ring.ravel())
    k = np.arange(1, n // 2)
    return k / (n * pixel_mm), sums[k] / np.maximum(counts[k], 1)


def spectrum_slope(freq: np.ndarray, power: np.ndarray, band: tuple[float, float] = (0.1, 0.5)) -> float:
    """Least-squares slope of log(power) against log(frequency) inside `band` (cycles/mm)."""
    sel = (freq >= band[0]) & (freq <= band[1]) & (power > 0)
    if sel.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(freq[sel]), np.log(power[sel]), 1)[0])


def brain_squares(mask: np.ndarray, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (row, col) of size x size squares lying entirely inside a 2-D `mask`."""
    inside = ndi.uniform_filter(mask.astype(np.float32), size=size, mode="constant")
    half = size // 2
    out = []
    for r in range(0, mask.shape[0] - size + 1, stride):
        for c in range(0, mask.shape[1] - size + 1, stride):
            if inside[r + half, c + half] > 0.999:
                out.append((r, c))
    return out


def local_cov(magnitude: np.ndarray, tissue: np.ndarray, size: int = 5) -> float:
    """Median local coefficient of variation (std / mean in size x size windows) of a 2-D
    magnitude at pixels whose whole window lies in `tissue` (bool). NaN if there are none."""
    m = np.asarray(magnitude, np.float64)
    mean = ndi.uniform_filter(m, size=size, mode="nearest")
    mean2 = ndi.uniform_filter(m * m, size=size, mode="nearest")
    full = ndi.uniform_filter(tissue.astype(np.float32), size=size, mode="constant") > 0.999
    sel = full & (mean > 0)
    if not sel.any():
        return math.nan
    std = np.sqrt(np.maximum(mean2 - mean**2, 0.0))
    return float(np.median(std[sel] / mean[sel]))


def neighbour_phase_difference_std(image: np.ndarray, mask: np.ndarray) -> float:
    """Std (rad) of the wrapped phase difference between row and column neighbours, both in `mask`."""
    z = np.asarray(image)
    diffs = []
    for axis in (0, 1):
        a = np.take(z, np.arange(1, z.shape[axis]), axis=axis)
        b = np.take(z, np.arange(z.shape[axis] - 1), axis=axis)
        ma = np.take(mask, np.arange(1, z.shape[axis]), axis=axis)
        mb = np.take(mask, np.arange(z.shape[axis] - 1), axis=axis)
        sel = ma & mb
        diffs.append(np.angle(a[sel] * np.conj(b[sel])))
    d = np.concatenate(diffs)
    return float(np.sqrt(np.mean(d**2))) if d.size else math.nan


def pool_bilinear_reference(image: np.ndarray) -> np.ndarray:
    """2 x 2 mean pooling then bilinear up-sampling (align_corners=False) of a 2-D (complex) patch.

    The same operation as `magphase.evaluation.reconstruction.baseline_reconstruction`, in NumPy.
    """
    z = np.asarray(image)
    h, w = z.shape
    pooled = z[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    def up(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        src = (np.arange(2 * n) + 0.5) / 2.0 - 0.5
        lo = np.clip(np.floor(src).astype(int), 0, n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        t = np.clip(src - np.floor(src), 0.0, 1.0)
        t = np.where(src < 0, 0.0, t)
        shape = [1, 1]
        shape[axis] = -1
        t = t.reshape(shape)
        return np.take(a, lo, axis=axis) * (1 - t) + np.take(a, hi, axis=axis) * t

    return up(up(pooled, 0), 1)


def psnr_db(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR (dB) of magnitudes: 10 log10(range^2 / MSE)."""
    mse = float(np.mean((np.abs(estimate) - np.abs(reference)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
