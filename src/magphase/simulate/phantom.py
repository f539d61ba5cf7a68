"""Ground-truth complex brain volumes: anatomy x contrast x B0 field x background phase.

`render_volume(VolumeSpec(seed, sequence, ...))` returns a `GroundTruthVolume`: the noise-free,
coil-combined complex image of one axial multi-slice acquisition plus its masks, lesion masks
and field map. Coils, noise and k-space are added by `magphase.simulate` acquisition code.

Geometry (fixed, tests pin it):
- Arrays are (S, H, W) = (slice, row, col), "as stored" by fastMRI: row index increases towards
  *anterior*, column index increases towards the patient's *left*; `np.flipud(image[s])` is the
  radiological view (anterior at top, patient left on image right). Slices run inferior ->
  superior.
- Scanner coordinates (z, y, x) mm: z along B0 (superior), y anterior, x patient right (RAS).
  Pixel (r, c) of slice s sits at y = (r - (H-1)/2) * fov_rows / H, x = -(c - (W-1)/2) * fov_cols / W,
  z = z_centre + slab_offset + (s - (S-1)/2) * (thickness + gap), where z_centre is the scanner z
  of the subject's SLAB_CENTRE_MNI_MM (the slab follows the head, as planned on a localizer).

Phase model (see docs/simulated-data.md): phase = -2 pi * b0_hz * tau + background, where b0_hz
is the shimmed susceptibility field (dipole kernel on a 2 mm grid + analytic spheres for small
lesion sources) and tau is the protocol's phase-evolution time (spin echo: readout-to-echo
offset, ~0.5-1.5 ms; it would be TE for a gradient echo). Fat adds its chemical shift over tau.
The background is a smooth, low-order transmit/receive ("transceiver") phase plus a global offset.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.ndimage as ndi

from magphase.errors import ConfigError
from magphase.simulate import anatomy as anat
from magphase.simulate.contrast import (
    ALL_SIMULATED_SEQUENCES,
    Protocol,
    default_protocol,
    protocol_is_t1_weighted,
    signal,
    tissue_signal,
    with_phase_time,
)
from magphase.simulate.lesions import (
    CSF_INFLOW,
    LESION_LABELS,
    plan_lesions,
    render_lesion,
    render_lesion_on_axes,
    sphere_cross_section,
)
from magphase.simulate.susceptibility import (
    evaluate_polynomial,
    field_from_susceptibility,
    phase_from_field,
    ppm_to_hz,
    remove_shim_terms,
    sphere_field_ppm,
    transceive_phase_from_conductivity,
    wrap_phase,
)
from magphase.simulate.texture import (
    perivascular_spaces,
    power_law_field,
    refine_share,
    signal_log_derivatives,
)
from magphase.simulate.tissue import (
    ALL_TISSUES,
    CONDUCTIVITY_S_PER_M,
    FAT_CHEMICAL_SHIFT_PPM,
    GAMMA_BAR_MHZ_PER_T,
    IRON_R2_PER_PPM_S,
    check_field_strength,
    relaxation,
)
from magphase.utils.seeds import derived_rng

log = logging.getLogger(__name__)

SLAB_CENTRE_MNI_MM = (29.0, -18.0, 0.0)
"""Anatomical point (MNI z, y, x) on which the slab is centred at slab_offset 0, as a technologist
plans it from a localizer: a 16 x 6 mm slab then spans MNI z ~ -16 .. +74 (temporal lobes to the
vertex, no orbits); slab_offset ~ -30 to -45 mm brings orbits and sinuses in."""

THROUGH_PLANE_SAMPLES = 2
"""Positions across the slice thickness at which the anatomy is sampled and averaged."""

SOURCE_THROUGH_PLANE_SAMPLES = 5
"""Positions across the slice at which lesion susceptibility spheres (tissue and field) are
evaluated and the complex signal averaged."""

FIELD_GRID_MM = 2.0
FACIAL_AREA_MM2 = 150.0

TEMPLATE_EDGE_SIGMA_MM = {"wm": 1.1, "parenchyma": 0.9}
"""Edge width of the head model's WM share and parenchyma (WM + GM vs CSF) share, as the sigma of a
Gaussian step with the same slope at s = 0.5 (measured on the anatomy grid: median |grad s| at
0.4 < s < 0.6 is 0.36 and 0.45 per mm)."""

TARGET_EDGE_SIGMA_MM = 0.45
"""Edge width of one person's WM/GM boundary as sampled at a pixel: the ~0.3 mm
myelin gradient into the cortex combined with sub-pixel partial volume; never below 0.4 pixel
(`_refine_boundaries`), so coarse matrices are not point-sampled into aliasing."""

FOLDING_DISPLACEMENT_MM = 0.6
"""Std of the random normal displacement of the WM boundary (1/f amplitude spectrum from 20 mm
down to FOLDING_SHORTEST_MM): individual folding and cortical-thickness detail below the
template's resolution (cortical thickness varies by ~0.5 mm within a gyrus; Fischl & Dale 2000)."""

FOLDING_SHORTEST_MM = 2.0
"""Roll-off scale of the folding displacement: cortical surfaces are smooth below ~2 mm."""

