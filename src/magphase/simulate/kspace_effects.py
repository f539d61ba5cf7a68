"""Acquisition effects of clinical 2-D Cartesian brain scans, applied in k-space.

Conventions (those of :mod:`magphase.simulate.acquisition`): a slice's k-space is ``C x 2H x W``, rows =
readout (2x oversampled), columns = phase encoding; centred indices ``k - N // 2``; the orthonormal
centred FFT, so shifting an image by ``d`` pixels multiplies its k-space by ``exp(-2 pi i k d / N)``.

Effects (each level and its source: ``docs/simulated-data-acquisition.md`` "Acquisition effects"):

* **Phase resolution** (k-space truncation, Gibbs ringing): only the central ``round(p W)`` phase-encode
  columns are acquired, the rest of the stored ``W`` columns are zero (as in fastMRI brain files, whose
  ``encodingLimits/kspace_encoding_step_1`` say which columns hold data). The object itself has content
  up to the recon grid's Nyquist limit, so the zero-filled image rings at sharp edges at the highest
  acquired frequency: maxima ``2 W / n_lines`` pixels apart, first overshoot ~9 % of the step.
* **Partial Fourier** (asymmetric k-space): a further ``(1 - f)`` of the symmetric extent is left out on
  the low side (the first columns in acquisition order); the reconstruction is fastMRI's zero-filled
  ``ifft2c``, so the image is smoothed along phase encoding and its phase is altered.
* **Rigid in-plane motion** (a fraction of volumes): sudden head movements (translation + rotation) at
  random times; each k-space column is taken from the object in its position at the column's time.
  Along phase encoding this gives ghosts and blurring (Zaitsev et al. 2015). The object moves inside
  fixed coil sensitivities for rotations; translations are applied as k-space phase ramps, which also
  move the (smooth) coil maps by the same few mm.
* **Pulsatile flow** (a fraction of volumes, more in contrast-enhanced T1): the signal of the dural
  venous sinus near the posterior midline is modulated in amplitude and phase by the cardiac cycle,
  sampled at the column times, so copies of the vessel appear along phase encoding at spacing
  ``W * (TR / T_cardiac) mod W`` for spin echo.

Column times: spin echo acquires one column per TR in linear order; turbo spin echo acquires
``echo_train_length`` columns per TR, segmented (column ``j`` in shot ``j mod n_shots``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

#: Echo-train length per ISMRMRD sequence type (turbo factor of typical clinical brain TSE protocols).
ECHO_TRAIN_LENGTHS = {"SpinEcho": 1, "TurboSpinEcho": 16}
#: Effects recorded in the truth sidecar attribute ``effects_applied`` (comma separated).
EFFECT_NAMES = ("truncation", "partial_fourier", "motion", "flow")


def _pairs(value: Any) -> tuple[tuple[float, float], ...]:
    items = value.items() if isinstance(value, dict) else value
    return tuple((float(k), float(w)) for k, w in items)


@dataclass(frozen=True)
class AcquisitionEffects:
    """Levels of the acquisition effects (defaults: the realistic levels of the docs).

    Attributes:
        enabled: master switch; ``False`` gives exactly the effect-free acquisition.
        phase_resolution: ``[low, high]``: per volume, the acquired fraction of the ``W`` phase-encode
            columns is drawn uniformly from it (1.0: every column, no truncation).
        partial_fourier: ``((fraction, weight), ...)``: per volume, the acquired fraction of the symmetric
            extent (1.0: full; 0.875 = 7/8; 0.75 = 6/8), drawn by weight.
        motion_fraction: fraction of volumes with head motion.
        motion_events: ``[low, high]`` sudden movements in a moving volume.
        motion_translation_mm: standard deviation of each movement's in-plane translation per axis.
        motion_rotation_deg: standard deviation of each movement's in-plane rotation.
        flow_fraction: ``((sequence, fraction), ...)``: fraction of volumes with visible flow ghosts.
        flow_depth: ``[low, high]`` amplitude modulation of the flowing signal over the cardiac cycle.
        flow_phase_rad: peak velocity-induced phase of the flowing signal.
        cardiac_period_ms: ``[low, high]`` heart period (R-R interval).
    """

    enabled: bool = True
    phase_resolution: tuple[float, float] = (0.75, 1.0)
    partial_fourier: tuple[tuple[float, float], ...] = ((1.0, 0.7), (0.875, 0.3))
    motion_fraction: float = 0.15
    motion_events: tuple[int, int] = (1, 3)
    motion_translation_mm: float = 1.5
    motion_rotation_deg: float = 1.5
    flow_fraction: tuple[tuple[str, float], ...] = (
        ("AXT1POST", 0.5),
        ("AXT1", 0.3),
        ("AXT1PRE", 0.3),
        ("T1TSE", 0.3),
        ("AXFLAIR", 0.15),
        ("AXT2", 0.15),
        ("T2TIRM", 0.15),
    )
    flow_depth: tuple[float, float] = (0.3, 0.9)
    flow_phase_rad: float = 1.0
    cardiac_period_ms: tuple[float, float] = (700.0, 1100.0)

    def __post_init__(self) -> None:
        # Plans store sites as JSON: dict keys become strings and tuples lists; take both back.
        set_ = object.__setattr__
        set_(self, "phase_resolution", tuple(float(v) for v in self.phase_resolution))
        set_(self, "partial_fourier", _pairs(self.partial_fourier))
        items = self.flow_fraction.items() if isinstance(self.flow_fraction, dict) else self.flow_fraction
        set_(self, "flow_fraction", tuple((str(k), float(v)) for k, v in items))
        set_(self, "motion_events", tuple(int(v) for v in self.motion_events))
        set_(self, "flow_depth", tuple(float(v) for v in self.flow_depth))
        set_(self, "cardiac_period_ms", tuple(float(v) for v in self.cardiac_period_ms))
        low, high = self.phase_resolution
        if not 0.25 <= low <= high <= 1.0:
            raise ValueError(
                f"phase_resolution must be [low, high] in [0.25, 1], got {list(self.phase_resolution)}"
            )
        if not self.partial_fourier or any(not 0.5 <= f <= 1.0 or w < 0 for f, w in self.partial_fourier):
            raise ValueError(
                f"partial_fourier fractions must be in [0.5, 1] with weights >= 0, got {self.partial_fourier}"
            )
        if sum(w for _, w in self.partial_fourier) <= 0:
            raise ValueError("partial_fourier weights must have a positive sum")

    @classmethod
    def off(cls) -> AcquisitionEffects:
        """No effect: the acquisition is byte-identical to the effect-free simulator."""
        return cls(enabled=False)

    def flow_fraction_for(self, sequence: str) -> float:
        return dict(self.flow_fraction).get(sequence, 0.0)


@dataclass(frozen=True)
class MotionEvent:
    """A sudden rigid movement at ``time_fraction`` of the scan: the head is displaced by ``shift_px``
    (rows, cols) and rotated by ``angle_deg`` (counter-clockwise in array axes) from then on, relative to
    its position at the start."""

    time_fraction: float
    shift_px: tuple[float, float]
    angle_deg: float


@dataclass
class DrawnEffects:
    """One volume's effects (drawn by :func:`draw_effects`)."""

    n_lines: int
    partial_fourier: float
    columns: tuple[int, int]
    motion: list[MotionEvent] = field(default_factory=list)
    flow_depth: float = 0.0
    flow_phase0: float = 0.0
    cardiac_period_ms: float = 0.0
    echo_train_length: int = 1

    @property
    def applied(self) -> list[str]:
        width = self.columns[1] - self.columns[0]
        names = []
        if self.n_lines < self.total_columns:
            names.append("truncation")
        if self.partial_fourier < 1.0 and width < self.n_lines:
            names.append("partial_fourier")
        if self.motion:
            names.append("motion")
        if self.flow_depth > 0:
            names.append("flow")
        return names

    total_columns: int = 0

    def attrs(self) -> dict[str, Any]:
        """Scalars for the truth sidecar (benchmarks stratify by ``effects_applied``)."""
        return {
            "effects_applied": ",".join(self.applied),
            "phase_lines": int(self.n_lines),
            "partial_fourier": float(self.partial_fourier),
            "acquired_columns": np.array(self.columns, dtype=np.int64),
            "motion_events": len(self.motion),
            "motion_max_shift_px": float(max((math.hypot(*e.shift_px) for e in self.motion), default=0.0)),
            "motion_max_angle_deg": float(max((abs(e.angle_deg) for e in self.motion), default=0.0)),
            "flow_depth": float(self.flow_depth),
            "cardiac_period_ms": float(self.cardiac_period_ms),
            "echo_train_length": int(self.echo_train_length),
        }


