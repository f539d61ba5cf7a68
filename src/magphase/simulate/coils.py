"""Receive coil arrays: Biot-Savart loop sensitivities and correlated noise.

Coordinates are the phantom's scanner millimetres (:mod:`magphase.simulate.phantom`), right-handed
RAS: ``x`` towards the patient's right (stored columns run the other way), ``y`` anterior (stored rows,
the readout direction), ``z`` superior (along B0, the slice direction). Positions of image pixels come
from the caller (:func:`magphase.simulate.acquisition.image_axes_mm`); this module only needs them as
axes.

Sensitivity model: each element is a circular loop on an elliptic cylinder around the head (plus a
top cap for the 20-channel array). Its quasi-static field B(r) follows from Biot-Savart (the closed
form of a circular loop with complete elliptic integrals); with B0 along
``+z`` the receive sensitivity is the negatively rotating transverse component ``B1- ~ Bx - i By``
(reciprocity, Hoult 2000). That makes the maps complex with a phase that winds around each loop, as
measured maps do. A propagation factor ``exp(-i k d)`` (``k`` from the RF wavelength in tissue at the
Larmor frequency) adds the extra phase curvature seen at 3 T; a per-element constant phase and gain
model the cables and preamplifiers.

Maps are smooth, so they are computed on a coarse grid (``map_step_mm``) and expanded to any pixel grid
with an interpolating cubic B-spline (:func:`expand_coil_maps`); the coarse maps plus their axes are what the
ground-truth sidecar stores, and expanding them reproduces exactly the maps used for the k-space.

Noise model: complex Gaussian, white in k-space, correlated across coils with covariance
``Psi = diag(sigma) D ((1 - c) I + c K) D^H diag(sigma)``, ``K_ij = exp(-d_ij / d_adjacent)`` from the
element centre distances (a positive-definite kernel, so ``Psi`` is always a valid covariance),
``D`` random unit phases; adjacent elements couple with |rho| ~ 0.1-0.3, distant ones less.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.special import ellipe, ellipk
from threadpoolctl import threadpool_limits

#: Coil counts of fastMRI brain files.
FASTMRI_COIL_COUNTS: tuple[int, ...] = (4, 8, 12, 16, 20)
#: Vacuum speed of light (m/s) and proton gyromagnetic ratio (Hz/T).
_C0 = 299_792_458.0
_GAMMA_HZ_PER_T = 42.577e6
#: Effective relative permittivity along the path coil -> voxel (part air, part tissue); sets the RF
#: wavelength that gives the receive phase its extra curvature at high field (~52 cm at 3 T).
_EPS_EFFECTIVE = 20.0


@dataclass(frozen=True)
class CoilArrayDesign:
    """One site's receive-array former (dimensions vary slightly between sites).

    Attributes:
        semi_axes_mm: elliptic-cylinder semi-axes (x = left-right, y = anterior-posterior) on which
            the loop centres sit.
        z_center_mm: array centre along z relative to the nominal brain centre (z = 0).
        ring_spacing_mm: distance between adjacent rings along z.
        loop_radius_scale: loop radius as a fraction of the in-ring centre spacing (overlap decoupling
            puts it near 0.65).
        coupling: ``c`` of the noise-correlation model (adjacent |rho| ~ c / e).
        noise_level_spread: log-normal spread of the per-element noise standard deviation.
        gain_spread: log-normal spread of the per-element receive gain.
    """

    semi_axes_mm: tuple[float, float] = (115.0, 135.0)
    z_center_mm: float = 0.0
    ring_spacing_mm: float = 60.0
    loop_radius_scale: float = 0.65
    coupling: float = 0.55
    noise_level_spread: float = 0.15
    gain_spread: float = 0.08

    @classmethod
    def for_site(cls, rng: np.random.Generator) -> CoilArrayDesign:
        """A randomly perturbed former (a few per cent in size, +-10 mm in z, coupling 0.3-0.8)."""
        return cls(
            semi_axes_mm=(115.0 * rng.uniform(0.95, 1.05), 135.0 * rng.uniform(0.95, 1.05)),
            z_center_mm=float(rng.uniform(-10.0, 10.0)),
            ring_spacing_mm=float(rng.uniform(52.0, 68.0)),
            loop_radius_scale=float(rng.uniform(0.6, 0.7)),
            coupling=float(rng.uniform(0.3, 0.8)),
            noise_level_spread=float(rng.uniform(0.1, 0.2)),
            gain_spread=float(rng.uniform(0.05, 0.1)),
        )


@dataclass(frozen=True)
class CoilArray:
    """A concrete receive array: loop geometry plus per-element receive-chain constants.

    Attributes:
        centers_mm: ``(C, 3)`` loop centres (x, y, z) in scanner mm.
        normals: ``(C, 3)`` unit loop normals, pointing into the head.
        radii_mm: ``(C,)`` loop radii.
        gains: ``(C,)`` real receive gains.
        phase_offsets_rad: ``(C,)`` constant receive phases (cables, preamplifiers).
    """

    centers_mm: np.ndarray
    normals: np.ndarray
    radii_mm: np.ndarray
    gains: np.ndarray
    phase_offsets_rad: np.ndarray

    @property
    def n_coils(self) -> int:
        return int(self.centers_mm.shape[0])


def _ring_layout(n_coils: int) -> list[int]:
    """Elements per ring (the last ring of the 20-channel array is a top cap)."""
    if n_coils <= 10:
        return [n_coils]
    if n_coils <= 16:
        return [n_coils // 2, n_coils - n_coils // 2]
    return [8, 8, n_coils - 16]


def build_coil_array(
    n_coils: int,
    design: CoilArrayDesign,
    rng: np.random.Generator,
    center_xy_mm: tuple[float, float] = (0.0, 0.0),
) -> CoilArray:
    """Place ``n_coils`` loops on the design's former, centred on the head at ``center_xy_mm``.

    Rings sit at ``z_center_mm + ring offsets`` (one ring for <= 10 elements, two for 11-16, two plus a
    smaller, tilted top cap for more). Positions get ~2 mm of random jitter (the array is a real
    object, not an ideal drawing); gains and phases are drawn per element.

    Args:
        n_coils: number of receive elements (>= 1).
        design: the site's former.
        rng: random generator (seeded by the caller).
        center_xy_mm: head centre in the axial plane; the former is centred on it.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    rings = _ring_layout(n_coils)
    a, b = design.semi_axes_mm
    perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
    n_cyl = len(rings) if len(rings) < 3 else 2
    z_rings = (np.arange(n_cyl) - (n_cyl - 1) / 2) * design.ring_spacing_mm + design.z_center_mm
    centers, normals, radii = [], [], []
    for ring, n_ring in enumerate(rings):
        cap = ring >= n_cyl
        scale = 0.6 if cap else 1.0
        # Alternate rings are rotated half a step so that elements interleave (as built arrays do).
        phi0 = rng.uniform(-0.1, 0.1) + (math.pi / n_ring if ring % 2 else 0.0) + math.pi / 2
        phis = phi0 + 2 * math.pi * np.arange(n_ring) / n_ring
        x = center_xy_mm[0] + scale * a * np.cos(phis)
        y = center_xy_mm[1] + scale * b * np.sin(phis)
        if cap:
            z = np.full(n_ring, z_rings.max() + 0.9 * design.ring_spacing_mm)
        else:
            z = np.full(n_ring, z_rings[ring])
        # Inward normal of the ellipse x = a cos, y = b sin is -(cos/a, sin/b) normalised; the cap
        # elements tilt 50 degrees downwards, towards the vertex of the head.
        nx, ny = -np.cos(phis) / a, -np.sin(phis) / b
        norm = np.hypot(nx, ny)
        nx, ny = nx / norm, ny / norm
        tilt = math.radians(50.0) if cap else 0.0
        n_vec = np.stack([nx * math.cos(tilt), ny * math.cos(tilt), np.full(n_ring, -math.sin(tilt))], 1)
        spacing = scale * perimeter / n_ring
        radius = min(design.loop_radius_scale * spacing, 80.0)
        centers.append(np.stack([x, y, z], 1))
        normals.append(n_vec)
        radii.append(np.full(n_ring, radius))
    centers_mm = np.concatenate(centers) + rng.normal(0.0, 2.0, (n_coils, 3))
    normals_arr = np.concatenate(normals)
    return CoilArray(
        centers_mm=centers_mm,
        normals=normals_arr / np.linalg.norm(normals_arr, axis=1, keepdims=True),
        radii_mm=np.concatenate(radii) * rng.uniform(0.97, 1.03, n_coils),
        gains=np.exp(rng.normal(0.0, design.gain_spread, n_coils)),
        phase_offsets_rad=rng.uniform(-math.pi, math.pi, n_coils),
    )


