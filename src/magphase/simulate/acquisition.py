"""Multi-coil acquisition of a ground-truth volume: fastMRI-format k-space plus a truth sidecar.

From a noise-free complex :class:`~magphase.simulate.phantom.GroundTruthVolume` ``rho`` (``S x H x W``,
the recon grid, rows = readout):

1. The image is placed on the 2x readout-oversampled grid ``S x 2H x W`` (rows ``H//2 .. H//2 + H``,
   where fastMRI's centre crop takes them back); the extra field of view is air, so it is zero.
2. Coil images ``maps_c * rho`` with Biot-Savart sensitivities (:mod:`magphase.simulate.coils`),
   all elements scaled so the median root-sum-of-squares (RSS) of the maps inside the head is 1.
3. ``kspace = fft2c(scale * coil images + noise)``, complex64 ``S x C x 2H x W``. ``scale`` puts the
   mean brain signal of the ideal coil combination at ``signal_level`` (fastMRI-like raw units) and the
   noise is circular complex Gaussian, white (so equally white in k-space: the orthonormal FFT is
   unitary), correlated across coils with covariance ``sigma0^2 Psi``, ``sigma0 = signal_level / snr``.
4. ``reconstruction_rss`` = RSS of the noisy coil images on the recon rows: fastMRI's
   ``ifft2c -> centre crop -> RSS`` of the stored k-space, up to float32 round-off.

With acquisition effects on (``settings.effects`` or the site's, the default), steps 3-4 follow
:mod:`magphase.simulate.kspace_effects`: the object's k-space is taken column by column from its pose at
each column's time (motion), the sinus signal is modulated by the cardiac cycle (flow), noise is added
in k-space and the columns outside the acquired phase-encode range (phase resolution, partial Fourier)
are zero, as the header's ``kspace_encoding_step_1`` says; ``reconstruction_rss`` is then computed from
the stored k-space. Effects off reproduce the effect-free bytes.

So ``snr`` is the brain-average SNR of an optimal (Roemer) combination with unit-variance noise:
``mean_brain(|rho| RSS(maps)) / sigma0``.

The ground-truth sidecar (:func:`write_truth` / :func:`read_truth`) records the combined noise-free
image ``rho * RSS(maps)`` (what an ideal coil combination such as ESPIRiT returns, up to a global
phase), normalised per slice by its maximum magnitude, the masks and lesions, the coarse coil maps
(expand with :meth:`GroundTruthRecord.coil_maps_on_grid`), the noise covariance, the B0 map and
facial-slice flags. See ``docs/simulated-data-acquisition.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from magphase.errors import DataError
from magphase.io.fastmri import write_volume
from magphase.io.ismrmrd import AcquisitionHeader, EncodingLimits
from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.rss import rss
from magphase.simulate.coils import (
    CoilArrayDesign,
    CoilMaps,
    build_coil_array,
    coarse_axis_mm,
    compute_coil_maps,
    correlated_noise,
    noise_covariance,
    normalise_coil_maps,
)
from magphase.simulate.kspace_effects import (
    AcquisitionEffects,
    DrawnEffects,
    column_times_ms,
    draw_effects,
    flow_modulation,
    moved_kspace,
    sinus_mask,
)
from magphase.simulate.phantom import GroundTruthVolume
from magphase.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Version of the truth sidecar layout (stored as attribute ``format_version``).
TRUTH_FORMAT_VERSION = 1
#: Folder (inside a raw-data folder) holding the truth sidecars; raw-folder scans are not recursive.
TRUTH_DIRNAME = "truth"

#: Scanner model names by field strength (fastMRI brain data come from Siemens 1.5 T and 3 T systems).
_MODELS = {1.5: ("Avanto", "Aera"), 3.0: ("Skyra", "Prisma_fit", "TrioTim")}
#: ISMRMRD ``sequence_type`` per sequence family (the pulse-sequence family the contrast comes from).
_SEQUENCE_TYPES = {
    "AXFLAIR": "TurboSpinEcho",
    "AXT2": "TurboSpinEcho",
    "AXT1": "SpinEcho",
    "AXT1PRE": "SpinEcho",
    "AXT1POST": "SpinEcho",
    "T1TSE": "TurboSpinEcho",
    "T2TIRM": "TurboSpinEcho",
}


@dataclass(frozen=True)
class SiteProfile:
    """A scanner ("site"): identity for the header, field strength, its receive-array former and the
    acquisition effects of its protocols (:class:`~magphase.simulate.kspace_effects.AcquisitionEffects`)."""

    site_id: int
    vendor: str
    model: str
    institution: str
    field_strength_t: float
    coil_design: CoilArrayDesign
    effects: AcquisitionEffects = field(default_factory=AcquisitionEffects)

    def __post_init__(self) -> None:
        if isinstance(self.effects, dict):  # a plan read back from JSON
            object.__setattr__(self, "effects", AcquisitionEffects(**self.effects))

    @classmethod
    def simulated(
        cls,
        site_id: int,
        field_strength_t: float,
        rng: np.random.Generator,
        institution: str | None = None,
    ) -> SiteProfile:
        """A site with a randomly perturbed coil former and a model name fitting the field strength."""
        models = _MODELS.get(float(field_strength_t), ("Generic",))
        return cls(
            site_id=int(site_id),
            vendor="SIEMENS",
            model=str(models[int(rng.integers(len(models)))]),
            institution=institution or f"magphase simulated site {site_id}",
            field_strength_t=float(field_strength_t),
            coil_design=CoilArrayDesign.for_site(rng),
        )


def image_axes_mm(
    h: int, w: int, pixel_mm: tuple[float, float], oversampled: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Scanner y of every stored row and x of every column (mm), the phantom's convention.

    Recon grid: ``y = (r - (H - 1) / 2) dy`` (anterior), ``x = -(c - (W - 1) / 2) dx`` (patient right).
    With ``oversampled`` the rows are those of the ``2H``-row readout grid, whose rows
    ``H//2 .. H//2 + H`` are the recon rows (where fastMRI's centre crop takes them).
    """
    first = -(h // 2) if oversampled else 0
    n_rows = 2 * h if oversampled else h
    rows = (np.arange(n_rows) + first - (h - 1) / 2) * pixel_mm[0]
    cols = -(np.arange(w) - (w - 1) / 2) * pixel_mm[1]
    return rows, cols


@dataclass(frozen=True)
class AcquisitionSettings:
    """How a volume is acquired.

    Attributes:
        n_coils: receive elements.
        snr: brain-average SNR of an optimal coil combination (module docstring).
        site: the scanner.
        signal_level: mean brain magnitude of the ideal combination in k-space units (fastMRI raw
            data are of order 1e-5 .. 1e-3; the value only sets the file's numeric scale).
        map_step_mm: coarse-grid step of the coil maps (maps are smooth on a few-cm scale).
        head_jitter_mm: standard deviation of the head's in-plane offset from the array centre.
        protocol_name: ISMRMRD protocol name (default: the sequence name).
        effects: acquisition effects (default: the site's, ``site.effects``).
    """

    n_coils: int
    snr: float
    site: SiteProfile
    signal_level: float = 1e-4
    map_step_mm: float = 5.0
    head_jitter_mm: float = 3.0
    protocol_name: str | None = None
    effects: AcquisitionEffects | None = None

    def __post_init__(self) -> None:
        if self.n_coils < 1:
            raise ValueError(f"n_coils must be >= 1, got {self.n_coils}")
        if not (math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"snr must be positive, got {self.snr}")
        if not self.signal_level > 0:
            raise ValueError(f"signal_level must be positive, got {self.signal_level}")


@dataclass
class GroundTruthRecord:
    """What the truth sidecar holds (shapes on the recon grid ``S x H x W`` unless stated).

    Attributes:
        image: complex64 noise-free ideal coil combination ``rho * RSS(maps)``, each slice divided by
            its maximum magnitude (phase unchanged; all-zero slices stay zero).
        brain_mask, head_mask: bool.
        lesion_masks: bool ``(L, S, H, W)``; ``lesion_labels`` (L,) fastMRI+ labels;
            ``lesion_susceptibility`` bool (L,).
        coil_maps: coarse complex sensitivities over the oversampled grid (normalised: median RSS in the
            head is 1), expand with :meth:`coil_maps_on_grid`.
        noise_covariance: ``(C, C)`` complex128 covariance of the k-space noise (k-space units).
        b0_hz: float32 off-resonance map.
        facial: bool (S,) slices showing facial structures (orbits, sinuses).
        slice_scale: float64 (S,): ``kspace-unit combined image = image * slice_scale`` (noise free).
        attrs: scalars (sequence, field strength, TR/TE/TI/flip, voxel size, fov, snr, kspace_scale, ...).
    """

    image: np.ndarray
    brain_mask: np.ndarray
    head_mask: np.ndarray
    lesion_masks: np.ndarray
    lesion_labels: list[str]
    lesion_susceptibility: np.ndarray
    coil_maps: CoilMaps
    noise_covariance: np.ndarray
    b0_hz: np.ndarray
    facial: np.ndarray
    slice_scale: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def recon_shape(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])

    @property
    def pixel_mm(self) -> tuple[float, float]:
        fov = self.attrs["fov_mm"]
        return float(fov[0]) / self.recon_shape[0], float(fov[1]) / self.recon_shape[1]

    def coil_maps_on_grid(self, grid: str = "recon", slices: Any = None) -> np.ndarray:
        """Coil maps expanded exactly as used for the k-space: ``(S', C, rows, W)`` complex64.

        Args:
            grid: ``"oversampled"`` (``2H`` rows, the k-space image grid) or ``"recon"`` (the ``H``
                centre rows, aligned with ``image``).
            slices: optional index/slice into the slice axis.
        """
        h, w = self.recon_shape
        full = self.coil_maps.on_axes(*image_axes_mm(h, w, self.pixel_mm, oversampled=True), slices=slices)
        if grid == "oversampled":
            return full
        if grid == "recon":
            return np.ascontiguousarray(full[..., h // 2 : h // 2 + h, :])
        raise ValueError(f"grid must be 'recon' or 'oversampled', got {grid!r}")


@dataclass
class SimulatedAcquisition:
    """Everything written for one volume: the fastMRI file content and its ground truth."""

    kspace: np.ndarray
    reconstruction_rss: np.ndarray
    header: AcquisitionHeader
    attrs: dict[str, Any]
    truth: GroundTruthRecord


def sites_with_effects(
    sites: dict[int, SiteProfile], effects: AcquisitionEffects | Any
) -> dict[int, SiteProfile]:
    """The same sites acquiring with ``effects`` (an :class:`AcquisitionEffects` or the config section
    ``simulate.acquisition_effects``, whose fields have the same names)."""
    if not isinstance(effects, AcquisitionEffects):
        effects = AcquisitionEffects(**effects.model_dump())
    return {key: replace(site, effects=effects) for key, site in sites.items()}


def patient_id_for(stem: str, seed: int) -> str:
    """A stable anonymous patient id (hex digest, like fastMRI's) for a simulated subject."""
    return hashlib.sha256(f"magphase-sim:{seed}:{stem}".encode()).hexdigest()[:40]


def _head_center_mm(head_mask: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[float, float]:
    """In-plane (x, y) centroid of the head mask (all slices together) in scanner mm."""
    _, h, w = head_mask.shape
    rows, cols = np.nonzero(head_mask.any(axis=0))
    if rows.size == 0:
        return 0.0, 0.0
    y_mm, x_mm = image_axes_mm(h, w, pixel_mm)
    return float(x_mm[cols].mean()), float(y_mm[rows].mean())


def _acquire_with_effects(
    image: np.ndarray,
    maps_recon: np.ndarray,
    brain_mask: np.ndarray,
    object_scale: np.float32,
    covariance: np.ndarray,
    drawn: DrawnEffects,
    effects: AcquisitionEffects,
    tr_ms: float,
    pixel_mm: tuple[float, float],
    rng: np.random.Generator,
    kspace: np.ndarray,
    reconstruction: np.ndarray,
) -> np.ndarray:
    """Fill ``kspace`` and ``reconstruction`` with the effects of ``drawn``; return the k-space noise
    covariance used.

    The object's k-space (moved per column, with the flowing part modulated) gets white correlated noise
    on every column, then the columns outside ``drawn.columns`` are zeroed (never acquired). The noise per
    sample is raised by ``1 / sqrt(acquired fraction)`` so that the zero-filled image keeps the configured
    image SNR. ``reconstruction`` is fastMRI's ``ifft2c -> crop -> RSS`` of the stored k-space.
    """
    n_slices, n_coils, n_rows, w = kspace.shape
    h = n_rows // 2
    rows = slice(h // 2, h // 2 + h)
    left, right = drawn.columns
    covariance = covariance * (w / (right - left))
    times = column_times_ms(w, drawn.columns, tr_ms, drawn.echo_train_length)
    flowing = drawn.flow_depth > 0
    if flowing:
        vessel = sinus_mask(brain_mask, pixel_mm, image)
        modulation = flow_modulation(times, drawn, effects.flow_phase_rad) - np.complex64(1)
    padded = np.zeros((n_coils, n_rows, w), dtype=np.complex64)
    for s in range(n_slices):
        obj = image[s].astype(np.complex64) * object_scale
        k = moved_kspace(maps_recon[s] * obj, obj, maps_recon[s], rows, n_rows, times, drawn.motion, fft2c)
        if flowing and vessel[s].any():
            padded[:] = 0
            padded[:, rows] = maps_recon[s] * (obj * vessel[s])
            k += fft2c(padded) * modulation[None, None, :]
        k += correlated_noise((n_coils, n_rows, w), covariance, rng)
        k[..., :left] = 0
        k[..., right:] = 0
        kspace[s] = k
        reconstruction[s] = rss(ifft2c(k)[:, rows], coil_axis=0)
    return covariance


def acquire(
    volume: GroundTruthVolume,
    settings: AcquisitionSettings,
    rng: np.random.Generator,
    *,
    stem: str = "volume",
    patient_id: str | None = None,
) -> SimulatedAcquisition:
    """Simulate the multi-coil acquisition of one volume.

    Args:
        volume: noise-free ground truth; ``image`` complex ``(S, H, W)`` on the recon grid, rows =
            readout; ``voxel_size_mm = (thickness, dy, dx)`` gives the field of view and
            ``slice_z_mm`` the slice positions (equally spaced by the thickness when absent).
        settings: coils, SNR, site.
        rng: random generator for the coil array, noise covariance and noise (seeded by the caller).
        stem: file stem (used for the header protocol and the patient id default).
        patient_id: attribute ``patient_id`` (default: a digest of ``stem``).

    Returns:
        :class:`SimulatedAcquisition` with ``kspace`` complex64 ``(S, C, 2H, W)``,
        ``reconstruction_rss`` float32 ``(S, H, W)``, header, attrs and ground truth.
    """
    image = np.asarray(volume.image)
    if image.ndim != 3 or not np.iscomplexobj(image):
        raise ValueError(f"ground-truth image must be complex (S, H, W), got {image.dtype} {image.shape}")
    n_slices, h, w = image.shape
    thickness_mm, dy, dx = (float(v) for v in volume.voxel_size_mm)
    pixel_mm = (dy, dx)
    fov_mm = (h * dy, w * dx)
    slice_z_mm = np.asarray(getattr(volume, "slice_z_mm", ()), dtype=np.float64)
    if slice_z_mm.size != n_slices:
        slice_z_mm = (np.arange(n_slices) - (n_slices - 1) / 2) * thickness_mm
    head_mask = np.asarray(volume.head_mask, dtype=bool)
    brain_mask = np.asarray(volume.brain_mask, dtype=bool)
    site = settings.site

    center = _head_center_mm(head_mask, pixel_mm)
    center = (
        center[0] + rng.normal(0, settings.head_jitter_mm),
        center[1] + rng.normal(0, settings.head_jitter_mm),
    )
    array = build_coil_array(settings.n_coils, site.coil_design, rng, center_xy_mm=center)
    rows_os_mm, cols_px_mm = image_axes_mm(h, w, pixel_mm, oversampled=True)
    rows_mm = coarse_axis_mm(rows_os_mm, settings.map_step_mm)
    cols_mm = coarse_axis_mm(cols_px_mm, settings.map_step_mm)
    maps = compute_coil_maps(array, slice_z_mm, rows_mm, cols_mm, site.field_strength_t)
    psi = noise_covariance(array, site.coil_design, rng)

    # Pass 1, per slice: the (unnormalised) maps on the recon rows only -- outside them the object is
    # air, so the coil images there are zero whatever the maps are -- and their RSS. Map normalisation
    # and signal scale are global scalars known only after all slices.
    n_coils = settings.n_coils
    rows_recon_mm = rows_os_mm[h // 2 : h // 2 + h]
    maps_recon = np.empty((n_slices, n_coils, h, w), dtype=np.complex64)
    rss_maps = np.empty((n_slices, h, w), dtype=np.float32)
    for s in range(n_slices):
        maps_recon[s] = maps.on_axes(rows_recon_mm, cols_px_mm, slices=slice(s, s + 1))[0]
        rss_maps[s] = np.sqrt(np.sum(np.abs(maps_recon[s]) ** 2, axis=0))
    head_rss = rss_maps[head_mask] if head_mask.any() else rss_maps.ravel()
    map_norm = float(np.median(head_rss))
    maps = normalise_coil_maps(maps, head_rss)
    rss_maps /= np.float32(map_norm)

    combined = image.astype(np.complex64) * rss_maps  # ideal combination, relative units
    brain = brain_mask if brain_mask.any() else head_mask
    mean_brain = float(np.mean(np.abs(combined[brain]))) if brain.any() else float(np.abs(combined).max())
    if not mean_brain > 0:
        raise ValueError("ground-truth image is zero inside the brain/head: nothing to acquire")
    scale = settings.signal_level / mean_brain
    sigma0 = settings.signal_level / settings.snr
    covariance = psi * sigma0**2

    # Pass 2, per slice (bounded memory; one generator, so the draw order is fixed): coil images on the
    # oversampled grid plus noise, then one FFT. White noise with covariance Psi has the same law in
    # image space and k-space (the orthonormal FFT is unitary per coil), so adding it before the FFT
    # lets the RSS reconstruction use the noisy coil images directly: it equals fastMRI's
    # ifft2c -> crop -> RSS of the stored k-space up to float32 round-off (~1e-7).
    kspace = np.empty((n_slices, n_coils, 2 * h, w), dtype=np.complex64)
    reconstruction = np.empty((n_slices, h, w), dtype=np.float32)
    object_scale = np.float32(scale / map_norm)
    sequence = str(volume.sequence)
    effects = settings.effects if settings.effects is not None else site.effects
    drawn: DrawnEffects | None = None
    if not effects.enabled:
        for s in range(n_slices):
            coil_images = correlated_noise((n_coils, 2 * h, w), covariance, rng)
            coil_images[:, h // 2 : h // 2 + h] += maps_recon[s] * (
                image[s].astype(np.complex64) * object_scale
            )
            reconstruction[s] = rss(coil_images[:, h // 2 : h // 2 + h], coil_axis=0)
            kspace[s] = fft2c(coil_images)
    else:
        # The effects draw from a child generator: spawning does not advance ``rng``, so the coil array,
        # covariance and noise draws keep their order whatever the effects are.
        drawn = draw_effects(effects, sequence, _SEQUENCE_TYPES.get(sequence), w, pixel_mm, rng.spawn(1)[0])
        covariance = _acquire_with_effects(
            image,
            maps_recon,
            brain_mask,
            object_scale,
            covariance,
            drawn,
            effects,
            float(volume.tr_ms),
            pixel_mm,
            rng,
            kspace,
            reconstruction,
        )
        sigma0 = float(np.sqrt(np.real(np.trace(covariance)) / np.real(np.trace(psi))))
    del maps_recon

    slice_max = np.abs(combined).reshape(n_slices, -1).max(axis=1).astype(np.float64)
    safe = np.where(slice_max > 0, slice_max, 1.0)
    truth_image = (combined / safe[:, None, None].astype(np.float32)).astype(np.complex64)

    left, right = drawn.columns if drawn is not None else (0, w)
    header = AcquisitionHeader(
        encoded_matrix=(2 * h, w, 1),
        encoded_fov_mm=(2 * fov_mm[0], fov_mm[1], thickness_mm),
        recon_matrix=(h, w, 1),
        recon_fov_mm=(fov_mm[0], fov_mm[1], thickness_mm),
        field_strength_t=float(volume.field_strength_t),
        tr_ms=float(volume.tr_ms),
        te_ms=float(volume.te_ms),
        ti_ms=None if volume.ti_ms is None else float(volume.ti_ms),
        flip_angle_deg=None if volume.flip_deg is None else float(volume.flip_deg),
        n_coils=n_coils,
        kspace_encoding_step_1=EncodingLimits(minimum=0, maximum=right - left - 1, center=w // 2 - left),
        protocol_name=settings.protocol_name or sequence,
        sequence_type=_SEQUENCE_TYPES.get(sequence),
        vendor=site.vendor,
        model=site.model,
        institution=site.institution,
    )
    attrs = {"acquisition": sequence, "patient_id": patient_id or patient_id_for(stem, 0)}

    lesions = list(volume.lesions)
    lesion_masks = (
        np.stack([np.asarray(les.mask, dtype=bool) for les in lesions])
        if lesions
        else np.zeros((0, n_slices, h, w), dtype=bool)
    )
    truth = GroundTruthRecord(
        image=truth_image,
        brain_mask=brain_mask,
        head_mask=head_mask,
        lesion_masks=lesion_masks,
        lesion_labels=[str(les.label) for les in lesions],
        lesion_susceptibility=np.array([bool(les.susceptibility) for les in lesions], dtype=bool),
        coil_maps=maps,
        noise_covariance=covariance,
        b0_hz=np.asarray(volume.b0_hz, dtype=np.float32),
        facial=np.asarray(volume.facial, dtype=bool),
        slice_scale=slice_max * scale,
        attrs={
            "stem": stem,
            "sequence": sequence,
            "field_strength_t": float(volume.field_strength_t),
            "tr_ms": float(volume.tr_ms),
            "te_ms": float(volume.te_ms),
            "ti_ms": float("nan") if volume.ti_ms is None else float(volume.ti_ms),
            "flip_deg": float("nan") if volume.flip_deg is None else float(volume.flip_deg),
            "voxel_size_mm": tuple(float(v) for v in volume.voxel_size_mm),
            "fov_mm": fov_mm,
            "slice_thickness_mm": thickness_mm,
            "snr": float(settings.snr),
            "noise_sigma0": float(sigma0),
            "kspace_scale": float(scale),
            "n_coils": n_coils,
            "site": site.site_id,
            **(drawn.attrs() if drawn is not None else {}),
        },
    )
    return SimulatedAcquisition(
        kspace=kspace, reconstruction_rss=reconstruction, header=header, attrs=attrs, truth=truth
    )


# ------------------------------------------------------------------------------------------------
# truth sidecar


def truth_path_for(raw_path: str | os.PathLike[str]) -> Path:
    """``DIR/file.h5`` -> ``DIR/truth/file.h5``."""
    raw_path = Path(raw_path)
    return raw_path.parent / TRUTH_DIRNAME / raw_path.name


def write_truth(
    path: str | os.PathLike[str], truth: GroundTruthRecord, extra_attrs: dict[str, Any] | None = None
) -> Path:
    """Write a truth sidecar atomically (temp file in the same folder, then ``os.replace``).

    Masks and the B0 map are gzip-compressed (they compress well); ``image`` is stored raw.
    """
    path = Path(path)
    gz = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=truth.image.astype(np.complex64), chunks=(1, *truth.image.shape[1:]))
        f.create_dataset("brain_mask", data=truth.brain_mask, **gz)
        f.create_dataset("head_mask", data=truth.head_mask, **gz)
        les = f.create_group("lesions")
        les.create_dataset("masks", data=truth.lesion_masks, **(gz if truth.lesion_masks.size else {}))
        les.create_dataset("labels", data=np.array(truth.lesion_labels, dtype=h5py.string_dtype()))
        les.create_dataset("susceptibility", data=truth.lesion_susceptibility.astype(bool))
        maps = f.create_group("coil_maps")
        maps.create_dataset("coarse", data=truth.coil_maps.coarse.astype(np.complex64))
        maps.create_dataset("rows_mm", data=truth.coil_maps.rows_mm)
        maps.create_dataset("cols_mm", data=truth.coil_maps.cols_mm)
        maps.create_dataset("slice_z_mm", data=truth.coil_maps.slice_z_mm)
        f.create_dataset("noise_covariance", data=truth.noise_covariance.astype(np.complex128))
        f.create_dataset("b0_hz", data=truth.b0_hz.astype(np.float32), **gz)
        f.create_dataset("facial", data=truth.facial.astype(bool))
        f.create_dataset("slice_scale", data=truth.slice_scale.astype(np.float64))
        f.attrs["format_version"] = TRUTH_FORMAT_VERSION
        for key, value in {**truth.attrs, **(extra_attrs or {})}.items():
            f.attrs[key] = value
    return path


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return value


def read_truth_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the scalar attributes of a truth sidecar (cheap; used to check resumable volumes).

    Raises:
        DataError: the file is missing, not HDF5 or truncated.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            return {k: _attr(v) for k, v in f.attrs.items()}
    except (OSError, KeyError) as exc:
        raise DataError(path, None, f"cannot open truth sidecar: {exc}") from None


_TRUTH_DATASETS = (
    "image",
    "brain_mask",
    "head_mask",
    "lesions/masks",
    "lesions/labels",
    "lesions/susceptibility",
    "coil_maps/coarse",
    "coil_maps/rows_mm",
    "coil_maps/cols_mm",
    "coil_maps/slice_z_mm",
    "noise_covariance",
    "b0_hz",
    "facial",
    "slice_scale",
)


def read_truth(path: str | os.PathLike[str]) -> GroundTruthRecord:
    """Read a truth sidecar written by :func:`write_truth` (``DIR/truth/{stem}.h5``).

    Raises:
        DataError: missing file, not HDF5, truncated, or a missing dataset (named in the error).
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, None, f"cannot open truth sidecar: {exc}") from None
    with f:
        for name in _TRUTH_DATASETS:
            if name not in f:
                raise DataError(path, name, "missing dataset in truth sidecar")
        try:
            data = {name: f[name][()] for name in _TRUTH_DATASETS}
        except OSError as exc:
            raise DataError(path, None, f"unreadable truth sidecar: {exc}") from None
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in data["lesions/labels"]]
    return GroundTruthRecord(
        image=data["image"],
        brain_mask=data["brain_mask"].astype(bool),
        head_mask=data["head_mask"].astype(bool),
        lesion_masks=data["lesions/masks"].astype(bool),
        lesion_labels=labels,
        lesion_susceptibility=data["lesions/susceptibility"].astype(bool),
        coil_maps=CoilMaps(
            coarse=data["coil_maps/coarse"],
            rows_mm=data["coil_maps/rows_mm"],
            cols_mm=data["coil_maps/cols_mm"],
            slice_z_mm=data["coil_maps/slice_z_mm"],
        ),
        noise_covariance=data["noise_covariance"],
        b0_hz=data["b0_hz"],
        facial=data["facial"].astype(bool),
        slice_scale=data["slice_scale"],
        attrs=attrs,
    )


def write_acquisition(
    raw_path: str | os.PathLike[str],
    acquisition: SimulatedAcquisition,
    truth_attrs: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the fastMRI file ``raw_path`` and its sidecar ``truth_path_for(raw_path)``, both atomically.

    The sidecar is written first, so a raw file never exists without its truth.

    Returns:
        ``(raw_path, truth_path)``.
    """
    raw_path = Path(raw_path)
    truth_path = write_truth(truth_path_for(raw_path), acquisition.truth, truth_attrs)
    write_volume(
        raw_path,
        acquisition.kspace,
        acquisition.header,
        reconstruction_rss=acquisition.reconstruction_rss,
        attrs=acquisition.attrs,
    )
    return raw_path, truth_path


__all__ = [
    "TRUTH_DIRNAME",
    "TRUTH_FORMAT_VERSION",
    "AcquisitionSettings",
    "GroundTruthRecord",
    "SimulatedAcquisition",
    "SiteProfile",
    "acquire",
    "image_axes_mm",
    "patient_id_for",
    "read_truth",
    "read_truth_attrs",
    "sites_with_effects",
    "truth_path_for",
    "write_acquisition",
    "write_truth",
]