def acquired_columns(n_columns: int, n_lines: int, partial_fourier: float) -> tuple[int, int]:
    """``[left, right)`` of the acquired phase-encode columns.

    The symmetric extent is ``n_lines`` columns around the k-space centre ``n_columns // 2``; partial
    Fourier drops ``round((1 - f) n_lines)`` of them on the low side (never past the centre).
    """
    half = n_lines // 2
    left, right = n_columns // 2 - half, n_columns // 2 - half + n_lines
    dropped = min(int(round((1.0 - partial_fourier) * n_lines)), half - 1) if half > 1 else 0
    return left + max(dropped, 0), right


def column_times_ms(
    n_columns: int, columns: tuple[int, int], tr_ms: float, echo_train_length: int
) -> np.ndarray:
    """Acquisition time of every stored column (ms; unacquired columns get ``nan``).

    Spin echo (``echo_train_length == 1``): one column per TR from ``left`` to ``right``; turbo spin echo:
    ``n_shots = ceil(n / ETL)`` TRs, acquired column ``j`` in shot ``j mod n_shots``.
    """
    left, right = columns
    n = right - left
    j = np.arange(n)
    shots = max(1, math.ceil(n / max(echo_train_length, 1)))
    shot = j % shots if echo_train_length > 1 else j
    times = np.full(n_columns, np.nan)
    times[left:right] = shot * tr_ms
    return times