def loop_field(
    points_mm: np.ndarray,
    center_mm: np.ndarray,
    normal: np.ndarray,
    radius_mm: float,
    wire_radius_mm: float = 3.0,
) -> np.ndarray:
    """Quasi-static magnetic field of a unit-current circular loop (exact, complete elliptic integrals).

    In loop coordinates (axial distance ``z``, radial distance ``rho``, radius ``a``,
    ``m = 4 a rho / ((a + rho)^2 + z^2)``), with ``mu0 I / (4 pi) = 1`` and lengths in mm:

    ``B_z = 2 / sqrt((a + rho)^2 + z^2) [K(m) + (a^2 - rho^2 - z^2) / ((a - rho)^2 + z^2) E(m)]``,
    ``B_rho = 2 z / (rho sqrt((a + rho)^2 + z^2)) [-K(m) + (a^2 + rho^2 + z^2) / ((a - rho)^2 + z^2) E(m)]``

    (Smythe, *Static and Dynamic Electricity*, 7.10; on the axis ``B_z = 2 pi a^2 / (a^2 + z^2)^1.5``).
    The wire radius is added to ``(a - rho)^2 + z^2`` so the field stays finite on the wire itself
    (outside the head, where the image is zero anyway). The current circulates counter-clockwise
    about ``normal``, so the field at the centre points along ``normal``.

    Args:
        points_mm: ``(P, 3)`` evaluation points.
        center_mm: ``(3,)`` loop centre.
        normal: ``(3,)`` unit normal.
        radius_mm: loop radius ``a``.
        wire_radius_mm: regularisation length.

    Returns:
        ``(P, 3)`` float64 field.
    """
    normal = np.asarray(normal, dtype=np.float64)
    offset = np.asarray(points_mm, dtype=np.float64) - np.asarray(center_mm, dtype=np.float64)
    z = offset[:, 0] * normal[0] + offset[:, 1] * normal[1] + offset[:, 2] * normal[2]
    radial = offset - z[:, None] * normal
    rho = np.linalg.norm(radial, axis=1)
    a = float(radius_mm)
    q = (a + rho) ** 2 + z**2
    m = np.minimum(4 * a * rho / q, 1 - 1e-12)
    k_int, e_int = ellipk(m), ellipe(m)
    near = (a - rho) ** 2 + z**2 + wire_radius_mm**2
    sqrt_q = np.sqrt(q)
    b_z = 2 / sqrt_q * (k_int + (a**2 - rho**2 - z**2) / near * e_int)
    with np.errstate(divide="ignore", invalid="ignore"):
        b_rho = np.where(
            rho > 1e-9, 2 * z / (rho * sqrt_q) * (-k_int + (a**2 + rho**2 + z**2) / near * e_int), 0.0
        )
        rho_hat = np.where(rho[:, None] > 1e-9, radial / rho[:, None], 0.0)
    return b_rho[:, None] * rho_hat + b_z[:, None] * normal