MICROSTRUCTURE_LOG_STD = {
    # tissue: (std of ln R1, std of ln R2, std of ln PD) driven by one field (myelin / macromolecule
    # content raises R1 and R2 and lowers water content together).
    "wm": (0.04, 0.04, -0.015),
    "gm": (0.04, 0.04, -0.015),
    "deep_gm": (0.03, 0.03, -0.01),
}
"""Intrinsic relaxation heterogeneity inside a tissue class: a few per cent in R1 and R2, the
spread of regional in-vivo values (Gelman et al. 2001; Georgiades et al. 2001), spread over scales
0.7 - 40 mm by a 1/f amplitude spectrum (docs/simulated-data.md, "Texture")."""

IRON_RELATIVE_STD = 0.25
"""Relative std of the iron (susceptibility) of deep grey nuclei about each nucleus' mean; QSM shows
within-nucleus spreads of this order (e.g. pallidum 0.18 +- 0.05 ppm; Li et al. 2011, Deistung
et al. 2013)."""

PVS_DENSITY_PER_MM2 = {"wm": 1.5e-3, "deep_gm": 2.5e-3}
"""Visible perivascular spaces per mm^2 of deep white matter (centrum semiovale) and of the basal
ganglia per slice: ~5 per hemisphere in a centrum semiovale slice and ~3 per side in a basal
ganglia slice, rating 1 ("1 - 10") of the Potter et al. 2015 scale that most healthy adults
have; diameters log-normal about 1 mm (< 3 mm by definition; Wardlaw et al. 2013, STRIVE)."""

ECHO_SHIFT_FRACTION_STD = 0.001
"""Residual readout gradient-moment error from eddy currents after pre-emphasis, relative to the
readout's half k-space moment (order 0.1 %): it moves the echo by ~N/2 * 1e-3 samples and leaves
a linear phase along the readout, independent of B0."""

B0_EDDY_HZ_STD = 2.0
"""Residual zeroth-order (B0) eddy-current frequency offset per slice (Hz), accrued over tau."""


@dataclass
class VolumeSpec:
    """What to render. None acquisition parameters -> the sequence's default at that field."""

    seed: int
    sequence: str
    field_strength_t: float = 3.0
    matrix: tuple[int, int] = (320, 320)
    fov_mm: tuple[float, float] = (220.0, 220.0)
    n_slices: int = 16
    slice_thickness_mm: float = 5.0
    slice_gap_mm: float = 1.0
    slab_offset_mm: float = 0.0
    lesions: tuple[str, ...] = ()
    lesion_radii_mm: tuple[float, ...] = ()  # one per lesion, or empty: each label's built-in sizes
    lesion_slices: tuple[int, ...] = ()  # slice index per lesion its centre should lie on, or empty
    tr_ms: float | None = None
    te_ms: float | None = None
    ti_ms: float | None = None
    flip_deg: float | None = None


@dataclass
class Lesion:
    """One placed lesion: its fastMRI+ label, mask on the stored grid, susceptibility flag."""

    label: str
    mask: np.ndarray
    susceptibility: bool


@dataclass
class GroundTruthVolume:
    """Noise-free combined complex volume and its ground truth (shapes (S, H, W), see module doc).

    image: complex64; magnitude = the sequence's signal equation (fully relaxed water = 1, so the
        maximum is of order 1), phase = wrapped(-2 pi b0_hz tau + background).
    b0_hz: float32 field offset (after the scanner's shim) at the slice centres.
    facial: bool (S,), slice shows orbits / paranasal sinuses / face.
    voxel_size_mm: (slice thickness, row pixel size, column pixel size).
    phase_time_ms: tau of the phase model; slice_z_mm: (S,) scanner z of slice centres.
    tissue_labels: uint8 (S, H, W): 1 WM, 2 GM, 3 deep GM where that tissue's fraction >= 0.8,
        else 0 (for texture statistics).
    """

    image: np.ndarray
    brain_mask: np.ndarray
    head_mask: np.ndarray
    lesions: list[Lesion]
    b0_hz: np.ndarray
    facial: np.ndarray
    sequence: str
    field_strength_t: float
    tr_ms: float
    te_ms: float
    ti_ms: float | None
    flip_deg: float
    voxel_size_mm: tuple[float, float, float]
    phase_time_ms: float = 0.0
    slice_z_mm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    tissue_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.uint8))


def _validate(spec: VolumeSpec) -> None:
    if spec.sequence not in ALL_SIMULATED_SEQUENCES:
        raise ConfigError(f"sequence={spec.sequence!r}: expected one of {ALL_SIMULATED_SEQUENCES}")
    try:
        check_field_strength(spec.field_strength_t)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if len(spec.matrix) != 2 or min(spec.matrix) < 16:
        raise ConfigError(f"matrix={spec.matrix}: expected (rows, cols), each >= 16")
    if len(spec.fov_mm) != 2 or min(spec.fov_mm) <= 50:
        raise ConfigError(f"fov_mm={spec.fov_mm}: expected (rows, cols) in mm, each > 50")
    if spec.n_slices < 1 or spec.slice_thickness_mm <= 0 or spec.slice_gap_mm < 0:
        raise ConfigError("n_slices >= 1, slice_thickness_mm > 0 and slice_gap_mm >= 0 are required")
    unknown = [lab for lab in spec.lesions if lab not in LESION_LABELS]
    if unknown:
        raise ConfigError(f"lesions={unknown}: known labels are {LESION_LABELS}")
    if spec.lesion_radii_mm and (
        len(spec.lesion_radii_mm) != len(spec.lesions) or min(spec.lesion_radii_mm) <= 0
    ):
        raise ConfigError(
            f"lesion_radii_mm={spec.lesion_radii_mm}: expected one positive size per lesion "
            f"({len(spec.lesions)} lesions)"
        )
    if spec.lesion_slices and len(spec.lesion_slices) != len(spec.lesions):
        raise ConfigError(
            f"lesion_slices={spec.lesion_slices}: expected one slice per lesion ({len(spec.lesions)})"
        )


