"""Magnetic field perturbation from a susceptibility distribution, and the phase it leaves.

Conventions (tests pin them):
- 3-D arrays are indexed (z, y, x); B0 points along +z (the scanner bore, inferior -> superior).
- `chi` is in ppm relative to the surrounding medium (for the head: relative to air, so zero
  padding is air). The relative field dB/B0 (ppm) is
      dB/B0 = IFFT[ D(k) FFT(chi) ],   D(k) = 1/3 - kz^2 / |k|^2,   D(0) = 0,
  the Lorentz-sphere-corrected dipole kernel (Salomir et al. 2003; Marques & Bowtell 2005).
  Inside a uniformly magnetised sphere it gives 0; outside
      dB/B0 = chi/3 * a^3/r^3 * (3 cos^2 theta - 1).
  D(0) = 0 drops the (unobservable) mean field; the scanner's frequency adjustment and shim remove
  the rest of the low-order field anyway (`remove_shim_terms`).
- Field offset in Hz: df = gamma_bar * B0 * dB/B0 (gamma_bar = 42.577 MHz/T).
- Phase of an off-resonant isochromat after time t: phi = -2 pi df t (precession in the negative
  sense for gamma > 0; `phase_from_field`). Real scanners store either sign; this one is fixed here.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from magphase.simulate.tissue import GAMMA_BAR_MHZ_PER_T


def dipole_kernel_rfft(shape: tuple[int, int, int], voxel_size_mm: tuple[float, float, float]) -> np.ndarray:
    """Dipole kernel D(k) = 1/3 - kz^2/|k|^2 on the `rfftn` grid of a real (z, y, x) array.

    Returns float32 (nz, ny, nx // 2 + 1); D at k = 0 is set to 0.
    """
    nz, ny, nx = shape
    kz = np.fft.fftfreq(nz, d=voxel_size_mm[0]).astype(np.float64)[:, None, None]
    ky = np.fft.fftfreq(ny, d=voxel_size_mm[1]).astype(np.float64)[None, :, None]
    kx = np.fft.rfftfreq(nx, d=voxel_size_mm[2]).astype(np.float64)[None, None, :]
    k2 = kz**2 + ky**2 + kx**2
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = 1.0 / 3.0 - kz**2 / k2
    kernel[0, 0, 0] = 0.0
    return kernel.astype(np.float32)


def field_from_susceptibility(
    chi_ppm: np.ndarray, voxel_size_mm: tuple[float, float, float], pad_factor: float = 1.5
) -> np.ndarray:
    """Relative field dB/B0 (ppm) of a susceptibility map chi (ppm), B0 along axis 0.

    chi_ppm: float (nz, ny, nx). The map is zero padded to about `pad_factor` times its size on
    each axis before the FFT so that the periodic images of the source do not wrap into the
    result (dipole fields decay as r^-3). Returns float32 (nz, ny, nx).
    """
    chi = np.asarray(chi_ppm, dtype=np.float32)
    padded_shape = tuple(sfft.next_fast_len(int(np.ceil(n * pad_factor)), real=True) for n in chi.shape)
    spectrum = sfft.rfftn(chi, s=padded_shape, workers=1)
    spectrum *= dipole_kernel_rfft(padded_shape, voxel_size_mm)
    field = sfft.irfftn(spectrum, s=padded_shape, workers=1)
    nz, ny, nx = chi.shape
    return np.ascontiguousarray(field[:nz, :ny, :nx], dtype=np.float32)


def sphere_field_ppm(
    points_mm: np.ndarray, center_mm: np.ndarray, radius_mm: float, delta_chi_ppm: float
) -> np.ndarray:
    """Analytic relative field (ppm) of a uniformly magnetised sphere, Lorentz corrected.

    points_mm: (..., 3) positions as (z, y, x) in mm; B0 along z. Outside the sphere
    chi/3 a^3/r^3 (3 cos^2 theta - 1); inside 0. Returns float32 with shape points_mm.shape[:-1].
    """
    d = np.asarray(points_mm, dtype=np.float32) - np.asarray(center_mm, dtype=np.float32)
    r2 = np.einsum("...i,...i->...", d, d)
    r2 = np.maximum(r2, 1e-12)
    cos2 = d[..., 0] ** 2 / r2
    outside = r2 > radius_mm**2
    field = delta_chi_ppm / 3.0 * radius_mm**3 / r2**1.5 * (3.0 * cos2 - 1.0)
    return np.where(outside, field, 0.0).astype(np.float32)


def polynomial_basis(coords_mm: np.ndarray, order: int) -> np.ndarray:
    """Monomials of (z, y, x) up to total degree `order` (columns), for points (N, 3) in mm.

    Coordinates are scaled by 100 mm so the least-squares system is well conditioned.
    """
    c = np.asarray(coords_mm, dtype=np.float64) / 100.0
    return np.stack(
        [c[:, 0] ** i * c[:, 1] ** j * c[:, 2] ** k for i, j, k in _monomial_exponents(order)], axis=1
    )


def _monomial_exponents(order: int) -> list[tuple[int, int, int]]:
    return [
        (i, j, total - i - j)
        for total in range(order + 1)
        for i in range(total + 1)
        for j in range(total - i + 1)
    ]


def evaluate_polynomial(coef: np.ndarray, z_mm, y_mm, x_mm, order: int) -> np.ndarray:
    """Evaluate sum coef * monomial (same column order as `polynomial_basis`) on broadcastable
    z, y, x arrays (e.g. an open mesh), float32."""
    z, y, x = (np.asarray(a, np.float32) / 100.0 for a in (z_mm, y_mm, x_mm))
    out = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), np.float32)
    for c, (i, j, k) in zip(coef, _monomial_exponents(order), strict=True):
        out += np.float32(c) * (z**i * y**j * x**k)
    return out


def remove_shim_terms(
    field: np.ndarray,
    mask: np.ndarray,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    order: int = 2,
    fit_stride: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the least-squares polynomial (degree <= `order`) fitted to `field` inside `mask`.

    This is what the scanner's frequency adjustment (order 0) and shim (orders 1-2) do over the
    shim volume. field, mask: (nz, ny, nx) on the grid with axis coordinates `axes_mm` (z, y, x).
    The fit uses every `fit_stride`-th voxel per axis. Returns (shimmed field float32, coefficients).
    """
    gz, gy, gx = (np.asarray(a, np.float32) for a in axes_mm)
    sub = (slice(None, None, fit_stride),) * 3
    zz, yy, xx = np.meshgrid(gz[sub[0]], gy[sub[1]], gx[sub[2]], indexing="ij")
    sel = mask[sub]
    coords = np.stack([zz[sel], yy[sel], xx[sel]], axis=1)
    coef, *_ = np.linalg.lstsq(
        polynomial_basis(coords, order), field[sub][sel].astype(np.float64), rcond=None
    )
    fitted = evaluate_polynomial(coef, gz[:, None, None], gy[None, :, None], gx[None, None, :], order)
    return (field - fitted).astype(np.float32), coef


def ppm_to_hz(field_ppm: np.ndarray, field_strength_t: float) -> np.ndarray:
    """Relative field (ppm) -> frequency offset (Hz) at B0 = `field_strength_t`."""
    return (np.asarray(field_ppm) * GAMMA_BAR_MHZ_PER_T * field_strength_t).astype(np.float32)


def phase_from_field(b0_hz: np.ndarray, time_ms: float) -> np.ndarray:
    """Unwrapped phase (rad) accumulated by an offset `b0_hz` over `time_ms`: -2 pi df t."""
    return (-2.0 * np.pi * np.asarray(b0_hz, dtype=np.float64) * (time_ms * 1e-3)).astype(np.float32)


def wrap_phase(phase: np.ndarray) -> np.ndarray:
    """Wrap phase (rad) into [-pi, pi)."""
    return ((np.asarray(phase) + np.pi) % (2.0 * np.pi) - np.pi).astype(np.float32)


def transceive_phase_from_conductivity(
    sigma_s_per_m: np.ndarray,
    voxel_size_mm: tuple[float, float, float],
    larmor_hz: float,
    pad_factor: float = 1.5,
) -> np.ndarray:
    """Transceive RF phase (rad) implied by a conductivity map: solves lap(phi) = 2 omega mu0 sigma.

    This is the Helmholtz relation behind phase-based electrical properties tomography
    (Voigt et al. 2011; Katscher et al. 2009): the transmit+receive phase of the RF field curves
    where tissue conducts. The Poisson equation is solved spectrally on the zero-padded grid
    (k = 0 term dropped, so the solution is defined up to a constant; its low-order part stands in
    for the head-scale B1 phase, the small-scale part follows CSF, vessels and lesions).
    sigma: float (nz, ny, nx) S/m; returns float32 (nz, ny, nx).
    """
    from magphase.simulate.tissue import MU0_H_PER_M

    sigma = np.asarray(sigma_s_per_m, dtype=np.float32)
    source = np.float32(2.0 * 2.0 * np.pi * larmor_hz * MU0_H_PER_M) * sigma  # 1/m^2
    padded_shape = tuple(sfft.next_fast_len(int(np.ceil(n * pad_factor)), real=True) for n in sigma.shape)
    spectrum = sfft.rfftn(source, s=padded_shape, workers=1)
    voxel_m = [v * 1e-3 for v in voxel_size_mm]
    kz = np.fft.fftfreq(padded_shape[0], d=voxel_m[0])[:, None, None]
    ky = np.fft.fftfreq(padded_shape[1], d=voxel_m[1])[None, :, None]
    kx = np.fft.rfftfreq(padded_shape[2], d=voxel_m[2])[None, None, :]
    k2 = (2.0 * np.pi) ** 2 * (kz**2 + ky**2 + kx**2)
    k2[0, 0, 0] = np.inf
    spectrum /= -k2.astype(np.float32)
    phi = sfft.irfftn(spectrum, s=padded_shape, workers=1)
    nz, ny, nx = sigma.shape
    return np.ascontiguousarray(phi[:nz, :ny, :nx], dtype=np.float32)