def rf_wavenumber_per_mm(field_strength_t: float) -> float:
    """Effective RF wavenumber ``2 pi / lambda`` (rad/mm) at the proton Larmor frequency."""
    frequency_hz = _GAMMA_HZ_PER_T * field_strength_t
    wavelength_mm = _C0 / frequency_hz / math.sqrt(_EPS_EFFECTIVE) * 1e3
    return 2 * math.pi / wavelength_mm


def coarse_axis_mm(positions_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """Increasing coarse sample positions (mm, multiples of ``step_mm``) covering ``positions_mm`` with
    two steps of margin each side (the 4-tap cubic B-spline then never leaves the coarse grid)."""
    lo = math.floor(float(np.min(positions_mm)) / step_mm) - 2
    hi = math.ceil(float(np.max(positions_mm)) / step_mm) + 2
    return np.arange(lo, hi + 1) * step_mm


@dataclass
class CoilMaps:
    """Complex coil sensitivities sampled on a coarse grid.

    Attributes:
        coarse: ``(S, C, Ry, Rx)`` complex64 sensitivities at ``rows_mm x cols_mm`` of each slice.
        rows_mm: ``(Ry,)`` increasing y positions (mm) of the coarse rows.
        cols_mm: ``(Rx,)`` increasing x positions (mm) of the coarse columns.
        slice_z_mm: ``(S,)`` slice positions along z.
    """

    coarse: np.ndarray
    rows_mm: np.ndarray
    cols_mm: np.ndarray
    slice_z_mm: np.ndarray

    def on_axes(self, rows_mm: np.ndarray, cols_mm: np.ndarray, slices: Any = None) -> np.ndarray:
        """Expand to the pixel grid with row positions ``rows_mm`` (y) and column positions ``cols_mm`` (x).

        Returns ``(S', C, len(rows_mm), len(cols_mm))`` complex64 for ``slices`` (index/slice; default all).
        """
        coarse = self.coarse if slices is None else self.coarse[slices]
        return expand_coil_maps(coarse, self.rows_mm, self.cols_mm, rows_mm, cols_mm)


@functools.lru_cache(maxsize=32)
def _bspline_taps(coarse: tuple[float, ...], fine: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(4, N)`` and weights ``(4, N)`` (float32) of cubic B-spline evaluation at ``fine``."""
    coarse_arr = np.asarray(coarse)
    step = coarse_arr[1] - coarse_arr[0]
    u = (np.asarray(fine) - coarse_arr[0]) / step
    base = np.floor(u).astype(np.int64)
    t = u - base
    weights = np.stack(
        [(1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6]
    ).astype(np.float32)
    index = base[None, :] + np.arange(-1, 3)[:, None]
    if index.min() < 0 or index.max() >= coarse_arr.size:
        raise ValueError("fine positions must lie two coarse steps inside the coarse axis")
    return index, weights


def _evaluate_rows(coefficients: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of the 4 B-spline taps along axis -2 (fixed order: bit-identical for any thread count)."""
    out = coefficients[..., index[0], :] * weights[0][:, None]
    for tap in range(1, 4):
        out += coefficients[..., index[tap], :] * weights[tap][:, None]
    return out


def expand_coil_maps(
    coarse: np.ndarray,
    rows_mm: np.ndarray,
    cols_mm: np.ndarray,
    fine_rows_mm: np.ndarray,
    fine_cols_mm: np.ndarray,
) -> np.ndarray:
    """Cubic-spline interpolation of coarse map samples ``(..., Ry, Rx)`` to ``(..., Ny, Nx)`` complex64.

    Interpolating cubic B-spline (passes through the samples, C2-smooth): the samples are prefiltered to
    B-spline coefficients (:func:`scipy.ndimage.spline_filter1d`, on the small coarse grid), then each
    fine pixel sums its 4 x 4 neighbouring coefficients, one axis at a time. No BLAS call is involved,
    so the result is bit-identical whatever the thread settings (the simulator's determinism across
    worker processes relies on that). ``rows_mm``/``cols_mm`` must be equally spaced and reach two steps
    beyond the fine positions (:func:`coarse_axis_mm`).
    """
    coarse = np.asarray(coarse, dtype=np.complex64)
    row_index, row_weights = _bspline_taps(tuple(map(float, rows_mm)), tuple(map(float, fine_rows_mm)))
    col_index, col_weights = _bspline_taps(tuple(map(float, cols_mm)), tuple(map(float, fine_cols_mm)))
    parts = []
    for part in (coarse.real, coarse.imag):
        filtered = part.astype(np.float64)
        for axis in (-2, -1):
            filtered = ndimage.spline_filter1d(filtered, order=3, axis=axis, mode="mirror")
        parts.append(filtered)
    coefficients = (parts[0] + 1j * parts[1]).astype(np.complex64)
    # columns first (on the few coarse rows), then rows; both as gathers along axis -2
    along_cols = np.swapaxes(
        _evaluate_rows(np.swapaxes(coefficients, -1, -2), col_index, col_weights), -1, -2
    )
    return _evaluate_rows(np.ascontiguousarray(along_cols), row_index, row_weights)


def compute_coil_maps(
    array: CoilArray,
    slice_z_mm: np.ndarray,
    rows_mm: np.ndarray,
    cols_mm: np.ndarray,
    field_strength_t: float,
) -> CoilMaps:
    """Complex receive sensitivities of every element on the coarse grid of every slice.

    ``s_c(r) = g_c exp(i phi_c) (Bx - i By)(r) exp(-i k |r - centre_c|)``, unnormalised (the caller
    scales all elements by one common factor, see :func:`normalise_coil_maps`).

    Args:
        array: the receive array.
        slice_z_mm: ``(S,)`` slice centre positions.
        rows_mm, cols_mm: coarse y and x axes.
        field_strength_t: sets the RF wavenumber of the propagation phase.

    Returns:
        :class:`CoilMaps` with ``coarse`` of shape ``(S, C, len(rows_mm), len(cols_mm))``.
    """
    slice_z_mm = np.asarray(slice_z_mm, dtype=np.float64)
    zz, yy, xx = np.meshgrid(slice_z_mm, rows_mm, cols_mm, indexing="ij")
    points = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    k = rf_wavenumber_per_mm(field_strength_t)
    maps = np.empty((array.n_coils, points.shape[0]), dtype=np.complex128)
    for c in range(array.n_coils):
        field = loop_field(points, array.centers_mm[c], array.normals[c], float(array.radii_mm[c]))
        dist = np.linalg.norm(points - array.centers_mm[c], axis=1)
        propagation = np.exp(-1j * k * dist)
        maps[c] = (field[:, 0] - 1j * field[:, 1]) * propagation
        maps[c] *= array.gains[c] * np.exp(1j * array.phase_offsets_rad[c])
    coarse = maps.reshape(array.n_coils, slice_z_mm.size, rows_mm.size, cols_mm.size).transpose(1, 0, 2, 3)
    return CoilMaps(
        coarse=np.ascontiguousarray(coarse, dtype=np.complex64),
        rows_mm=np.asarray(rows_mm, dtype=np.float64),
        cols_mm=np.asarray(cols_mm, dtype=np.float64),
        slice_z_mm=slice_z_mm,
    )


def normalise_coil_maps(maps: CoilMaps, rss_in_head: np.ndarray) -> CoilMaps:
    """Scale all elements by one factor so the median root-sum-of-squares inside the head is 1.

    One common factor keeps the relative gains (and so the receive-field shading of an RSS image)
    intact while making the signal scale independent of the array size and geometry.

    Args:
        maps: unnormalised maps.
        rss_in_head: RSS of the expanded maps at the head voxels (any shape, > 0).
    """
    median = float(np.median(rss_in_head))
    if not math.isfinite(median) or median <= 0:
        raise ValueError("coil-map RSS inside the head must be positive")
    return CoilMaps(maps.coarse / np.float32(median), maps.rows_mm, maps.cols_mm, maps.slice_z_mm)


def noise_covariance(array: CoilArray, design: CoilArrayDesign, rng: np.random.Generator) -> np.ndarray:
    """Hermitian positive-definite coil noise covariance with unit mean variance.

    ``Psi = diag(sigma) D ((1 - c) I + c K) D^H diag(sigma)``: ``K_ij = exp(-d_ij / d_adj)`` with ``d_ij``
    the element centre distance and ``d_adj`` the median nearest-neighbour distance (the exponential
    kernel is positive definite in 3-D, so ``Psi`` is a covariance for every geometry); ``D`` unit
    random phases; ``sigma`` log-normal with ``design.noise_level_spread``, scaled so
    ``mean(diag(Psi)) = 1``.

    Returns:
        ``(C, C)`` complex128.
    """
    centers = array.centers_mm
    n = centers.shape[0]
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    if n > 1:
        nearest = np.sort(dist, axis=1)[:, 1]
        kernel = np.exp(-dist / float(np.median(nearest)))
    else:
        kernel = np.ones((1, 1))
    corr = (1 - design.coupling) * np.eye(n) + design.coupling * kernel
    phases = np.exp(1j * rng.uniform(-math.pi, math.pi, n))
    corr = phases[:, None] * corr * phases.conj()[None, :]
    sigma = np.exp(rng.normal(0.0, design.noise_level_spread, n))
    cov = sigma[:, None] * corr * sigma[None, :]
    cov /= np.mean(np.real(np.diag(cov)))
    return 0.5 * (cov + cov.conj().T)


def correlated_noise(
    shape: tuple[int, ...], covariance: np.ndarray, rng: np.random.Generator, coil_axis: int = 0
) -> np.ndarray:
    """Circular complex Gaussian noise with ``E[n n^H] = covariance`` across ``coil_axis``.

    ``n = L z`` with ``L = cholesky(covariance)`` and ``z`` i.i.d. ``CN(0, 1)`` (real and imaginary
    parts each of variance 1/2). Generated in float32 (the k-space dtype) by torch's CPU sampler, seeded
    from ``rng``.

    Args:
        shape: output shape; ``shape[coil_axis]`` must equal ``covariance.shape[0]``.
        covariance: ``(C, C)`` Hermitian positive-definite.
        rng: random generator.
        coil_axis: the coil axis of ``shape``.

    Returns:
        complex64 array of ``shape``.
    """
    n_coils = covariance.shape[0]
    if shape[coil_axis] != n_coils:
        raise ValueError(
            f"shape {shape} has {shape[coil_axis]} coils on axis {coil_axis}, covariance {n_coils}"
        )
    chol = np.linalg.cholesky(covariance).astype(np.complex64)
    moved = (n_coils, *(s for i, s in enumerate(shape) if i != coil_axis % len(shape)))
    # torch's CPU normal sampler is ~3x faster than numpy's and deterministic for a given seed; the
    # seed comes from ``rng``, so the caller's generator still decides everything.
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    white = torch.randn((*moved, 2), generator=generator, dtype=torch.float32).numpy()
    white = white.view(np.complex64)[..., 0]
    white *= np.float32(math.sqrt(0.5))
    # One BLAS thread: a threaded complex GEMM splits the work differently with the thread count and
    # changes the last bits, and the simulator promises the same bytes in any worker configuration.
    with threadpool_limits(limits=1, user_api="blas"):
        mixed = (chol @ white.reshape(n_coils, -1)).reshape(moved)
    return np.moveaxis(mixed, 0, coil_axis)