def draw_effects(
    effects: AcquisitionEffects,
    sequence: str,
    sequence_type: str | None,
    n_columns: int,
    pixel_mm: tuple[float, float],
    rng: np.random.Generator,
) -> DrawnEffects:
    """Draw one volume's effects (the draw order is fixed, so a seed gives the same volume)."""
    low, high = effects.phase_resolution
    fraction = rng.uniform(low, high)
    n_lines = int(min(n_columns, max(8, 2 * round(fraction * n_columns / 2))))
    pf_values = np.array([f for f, _ in effects.partial_fourier])
    pf_weights = np.array([w for _, w in effects.partial_fourier])
    pf = float(pf_values[rng.choice(len(pf_values), p=pf_weights / pf_weights.sum())])
    etl = ECHO_TRAIN_LENGTHS.get(sequence_type or "", 1)
    drawn = DrawnEffects(
        n_lines=n_lines,
        partial_fourier=pf,
        columns=acquired_columns(n_columns, n_lines, pf),
        echo_train_length=etl,
        total_columns=n_columns,
    )
    moving = rng.uniform() < effects.motion_fraction
    n_events = int(rng.integers(effects.motion_events[0], effects.motion_events[1] + 1))
    times = np.sort(rng.uniform(0.05, 0.95, size=n_events))
    shifts = rng.normal(0.0, effects.motion_translation_mm, size=(n_events, 2)) / np.asarray(pixel_mm)
    angles = rng.normal(0.0, effects.motion_rotation_deg, size=n_events)
    if moving and n_events > 0:
        # Displacements accumulate: each movement starts from where the previous one left the head.
        total_shift = np.cumsum(shifts, axis=0)
        total_angle = np.cumsum(angles)
        drawn.motion = [
            MotionEvent(float(t), (float(s[0]), float(s[1])), float(a))
            for t, s, a in zip(times, total_shift, total_angle, strict=True)
        ]
    flowing = rng.uniform() < effects.flow_fraction_for(sequence)
    depth = rng.uniform(*effects.flow_depth)
    phase0 = rng.uniform(0.0, 2 * math.pi)
    period = rng.uniform(*effects.cardiac_period_ms)
    if flowing:
        drawn.flow_depth, drawn.flow_phase0, drawn.cardiac_period_ms = (
            float(depth),
            float(phase0),
            float(period),
        )
    return drawn