def slice_positions_mm(spec: VolumeSpec, slab_centre_mm: float = 0.0) -> np.ndarray:
    """Scanner z (mm) of the slice centres, inferior -> superior, float64 (S,).

    slab_centre_mm: scanner z of the planned slab centre (render_volume uses the subject's
    SLAB_CENTRE_MNI_MM); slab_offset_mm moves the slab from there.
    """
    spacing = spec.slice_thickness_mm + spec.slice_gap_mm
    return (
        slab_centre_mm + spec.slab_offset_mm + (np.arange(spec.n_slices) - (spec.n_slices - 1) / 2) * spacing
    )


def pixel_coordinates_mm(
    matrix: tuple[int, int], fov_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Scanner y of each row and x of each column (mm), stored orientation (module docstring)."""
    h, w = matrix
    y = (np.arange(h) - (h - 1) / 2) * (fov_mm[0] / h)
    x = -(np.arange(w) - (w - 1) / 2) * (fov_mm[1] / w)
    return y, x


def slice_points_mm(z_mm: np.ndarray, matrix: tuple[int, int], fov_mm: tuple[float, float]) -> np.ndarray:
    """Scanner points (S, H, W, 3) as (z, y, x) mm for slices at `z_mm`, float32."""
    y, x = pixel_coordinates_mm(matrix, fov_mm)
    pts = np.empty((len(z_mm), len(y), len(x), 3), np.float32)
    pts[..., 0] = np.asarray(z_mm, np.float32)[:, None, None]
    pts[..., 1] = y[None, :, None]
    pts[..., 2] = x[None, None, :]
    return pts


def _tissue_signals(protocol: Protocol) -> dict[str, float]:
    signals = {name: tissue_signal(protocol, name) for name in ALL_TISSUES}
    # Inflowing CSF that missed the inversion (FLAIR) or lost signal to flow dephasing (SE).
    csf = ALL_TISSUES["csf"]
    relax = relaxation("csf", protocol.field_strength_t)
    uninverted = float(signal(replace(protocol, kind="SE"), csf.pd, relax.t1_ms, relax.t2_ms))
    signals[CSF_INFLOW] = 0.55 * uninverted if protocol.kind == "IR" else 0.6 * signals["csf"]
    return signals


def _deep_gm_signal(protocol: Protocol, iron_ppm: np.ndarray) -> np.ndarray:
    """Signal of deep grey matter whose T2 is shortened by its iron (Gelman et al. 1999)."""
    t = ALL_TISSUES["deep_gm"]
    relax = relaxation("deep_gm", protocol.field_strength_t, t.gd_mm if protocol.gadolinium else None)
    r2 = 1000.0 / relax.t2_ms + IRON_R2_PER_PPM_S[protocol.field_strength_t] * np.asarray(
        iron_ppm, np.float64
    )
    return signal(protocol, t.pd, relax.t1_ms, 1000.0 / r2).astype(np.float32)


_WATER_MAPS = tuple(n for n in anat.TISSUE_MAPS if n not in ("fat", "air"))
_LESION_CONTEXT_MAPS = ("gm", "wm", "deep_gm", "csf", "dura", "choroid", "bone", "fat", "iron")


def _water_signal_map(
    anatomy: anat.HeadAnatomy, protocol: Protocol, signals: dict[str, float], z_index: slice
) -> np.ndarray:
    """Water signal sum_t f_t S_t on the anatomy grid between z indices `z_index` (float32).

    Combining on the grid and sampling once is ~10x cheaper than sampling every tissue map.
    """
    maps = anatomy.maps
    out = np.zeros((z_index.stop - z_index.start, *anat.GRID_SHAPE[1:]), np.float32)
    tmp = np.empty_like(out)
    for name in _WATER_MAPS:
        if name == "deep_gm":
            continue
        np.multiply(maps[name][z_index], np.float32(signals[name] / 255.0), out=tmp, dtype=np.float32)
        out += tmp
    deep = maps["deep_gm"][z_index]
    nz = np.nonzero(deep)
    iron = maps["iron"][z_index][nz] * anat.IRON_SCALE_PPM
    out[nz] += deep[nz] * (_deep_gm_signal(protocol, iron) / 255.0)
    return out


def _sample_grid(volume: np.ndarray, origin_mm: np.ndarray, points_mm: np.ndarray, spacing: float = 1.0):
    """Trilinear sample of a float32 (z, y, x) volume at points (..., 3) mm; 0 outside."""
    idx = ((points_mm.reshape(-1, 3) - origin_mm.astype(np.float32)) / spacing).T
    out = ndi.map_coordinates(volume, idx, order=1, mode="constant", cval=0.0, output=np.float32)
    return out.reshape(points_mm.shape[:-1])


def _background_phase(rng: np.random.Generator, z_mm, y_mm, x_mm, field_strength_t: float) -> np.ndarray:
    """Smooth RF phase not captured by the conductivity model, on the open mesh (z, y, x).

    Random offset + 1st/2nd-order terms standing for the transmit coil's geometry and standing-wave
    pattern; at 3 T (RF wavelength in tissue ~12 cm, comparable to the head) larger than at 1.5 T.
    """
    strong = field_strength_t > 2.0
    sigma1, sigma2 = (0.6, 0.4) if strong else (0.35, 0.2)
    coef = np.concatenate(
        [[rng.uniform(-math.pi, math.pi)], rng.normal(0, sigma1, 3), rng.normal(0, sigma2, 6)]
    )
    return evaluate_polynomial(coef, z_mm, y_mm, x_mm, 2)


def _transmit_bias(rng: np.random.Generator, z_mm, y_mm, x_mm, field_strength_t: float, centre: np.ndarray):
    """Smooth magnitude modulation from B1+ inhomogeneity (central brightening at 3 T)."""
    amp = rng.uniform(0.08, 0.18) if field_strength_t > 2.0 else rng.uniform(0.0, 0.05)
    dz, dy, dx = (
        np.asarray(a, np.float32) - np.float32(c) for a, c in zip((z_mm, y_mm, x_mm), centre, strict=True)
    )
    r2 = dy**2 + dx**2 + 0.5 * dz**2
    tilt = rng.normal(0, 0.03, 3).astype(np.float32)
    return (
        1.0
        - amp / 2
        + amp * np.exp(-r2 / (2 * 65.0**2))
        + (dz * tilt[0] + dy * tilt[1] + dx * tilt[2]) / 100.0
    ).astype(np.float32)


def _refine_boundaries(
    fractions: dict[str, np.ndarray], pixel_mm: float, wm_offset_mm: np.ndarray
) -> dict[str, np.ndarray]:
    """Sharpen the WM / GM / CSF partition of sampled fractions (S, H, W) towards one person's scan.

    With b = wm + gm + csf, the WM share A = wm / b is a thick structure's edge: it is refined
    point-wise (`texture.refine_share`, gain template sigma / target sigma) and its boundary moved
    by the folding displacement `wm_offset_mm`. The parenchyma share B = (wm + gm) / b also borders
    thin sulcal CSF, which a point-wise sharpening would erase: it gets one Van Cittert
    deconvolution step of the template blur, B + (B - G_sigma * B), which keeps the local amount
    of CSF and restores thin CSF lines. b is then redistributed; other tissues are unchanged.
    """
    wm, gm, csf = fractions["wm"], fractions["gm"], fractions["csf"]
    b = wm + gm + csf
    target = max(TARGET_EDGE_SIGMA_MM, 0.4 * pixel_mm)
    keep = b > 0.02  # where there is hardly any brain tissue, leave the fractions alone
    share_b = np.zeros_like(b)
    share_b[keep] = (wm[keep] + gm[keep]) / b[keep]
    sigma_px = TEMPLATE_EDGE_SIGMA_MM["parenchyma"] / pixel_mm
    blurred = ndi.gaussian_filter(share_b, (0.0, sigma_px, sigma_px), mode="nearest", truncate=3.0)
    share_b = np.clip(2.0 * share_b[keep] - blurred[keep], 0.0, 1.0)
    share_a = refine_share(
        wm[keep] / b[keep], max(1.0, TEMPLATE_EDGE_SIGMA_MM["wm"] / target), wm_offset_mm[keep] / target
    )
    share_a = np.minimum(share_a, share_b)
    out = {"wm": wm.copy(), "gm": gm.copy(), "csf": csf.copy()}
    out["wm"][keep] = share_a * b[keep]
    out["gm"][keep] = (share_b - share_a) * b[keep]
    out["csf"][keep] = (1.0 - share_b) * b[keep]
    return out


def _microstructure_amplitudes(protocol: Protocol) -> dict[str, float]:
    """Signal std per unit of the microstructure field, per tissue (signed, fully relaxed water = 1)."""
    out = {}
    for name, log_std in MICROSTRUCTURE_LOG_STD.items():
        t = ALL_TISSUES[name]
        relax = relaxation(name, protocol.field_strength_t, t.gd_mm if protocol.gadolinium else None)
        derivative = signal_log_derivatives(protocol, t.pd, relax.t1_ms, relax.t2_ms)
        out[name] = float(np.dot(derivative, log_std))
    return out


def _microstructure_texture(
    rng: np.random.Generator,
    protocol: Protocol,
    fractions: dict[str, np.ndarray],
    anatomy: anat.HeadAnatomy,
    anatomy_points: np.ndarray,
    pixel_mm: tuple[float, float],
) -> np.ndarray:
    """Signal change (S, H, W) float32 from relaxation heterogeneity in WM, GM and deep GM and from
    the iron heterogeneity of deep grey nuclei (constants MICROSTRUCTURE_LOG_STD, IRON_RELATIVE_STD).

    WM and GM have independent 1/f fields (deep GM shares the GM one); the iron field changes each
    nucleus' R2 through `_deep_gm_signal`, so its texture is strongest on T2-weighted images.
    """
    shape = fractions["wm"].shape
    amplitude = _microstructure_amplitudes(protocol)
    field_wm = power_law_field(rng, shape, pixel_mm)
    field_gm = power_law_field(rng, shape, pixel_mm)
    field_iron = power_law_field(rng, shape, pixel_mm)
    out = fractions["wm"] * np.float32(amplitude["wm"]) * field_wm
    out += fractions["gm"] * np.float32(amplitude["gm"]) * field_gm
    deep = fractions["deep_gm"]
    out += deep * np.float32(amplitude["deep_gm"]) * field_gm
    nz = np.nonzero(deep > 0.0)
    if nz[0].size:
        iron = anat.sample_maps(anatomy, anatomy_points[nz], ("iron",))["iron"]
        varied = iron * np.maximum(1.0 + IRON_RELATIVE_STD * field_iron[nz], 0.0)
        out[nz] += deep[nz] * (_deep_gm_signal(protocol, varied) - _deep_gm_signal(protocol, iron))
    return out.astype(np.float32)


def _eddy_current_phase(rng: np.random.Generator, shape: tuple[int, int, int], tau_ms: float) -> np.ndarray:
    """Phase (rad) left by residual eddy currents: an echo shift along the readout (rows, linear
    phase, the same in every slice) and a per-slice B0 offset accrued over tau. (S, H, W) float32."""
    s, h, _ = shape
    shift_samples = rng.normal(0.0, ECHO_SHIFT_FRACTION_STD) * h / 2.0
    rows = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / h
    ramp = np.float32(2.0 * math.pi * shift_samples) * rows
    offset_hz = rng.normal(0.0, B0_EDDY_HZ_STD, s).astype(np.float32)
    per_slice = phase_from_field(offset_hz, tau_ms)
    return (per_slice[:, None, None] + ramp[None, :, None]).astype(np.float32)


def _head_grid(
    geometry: anat.SubjectGeometry, fov_mm: tuple[float, float]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The 2 mm scanner grid (axes z, y, x in mm) covering the whole head and the FOV, and the
    anatomy coordinates of its points (nz, ny, nx, 3)."""
    h = FIELD_GRID_MM
    half_y = max(fov_mm[0] / 2, 120.0)
    half_x = max(fov_mm[1] / 2, 100.0)
    gz = np.arange(-150.0, 130.0 + h / 2, h)
    gy = np.arange(-half_y, half_y + h / 2, h)
    gx = np.arange(-half_x, half_x + h / 2, h)
    return (gz, gy, gx), anat.map_slices(gz, gy, gx, geometry, step=3)


def _transceive_phase(
    anatomy: anat.HeadAnatomy,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    anat_pts: np.ndarray,
    field_strength_t: float,
    plans: list,
) -> np.ndarray:
    """RF transceive phase (rad) on the head grid from tissue and lesion conductivity."""
    sigma = anat.sample_coarse(anatomy.sigma_coarse[field_strength_t], anatomy, anat_pts)
    for plan in plans:
        box, occupancy = render_lesion_on_axes(plan, *axes)
        for k, occ in occupancy.items():
            tissue = plan.shells[k].tissue
            if tissue not in CONDUCTIVITY_S_PER_M:
                continue
            target = np.float32(CONDUCTIVITY_S_PER_M[tissue][field_strength_t])
            local = sigma[box]
            sigma[box] = local + occ * (target - local) * (local > 0.1)
    larmor_hz = GAMMA_BAR_MHZ_PER_T * 1e6 * field_strength_t
    h = FIELD_GRID_MM
    return transceive_phase_from_conductivity(sigma, (h, h, h), larmor_hz)


def _field_ppm(
    anatomy: anat.HeadAnatomy,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    anat_pts: np.ndarray,
    z_mm: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Shimmed relative field (ppm) on the head grid (`_head_grid`)."""
    h = FIELD_GRID_MM
    gz, gy, gx = axes
    chi = anat.sample_chi(anatomy, anat_pts)
    fld = field_from_susceptibility(chi, (h, h, h), pad_factor=1.5)
    # Shim volume: the brain within the imaged slab (the scanner's adjustment box).
    brain = anat.sample_maps(anatomy, anat_pts[::2, ::2, ::2], ("brain",))["brain"] > 0.5
    in_slab = (gz[::2] >= z_mm.min() - 5.0) & (gz[::2] <= z_mm.max() + 5.0)
    shim_mask = brain & in_slab[:, None, None]
    if shim_mask.sum() < 50:
        shim_mask = brain
    full_mask = np.zeros(fld.shape, bool)
    full_mask[::2, ::2, ::2] = shim_mask
    fld, _ = remove_shim_terms(fld, full_mask, (gz, gy, gx), order=2, fit_stride=2)
    # Imperfect shim: a small residual linear gradient (~0.05 ppm over 10 cm).
    residual = evaluate_polynomial(
        np.concatenate([[0.0], rng.normal(0, 0.05, 3)]),
        gz[:, None, None],
        gy[None, :, None],
        gx[None, None, :],
        1,
    )
    return (fld + residual).astype(np.float32)


def _interpolate_field(fld: np.ndarray, axes, points_mm: np.ndarray) -> np.ndarray:
    gz, gy, gx = axes
    idx = [(points_mm[..., i].reshape(-1) - a[0]) / (a[1] - a[0]) for i, a in enumerate((gz, gy, gx))]
    out = ndi.map_coordinates(fld, np.stack(idx), order=1, mode="nearest", output=np.float32)
    return out.reshape(points_mm.shape[:-1])


def _source_box(points_mm: np.ndarray, centre: np.ndarray, reach: float) -> tuple[slice, slice, slice] | None:
    """Index box (s, h, w) of slice points (S, H, W, 3) within `reach` mm of `centre`."""
    s_idx = np.nonzero(np.abs(points_mm[:, 0, 0, 0] - centre[0]) < reach)[0]
    r_idx = np.nonzero(np.abs(points_mm[0, :, 0, 1] - centre[1]) < reach)[0]
    c_idx = np.nonzero(np.abs(points_mm[0, 0, :, 2] - centre[2]) < reach)[0]
    if s_idx.size == 0 or r_idx.size == 0 or c_idx.size == 0:
        return None
    return (
        slice(int(s_idx[0]), int(s_idx[-1]) + 1),
        slice(int(r_idx[0]), int(r_idx[-1]) + 1),
        slice(int(c_idx[0]), int(c_idx[-1]) + 1),
    )


def render_volume(spec: VolumeSpec) -> GroundTruthVolume:
    """Render the ground-truth complex volume of `spec` (deterministic per `spec.seed`).

    See the module docstring for geometry and phase conventions. ~1-2 s for 16 x 320 x 320 on
    one core once the head model is loaded (first call per process: load or build it).
    """
    _validate(spec)
    geo_seq, les_seq, scan_seq, tex_seq = np.random.SeedSequence(spec.seed).spawn(4)
    rng_scan = np.random.default_rng(scan_seq)
    # What differs between two acquisitions of the same subject on the same scanner: the
    # receiver's reference phase and the echo timing.
    rng_acq = derived_rng(spec.seed, ALL_SIMULATED_SEQUENCES.index(spec.sequence))
    b0 = check_field_strength(spec.field_strength_t)
    protocol = default_protocol(spec.sequence, b0, spec.tr_ms, spec.te_ms, spec.ti_ms, spec.flip_deg)
    # Scanner-to-scanner spread of the readout/echo offset.
    protocol = with_phase_time(protocol, protocol.phase_time_ms * rng_acq.uniform(0.6, 1.5))
    signals = _tissue_signals(protocol)

    anatomy = anat.load_head_anatomy()
    geometry = anat.sample_subject_geometry(np.random.default_rng(geo_seq), anatomy)
    slab_centre = anat.anatomy_to_scanner(np.array([SLAB_CENTRE_MNI_MM]), geometry)[0, 0]
    z_mm = slice_positions_mm(spec, float(slab_centre))
    y_mm, x_mm = pixel_coordinates_mm(spec.matrix, spec.fov_mm)
    h, w = spec.matrix
    shape = (spec.n_slices, h, w)
    plans = plan_lesions(
        tuple(spec.lesions),
        np.random.default_rng(les_seq),
        anatomy,
        geometry,
        z_mm,
        (spec.fov_mm[0] / 2, spec.fov_mm[1] / 2),
        tuple(spec.lesion_radii_mm),
        tuple(spec.lesion_slices),
        t1_weighted=protocol_is_t1_weighted(protocol),
    )
    geometry = geometry.with_scalings(tuple(p.mass_effect for p in plans if p.mass_effect is not None))

    # Anatomy coordinates of every sub-slice, and the part of the anatomy grid they touch.
    offsets = (
        (np.arange(THROUGH_PLANE_SAMPLES) + 0.5) / THROUGH_PLANE_SAMPLES - 0.5
    ) * spec.slice_thickness_mm
    sub_points = [slice_points_mm(z_mm + dz, spec.matrix, spec.fov_mm) for dz in offsets]
    sub_anatomy = [anat.map_slices(z_mm + dz, y_mm, x_mm, geometry) for dz in offsets]
    z_lo = min(float(a[..., 0].min()) for a in sub_anatomy) - anat.GRID_ORIGIN_MM[0] - 2
    z_hi = max(float(a[..., 0].max()) for a in sub_anatomy) - anat.GRID_ORIGIN_MM[0] + 3
    z_index = slice(int(np.clip(z_lo, 0, anat.GRID_SHAPE[0] - 1)), int(np.clip(z_hi, 1, anat.GRID_SHAPE[0])))
    water_map = _water_signal_map(anatomy, protocol, signals, z_index)
    map_origin = anat.GRID_ORIGIN_MM + np.array([z_index.start, 0.0, 0.0])

    water = np.zeros(shape, np.float32)
    fat = np.zeros(shape, np.float32)
    brain_frac = np.zeros(shape, np.float32)
    head_frac = np.zeros(shape, np.float32)
    annotated = [{label: np.zeros(shape, np.float32) for label in plan.box_labels} for plan in plans]
    n_sub = float(THROUGH_PLANE_SAMPLES)
    # Sub-template detail: folding displacement of the WM and pial boundaries, tissue
    # microstructure and iron heterogeneity (module constants; docs "Texture").
    rng_tex = np.random.default_rng(tex_seq)
    pixel_mm = (spec.fov_mm[0] / h, spec.fov_mm[1] / w)
    folding = FOLDING_DISPLACEMENT_MM * power_law_field(
        rng_tex, shape, pixel_mm, longest_mm=20.0, shortest_mm=FOLDING_SHORTEST_MM
    )
    refined = {name: np.zeros(shape, np.float32) for name in ("wm", "gm", "deep_gm")}
    for pts, apts in zip(sub_points, sub_anatomy, strict=True):
        water += _sample_grid(water_map, map_origin, apts) / n_sub
        sampled = anat.sample_maps(anatomy, apts, ("fat", "brain", "head"))
        fat += sampled["fat"] * np.float32(signals["fat"] / n_sub)
        brain_frac += sampled["brain"] / n_sub
        head_frac += sampled["head"] / n_sub
        inside = sampled["brain"] > 0.0
        local = {}
        for name, values in anat.sample_maps(anatomy, apts[inside], ("wm", "gm", "csf", "deep_gm")).items():
            local[name] = np.zeros(shape, np.float32)
            local[name][inside] = values
        sharp = _refine_boundaries(local, min(pixel_mm), folding)
        water += sum((sharp[t] - local[t]) * np.float32(signals[t]) for t in ("wm", "gm", "csf")) / n_sub
        for name in ("wm", "gm"):
            refined[name] += sharp[name] / n_sub
        refined["deep_gm"] += local["deep_gm"] / n_sub
        del local, sharp
        for i, plan in enumerate(plans):
            box, occupancy = render_lesion(plan, pts)
            if not occupancy:
                continue
            delta, fat_removed, ann = _lesion_signal_change(
                plan, occupancy, anatomy, apts[box], protocol, signals
            )
            water[box] += delta / n_sub
            fat[box] -= fat_removed * np.float32(signals["fat"] / n_sub)
            for label, occ in ann.items():
                annotated[i][label][box] += occ / n_sub
    del water_map

    brain_mask = brain_frac >= 0.5
    head_mask = head_frac >= 0.5
    facial_frac = anat.sample_maps(anatomy, sub_anatomy[0][:, ::4, ::4], ("facial",))["facial"]
    pixel_area = (spec.fov_mm[0] / h) * (spec.fov_mm[1] / w) * 16.0
    facial = (facial_frac >= 0.5).sum(axis=(1, 2)) * pixel_area >= FACIAL_AREA_MM2

    water += _microstructure_texture(
        rng_tex, protocol, refined, anatomy, sub_anatomy[len(sub_anatomy) // 2], pixel_mm
    )
    # Perivascular spaces replace deep WM / basal ganglia tissue by interstitial fluid (CSF-like).
    pvs = perivascular_spaces(
        rng_tex,
        [
            (refined["wm"] >= 0.95, PVS_DENSITY_PER_MM2["wm"]),
            (refined["deep_gm"] >= 0.8, PVS_DENSITY_PER_MM2["deep_gm"]),
        ],
        pixel_mm,
    )
    water += pvs * (
        refined["wm"] * np.float32(signals["csf"] - signals["wm"])
        + refined["deep_gm"] * np.float32(signals["csf"] - signals["deep_gm"])
    )
    del pvs
    tissue_labels = np.zeros(shape, np.uint8)
    for code, name in enumerate(("wm", "gm", "deep_gm"), start=1):
        tissue_labels[refined[name] >= 0.8] = code
    del refined

    # Field of the head: susceptibility map -> dipole kernel (FFT) -> shim.
    centre_pts = slice_points_mm(z_mm, spec.matrix, spec.fov_mm)
    axes, grid_anatomy = _head_grid(geometry, spec.fov_mm)
    fld = _field_ppm(anatomy, axes, grid_anatomy, z_mm, rng_scan)
    head_field_ppm = _interpolate_field(fld, axes, centre_pts)
    transceive = _interpolate_field(
        _transceive_phase(anatomy, axes, grid_anatomy, b0, plans), axes, centre_pts
    )
    del grid_anatomy, fld
    tau = protocol.phase_time_ms
    hz_per_ppm = GAMMA_BAR_MHZ_PER_T * b0

    # Lesion susceptibility sources (spheres of blood products / calcium): tissue replacement
    # and analytic dipole field, both averaged across the slice thickness, so partial volume
    # and intravoxel dephasing come out of the same average.
    water_c = water.astype(np.complex64)
    source_field_ppm = np.zeros(shape, np.float32)
    through = ((np.arange(SOURCE_THROUGH_PLANE_SAMPLES) + 0.5) / SOURCE_THROUGH_PLANE_SAMPLES - 0.5) * (
        spec.slice_thickness_mm
    )
    for i, plan in enumerate(plans):
        for src in plan.sources:
            box = _source_box(centre_pts, src.centre_mm, 10.0 * src.radius_mm + spec.slice_thickness_mm)
            if box is None:
                continue
            pts = centre_pts[box]
            local = water_c[box]
            averaged = np.zeros_like(local)
            occupancy = np.zeros(local.shape, np.float32)
            for dz in through:
                shifted = pts.copy()
                shifted[..., 0] += dz
                occ = np.minimum(sphere_cross_section(src, shifted), head_frac[box])
                src_field = sphere_field_ppm(shifted, src.centre_mm, src.radius_mm, src.delta_chi_ppm)
                rotation = np.exp(1j * phase_from_field(src_field * hz_per_ppm, tau)).astype(np.complex64)
                averaged += (local * (1.0 - occ) + occ * signals[src.tissue]) * rotation
                occupancy += occ
            water_c[box] = averaged / len(through)
            occupancy /= len(through)
            fat[box] *= 1.0 - occupancy
            annotated[i][plan.label][box] += occupancy
            source_field_ppm[box] += sphere_field_ppm(pts, src.centre_mm, src.radius_mm, src.delta_chi_ppm)
    b0_hz = ppm_to_hz(head_field_ppm + source_field_ppm, b0)

    zz, yy, xx = z_mm[:, None, None], y_mm[None, :, None], x_mm[None, None, :]
    phase = (
        phase_from_field(ppm_to_hz(head_field_ppm, b0), tau)
        + transceive
        + _background_phase(rng_scan, zz, yy, xx, b0)
        + np.float32(rng_acq.uniform(-math.pi, math.pi))
    )
    phase += _eddy_current_phase(rng_acq, shape, tau)
    fat_shift_hz = FAT_CHEMICAL_SHIFT_PPM * hz_per_ppm
    fat_rotation = np.complex64(np.exp(1j * float(phase_from_field(np.float32(fat_shift_hz), tau))))
    bias = _transmit_bias(rng_scan, zz, yy, xx, b0, geometry.shift_mm)
    complex_signal = (water_c + fat * fat_rotation) * bias
    wrapped = wrap_phase(phase)
    image = (complex_signal * (np.cos(wrapped) + 1j * np.sin(wrapped)).astype(np.complex64)).astype(
        np.complex64
    )

    lesions = [
        Lesion(label=label, mask=a >= 0.4, susceptibility=p.susceptibility and label == p.label)
        for p, parts in zip(plans, annotated, strict=True)
        for label, a in parts.items()
    ]
    return GroundTruthVolume(
        image=image,
        brain_mask=brain_mask,
        head_mask=head_mask,
        lesions=lesions,
        b0_hz=b0_hz.astype(np.float32),
        facial=facial,
        sequence=spec.sequence,
        field_strength_t=b0,
        tr_ms=protocol.tr_ms,
        te_ms=protocol.te_ms,
        ti_ms=protocol.ti_ms,
        flip_deg=protocol.flip_deg,
        voxel_size_mm=(float(spec.slice_thickness_mm), spec.fov_mm[0] / h, spec.fov_mm[1] / w),
        phase_time_ms=float(tau),
        slice_z_mm=z_mm.astype(np.float32),
        tissue_labels=tissue_labels,
    )


def _lesion_signal_change(
    plan,
    occupancy: dict[int, np.ndarray],
    anatomy: anat.HeadAnatomy,
    anatomy_points: np.ndarray,
    protocol: Protocol,
    signals: dict[str, float],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Change of water signal when a lesion's shells displace normal tissue, the fraction of fat
    displaced (marrow of a craniotomy flap), and the annotated occupancy per box label, over the
    lesion's box. Shells displace the tissues they may replace in proportion (edema weighted towards
    white matter)."""
    local = anat.sample_maps(anatomy, anatomy_points, _LESION_CONTEXT_MAPS)
    tissue_signal_map = {
        t: np.float32(signals[t]) for t in _LESION_CONTEXT_MAPS if t not in ("deep_gm", "iron", "fat")
    }
    tissue_signal_map["deep_gm"] = _deep_gm_signal(protocol, local.pop("iron"))
    tissue_signal_map["fat"] = np.float32(0.0)  # fat is its own channel (chemical shift): see fat_removed
    delta = np.zeros(anatomy_points.shape[:-1], np.float32)
    fat_removed = np.zeros_like(delta)
    annotated: dict[str, np.ndarray] = {}
    for k, occ in occupancy.items():
        shell = plan.shells[k]
        available = sum(local[t] for t in shell.replaces)
        if shell.weights:
            affinity = sum(local[t] * wgt for t, wgt in shell.weights) / np.maximum(available, 1e-6)
            occ = occ * np.clip(affinity, 0.0, 1.0)
        if shell.one_hemisphere and plan.centre_anatomy_mm is not None:
            side = np.sign(plan.centre_anatomy_mm[2]) or 1.0
            occ = occ * np.clip(side * anatomy_points[..., 2] / 2.0 + 0.5, 0.0, 1.0)
        take = np.minimum(occ, available)
        ratio = take / np.maximum(available, 1e-6)
        for t in shell.replaces:
            removed = local[t] * ratio
            delta -= removed * tissue_signal_map[t]
            if t == "fat":
                fat_removed += removed
            local[t] = local[t] - removed
        delta += take * signals[shell.tissue]
        if shell.annotated:
            label = shell.label or plan.label
            annotated[label] = annotated.get(label, 0.0) + take
    return delta, fat_removed, annotated