def shift_ramp(shape: tuple[int, int], shift_px: tuple[float, float]) -> np.ndarray:
    """``exp(-2 pi i (kr dr / Nr + kc dc / Nc))`` over a centred ``Nr x Nc`` k-space (complex64)."""
    nr, nc = shape
    kr = (np.arange(nr) - nr // 2) / nr
    kc = (np.arange(nc) - nc // 2) / nc
    phase = -2 * np.pi * (kr[:, None] * shift_px[0] + kc[None, :] * shift_px[1])
    return np.exp(1j * phase).astype(np.complex64)


def translate_columns(kspace: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Column ``j`` of ``kspace (..., Nr, Nc)`` as if the object were shifted by ``shifts_px[j] = (dr, dc)``.

    A per-column trajectory (e.g. periodic motion): a shift that varies with period ``P`` columns along
    phase encoding puts ghosts ``Nc / P`` pixels apart.
    """
    nr, nc = kspace.shape[-2:]
    kr = (np.arange(nr) - nr // 2) / nr
    kc = (np.arange(nc) - nc // 2) / nc
    phase = -2 * np.pi * (kr[:, None] * shifts_px[None, :, 0] + (kc * shifts_px[:, 1])[None, :])
    return (kspace * np.exp(1j * phase).astype(np.complex64)).astype(np.complex64)


def rotate_image(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """In-plane rotation of a complex ``(H, W)`` image about its centre (linear interpolation)."""
    if angle_deg == 0.0:
        return image
    re = ndimage.rotate(image.real, angle_deg, reshape=False, order=1, mode="constant")
    im = ndimage.rotate(image.imag, angle_deg, reshape=False, order=1, mode="constant")
    return (re + 1j * im).astype(np.complex64)


def flow_modulation(times_ms: np.ndarray, drawn: DrawnEffects, phase_rad: float) -> np.ndarray:
    """Complex factor of the flowing signal at each column time (1 where nothing flows or is acquired)."""
    if drawn.flow_depth <= 0:
        return np.ones_like(times_ms, dtype=np.complex64)
    cycle = 2 * np.pi * np.nan_to_num(times_ms) / drawn.cardiac_period_ms + drawn.flow_phase0
    amplitude = 1.0 - 0.5 * drawn.flow_depth + 0.5 * drawn.flow_depth * np.cos(cycle)
    factor = amplitude * np.exp(1j * phase_rad * np.sin(cycle))
    return np.where(np.isnan(times_ms), 1.0, factor).astype(np.complex64)


def sinus_mask(
    brain_mask: np.ndarray,
    pixel_mm: tuple[float, float],
    image: np.ndarray | None = None,
    radius_mm: float = 4.0,
) -> np.ndarray:
    """A disc at the superior sagittal sinus of each slice: posterior midline, at the brain's edge.

    Rows run anterior with the row index (``image_axes_mm``), so posterior is the lowest brain row of the
    brain's midline column (its centroid column). With ``image`` the disc is centred on the strongest
    signal within 12 mm behind to 12 mm inside that point and 8 mm either side (the sinus, bright when
    enhanced); otherwise ``radius_mm`` behind it. Slices whose midline holds no brain get no disc.
    """
    n_slices, h, w = brain_mask.shape
    out = np.zeros_like(brain_mask, dtype=bool)
    rr, cc = np.mgrid[0:h, 0:w]
    dr, dc = pixel_mm
    for s in range(n_slices):
        cols = np.nonzero(brain_mask[s].any(axis=0))[0]
        if cols.size == 0:
            continue
        mid = int(round(np.nonzero(brain_mask[s])[1].mean()))
        rows = np.nonzero(brain_mask[s, :, max(mid - 1, 0) : mid + 2].any(axis=1))[0]
        if rows.size == 0:
            continue
        centre_r, centre_c = rows.min() - radius_mm / dr, float(mid)
        if image is not None:
            r0, r1 = max(int(rows.min() - 12 / dr), 0), min(int(rows.min() + 12 / dr) + 1, h)
            c0, c1 = max(int(mid - 8 / dc), 0), min(int(mid + 8 / dc) + 1, w)
            window = np.abs(image[s, r0:r1, c0:c1])
            if window.size and window.max() > 0:
                i, j = np.unravel_index(int(np.argmax(window)), window.shape)
                centre_r, centre_c = float(r0 + i), float(c0 + j)
        out[s] = ((rr - centre_r) * dr) ** 2 + ((cc - centre_c) * dc) ** 2 <= radius_mm**2
    return out


def moved_kspace(
    obj_coils: np.ndarray,
    image: np.ndarray,
    maps: np.ndarray,
    rows: slice,
    n_rows: int,
    times_ms: np.ndarray,
    events: list[MotionEvent],
    fft2c: Any,
) -> np.ndarray:
    """k-space ``(C, n_rows, W)`` of a moving object: each column from the object's pose at its time.

    Args:
        obj_coils: ``(C, H, W)`` coil images of the object at rest (``maps * image``).
        image: ``(H, W)`` the object (scaled), rotated for the moved poses.
        maps: ``(C, H, W)`` coil sensitivities (fixed in the scanner).
        rows: where the ``H`` recon rows sit in the ``n_rows`` oversampled rows.
        times_ms: column times (``nan``: not acquired).
        events: cumulative poses, sorted by time.
    """
    n_coils, _, w = obj_coils.shape
    padded = np.zeros((n_coils, n_rows, w), dtype=np.complex64)
    padded[:, rows] = obj_coils
    out = fft2c(padded)
    finite = times_ms[np.isfinite(times_ms)]
    if finite.size == 0 or not events:
        return out
    t_end = float(finite.max()) if finite.max() > 0 else 1.0
    for i, event in enumerate(events):
        start = event.time_fraction * t_end
        stop = events[i + 1].time_fraction * t_end if i + 1 < len(events) else np.inf
        cols = np.nonzero(np.isfinite(times_ms) & (times_ms >= start) & (times_ms < stop))[0]
        if cols.size == 0:
            continue
        padded[:] = 0
        padded[:, rows] = maps * rotate_image(image, event.angle_deg)
        moved = fft2c(padded)[..., cols] * shift_ramp((n_rows, w), event.shift_px)[:, cols]
        out[..., cols] = moved
    return out


__all__ = [
    "ECHO_TRAIN_LENGTHS",
    "EFFECT_NAMES",
    "AcquisitionEffects",
    "DrawnEffects",
    "MotionEvent",
    "acquired_columns",
    "column_times_ms",
    "draw_effects",
    "flow_modulation",
    "moved_kspace",
    "rotate_image",
    "shift_ramp",
    "sinus_mask",
    "translate_columns",
]
