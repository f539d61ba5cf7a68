"""Config section `simulate` (owned by the simulate stage): the built-in simulated brain dataset.

Mixes (``coils``, ``field_strengths_t``, ``sequence_mix``, ``class_fractions``, lesion weights) are
relative weights, normalised where used. Named presets (:data:`SIMULATE_PRESETS`) fill every field the
input does not give (``external`` merged key by key, :mod:`magphase.config.presets`) while the section
is validated, so a loaded config holds the resolved values and dumping + reloading it changes nothing.
Each preset records what it measured when last run.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from magphase.config.labels import PAPER_ABNORMAL_LABELS, VOLUME_CLASSES
from magphase.config.presets import PresetTable, Section
from magphase.conventions import SEQUENCES

#: Sequences of the training-like set (fastMRI brain) and of the external "other institution" set.
SIMULATED_SEQUENCES: tuple[str, ...] = SEQUENCES
EXTERNAL_SEQUENCES: tuple[str, ...] = ("T1TSE", "T2TIRM")
#: fastMRI+ labels of the paper's abnormal class (2.1.1) and out-of-rule labels (excluded volumes).
ABNORMAL_LESIONS: tuple[str, ...] = PAPER_ABNORMAL_LABELS
EXCLUDED_LESIONS: tuple[str, ...] = ("Posttreatment change", "Possible artifact")


def _positive_weights(weights: dict[Any, float], what: str) -> dict[Any, float]:
    if not weights:
        raise ValueError(f"{what} must not be empty")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"{what} weights must be >= 0 with a positive sum, got {weights}")
    return weights


def _known_positive_weights(
    weights: dict[str, float], allowed: tuple[str, ...], what: str, kind: str
) -> dict[str, float]:
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {kind} {unknown}; expected {allowed}")
    return _positive_weights(weights, what)


def _check_range(v: tuple[float, float], what: str) -> tuple[float, float]:
    if v[1] < v[0]:
        raise ValueError(f"{what} must be [low, high] with low <= high, got {list(v)}")
    return v


class ExternalSimulateConfig(Section):
    """The external test set: another institution, other protocols (paper 2.1.4, Table 2)."""

    sequence_mix: dict[str, float] = Field(
        {"T1TSE": 16, "T2TIRM": 80}, description="weights per sequence (Table 2: 16 vs 80 of 96)"
    )
    metastasis_fraction: float = Field(0.46, ge=0, le=1, description="Table 2: 44 of 96")
    metastases_per_volume: tuple[int, int] = Field((2, 6), description="[low, high] enhancing lesions")
    matrices: list[tuple[int, int]] = Field(
        [(256, 256), (384, 384)], description="recon matrices (k-space has 2x the rows)"
    )
    coils: dict[int, float] = Field({12: 0.5, 20: 0.5}, description="weights per receive-coil count")
    field_strength_t: float = Field(1.5, description="1.5 or 3.0")
    slab_offset_mm: tuple[float, float] = Field(
        (-40.0, -22.0), description="slab centre shift towards the feet: lower slices show orbits/sinuses"
    )
    site: int = Field(300, ge=0, description="site number in the file names")

    @field_validator("sequence_mix")
    @classmethod
    def _sequences(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(EXTERNAL_SEQUENCES))
        if unknown:
            raise ValueError(f"unknown external sequences {unknown}; expected {EXTERNAL_SEQUENCES}")
        return _positive_weights(v, "external.sequence_mix")

    @field_validator("coils")
    @classmethod
    def _coils(cls, v: dict[int, float]) -> dict[int, float]:
        if any(not 1 <= c <= 64 for c in v):
            raise ValueError(f"coil counts must be in 1..64, got {sorted(v)}")
        return _positive_weights(v, "external.coils")

    @field_validator("matrices")
    @classmethod
    def _matrices(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not v or any(not (16 <= h <= 1024 and 16 <= w <= 1024) for h, w in v):
            raise ValueError(f"matrices must be non-empty, each side in 16..1024, got {v}")
        return v

    @field_validator("field_strength_t")
    @classmethod
    def _field(cls, v: float) -> float:
        if v not in (1.5, 3.0):
            raise ValueError(f"field strength must be 1.5 or 3.0 T, got {v}")
        return v

    @field_validator("metastases_per_volume")
    @classmethod
    def _metastases(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1:
            raise ValueError("a metastasis volume needs at least one lesion")
        return _check_range(v, "metastases_per_volume")

    @field_validator("slab_offset_mm")
    @classmethod
    def _slab(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, "slab_offset_mm")


class AcquisitionEffectsConfig(Section):
    """Acquisition effects of clinical scans (``simulate.acquisition_effects``); levels and their sources:
    ``docs/simulated-data-acquisition.md`` "Acquisition effects". ``enabled: false`` gives the effect-free
    simulator byte for byte."""

    enabled: bool = Field(True, description="master switch of every effect below")
    phase_resolution: tuple[float, float] = Field(
        (0.75, 1.0),
        description="[low, high] acquired fraction of the phase-encode columns (zero-filled: Gibbs)",
    )
    partial_fourier: dict[float, float] = Field(
        {1.0: 0.7, 0.875: 0.3}, description="weights per partial-Fourier fraction (1.0 = full, 0.875 = 7/8)"
    )
    motion_fraction: float = Field(0.15, ge=0, le=1, description="fraction of volumes with head motion")
    motion_events: tuple[int, int] = Field(
        (1, 3), description="[low, high] sudden movements per moving volume"
    )
    motion_translation_mm: float = Field(
        1.5, ge=0, le=20, description="std of each movement's shift per axis"
    )
    motion_rotation_deg: float = Field(
        1.5, ge=0, le=20, description="std of each movement's in-plane rotation"
    )
    flow_fraction: dict[str, float] = Field(
        {
            "AXT1POST": 0.5,
            "AXT1": 0.3,
            "AXT1PRE": 0.3,
            "T1TSE": 0.3,
            "AXFLAIR": 0.15,
            "AXT2": 0.15,
            "T2TIRM": 0.15,
        },
        description="fraction of volumes per sequence with pulsatile flow ghosts of the sagittal sinus",
    )
    flow_depth: tuple[float, float] = Field((0.3, 0.9), description="[low, high] cardiac modulation depth")
    flow_phase_rad: float = Field(1.0, ge=0, le=3.2, description="peak velocity-induced phase of the flow")
    cardiac_period_ms: tuple[float, float] = Field((700.0, 1100.0), description="[low, high] R-R interval")

    @field_validator("phase_resolution")
    @classmethod
    def _phase_resolution(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.25 <= v[0] <= v[1] <= 1.0:
            raise ValueError(
                f"phase_resolution must be [low, high] with 0.25 <= low <= high <= 1, got {list(v)}"
            )
        return v

    @field_validator("partial_fourier")
    @classmethod
    def _partial_fourier(cls, v: dict[float, float]) -> dict[float, float]:
        bad = sorted(f for f in v if not 0.5 <= f <= 1.0)
        if bad:
            raise ValueError(f"partial_fourier fractions must be in [0.5, 1], got {bad}")
        return _positive_weights(v, "partial_fourier")

    @field_validator("flow_fraction")
    @classmethod
    def _flow_fraction(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = SIMULATED_SEQUENCES + EXTERNAL_SEQUENCES
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            raise ValueError(f"unknown sequences {unknown} in flow_fraction; expected {allowed}")
        bad = {k: f for k, f in v.items() if not 0 <= f <= 1}
        if bad:
            raise ValueError(f"flow_fraction values must be in [0, 1], got {bad}")
        return v

    @field_validator("motion_events")
    @classmethod
    def _motion_events(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] > 20:
            raise ValueError(f"motion_events must be [low, high] in 0..20, got {list(v)}")
        return _check_range(v, "motion_events")

    @field_validator("flow_depth")
    @classmethod
    def _flow_depth(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0 or v[1] > 1:
            raise ValueError(f"flow_depth must be [low, high] in [0, 1], got {list(v)}")
        return _check_range(v, "flow_depth")

    @field_validator("cardiac_period_ms")
    @classmethod
    def _cardiac(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 200 or v[1] > 3000:
            raise ValueError(f"cardiac_period_ms must be [low, high] in 200..3000 ms, got {list(v)}")
        return _check_range(v, "cardiac_period_ms")


#: Named presets: overrides of :class:`SimulateConfig`, each with what it measured when last run.
SIMULATE_PRESETS = PresetTable(
    "simulate",
    {
        # The demo dataset: every Table-1 cell filled with >= 3 volumes (>= 1 excluded), 4-8 coils,
        # 8 slices. Weighted towards the three labelled sequences so each (class, sequence) stratum has
        # 12-13 volumes and the 70/15/15 split leaves 2 abnormal and 2 normal test volumes per sequence
        # (with 3 per stratum, one test volume per sequence decided the downstream AUROC). 8 slices keep
        # the simulation time down.
        # Measured (2 shared CPU cores, 2 workers): see docs/simulated-data-acquisition.md "Presets".
        "demo": {
            "volumes": 96,
            "external_volumes": 6,
            "n_slices": 8,
            "coils": {4: 0.85, 8: 0.15},
            "sequence_mix": {"AXFLAIR": 0.27, "AXT1": 0.27, "AXT1POST": 0.30, "AXT1PRE": 0.04, "AXT2": 0.12},
            "class_fractions": {"normal": 0.45, "abnormal": 0.45, "excluded": 0.03, "unlabeled": 0.07},
            "external": {"coils": {6: 1.0}},
        },
        # The paper's protocol at a scale 2 CPU cores finish in the reproduce budget; 4 coils keep the raw
        # data near 80 MB per volume. Sequences and classes follow the paper's Table 1 (labelled AXFLAIR and
        # AXT1 are ~19 % and ~17 % of its patches, AXT2 ~38 %), not the raw fastMRI mix, so every labelled
        # cell gets tens of volumes. Measured: see docs/simulated-data-acquisition.md "Presets".
        "reproduce": {
            "volumes": 200,
            "external_volumes": 48,
            "n_slices": 12,
            "coils": {4: 1.0},
            "sequence_mix": {"AXFLAIR": 0.19, "AXT1": 0.17, "AXT1POST": 0.22, "AXT1PRE": 0.04, "AXT2": 0.38},
            "class_fractions": {"normal": 0.4, "abnormal": 0.4, "excluded": 0.06, "unlabeled": 0.14},
            "external": {"coils": {6: 1.0}},
        },
    },
)


class SimulateConfig(Section):
    """Settings of the simulate stage (``magphase simulate``)."""

    PRESETS: ClassVar[PresetTable] = SIMULATE_PRESETS
    preset: Literal["demo", "reproduce"] | None = Field(
        None, description="named override set applied to every field not set explicitly"
    )
    volumes: int = Field(40, ge=0, le=1_000_000, description="training-like volumes (fastMRI brain)")
    external_volumes: int = Field(0, ge=0, le=100_000, description="external test-set volumes")
    seed: int | None = Field(None, description="None: the run's global seed")
    matrix: tuple[int, int] = Field(
        (320, 320), description="recon matrix (H rows = readout, W); k-space 2H x W"
    )
    fov_mm: tuple[float, float] = (220.0, 220.0)
    n_slices: int = Field(
        16, ge=1, le=64, description="slices per volume (upper end when n_slices_min is set)"
    )
    n_slices_min: int | None = Field(
        None, ge=1, le=64, description="draw each volume's slices in [min, n_slices]"
    )
    slice_thickness_mm: float = Field(5.0, gt=0, le=20)
    slice_gap_mm: float = Field(1.0, ge=0, le=20)
    coils: dict[int, float] = Field(
        {4: 0.2, 8: 0.05, 12: 0.05, 16: 0.45, 20: 0.25}, description="weights per receive-coil count"
    )
    snr: float = Field(30.0, gt=0, le=1000, description="brain-average SNR of an optimal combination at 3 T")
    snr_spread: float = Field(0.2, ge=0, le=1, description="log-normal spread of the per-volume SNR")
    snr_factor_1p5t: float = Field(0.75, gt=0, le=2, description="SNR at 1.5 T relative to 3 T")
    field_strengths_t: dict[float, float] = Field(
        {1.5: 0.4, 3.0: 0.6}, description="weights per field strength"
    )
    sequence_mix: dict[str, float] = Field(
        {"AXT2": 0.40, "AXFLAIR": 0.07, "AXT1POST": 0.35, "AXT1": 0.06, "AXT1PRE": 0.12},
        description="fastMRI brain sequence mix (weights)",
    )
    class_fractions: dict[str, float] = Field(
        {"normal": 0.3, "abnormal": 0.35, "excluded": 0.1, "unlabeled": 0.25},
        description="class weights of annotatable sequences (AXFLAIR, AXT1 are always annotated; "
        "AXT2, AXT1PRE never)",
    )
    min_volumes_per_cell: int = Field(
        3, ge=0, le=100, description="volumes per filled (class, sequence) cell of Table 1 before the mix"
    )
    lesion_weights: dict[str, float] = Field(
        {
            "Nonspecific white matter lesion": 0.32,
            "Nonspecific lesion": 0.2,
            "Mass": 0.15,
            "Encephalomalacia": 0.09,
            "Lacunar infarct": 0.09,
            "Extra-axial mass": 0.09,
            "Likely cysts": 0.06,
        },
        description="label weights of abnormal lesions (fastMRI+ frequencies, rare ones boosted)",
    )
    lesions_per_volume: tuple[int, int] = Field((1, 4), description="[low, high] lesions per abnormal volume")
    lesion_model: Literal["fastmri_plus", "config"] = Field(
        "fastmri_plus",
        description="abnormal volumes: labels, lesion counts and sizes drawn from the statistics fitted to "
        "the real fastMRI+ brain.csv per sequence (simulate/findings.py), or from lesion_weights, "
        "lesions_per_volume and each label's built-in size range",
    )
    excluded_normal_for_age: float = Field(
        0.3, ge=0, le=1, description="fraction of excluded volumes that also carry 'Normal for age'"
    )
    sites: tuple[int, int] = Field((200, 210), description="[first, last] site numbers in file names")
    signal_level: float = Field(1e-4, gt=0, description="mean brain magnitude in k-space units")
    workers: int = Field(1, ge=1, le=512, description="parallel processes (one volume each)")
    external: ExternalSimulateConfig = ExternalSimulateConfig()
    acquisition_effects: AcquisitionEffectsConfig = AcquisitionEffectsConfig()

    @field_validator("coils")
    @classmethod
    def _coils(cls, v: dict[int, float]) -> dict[int, float]:
        if any(not 1 <= c <= 64 for c in v):
            raise ValueError(f"coil counts must be in 1..64, got {sorted(v)}")
        return _positive_weights(v, "coils")

    @field_validator("field_strengths_t")
    @classmethod
    def _fields(cls, v: dict[float, float]) -> dict[float, float]:
        bad = sorted(b for b in v if b not in (1.5, 3.0))
        if bad:
            raise ValueError(f"field strengths must be 1.5 or 3.0 T, got {bad}")
        return _positive_weights(v, "field_strengths_t")

    @field_validator("sequence_mix")
    @classmethod
    def _sequences(cls, v: dict[str, float]) -> dict[str, float]:
        return _known_positive_weights(v, SIMULATED_SEQUENCES, "sequence_mix", "sequences")

    @field_validator("class_fractions")
    @classmethod
    def _classes(cls, v: dict[str, float]) -> dict[str, float]:
        return _known_positive_weights(v, VOLUME_CLASSES, "class_fractions", "classes")

    @field_validator("lesion_weights")
    @classmethod
    def _lesions(cls, v: dict[str, float]) -> dict[str, float]:
        return _known_positive_weights(v, ABNORMAL_LESIONS, "lesion_weights", "lesion labels")

    @field_validator("matrix")
    @classmethod
    def _matrix(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (16 <= v[0] <= 1024 and 16 <= v[1] <= 1024):
            raise ValueError(f"matrix sides must be in 16..1024, got {list(v)}")
        return v

    @field_validator("lesions_per_volume")
    @classmethod
    def _lesion_count(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1:
            raise ValueError("an abnormal volume needs at least one lesion")
        return _check_range(v, "lesions_per_volume")

    @field_validator("sites")
    @classmethod
    def _sites(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0:
            raise ValueError("site numbers must be >= 0")
        return _check_range(v, "sites")

    @model_validator(mode="after")
    def _slices(self) -> SimulateConfig:
        if self.n_slices_min is not None and self.n_slices_min > self.n_slices:
            raise ValueError(f"n_slices_min={self.n_slices_min} exceeds n_slices={self.n_slices}")
        return self


__all__ = [
    "ABNORMAL_LESIONS",
    "AcquisitionEffectsConfig",
    "EXCLUDED_LESIONS",
    "EXTERNAL_SEQUENCES",
    "SIMULATE_PRESETS",
    "SIMULATED_SEQUENCES",
    "VOLUME_CLASSES",
    "ExternalSimulateConfig",
    "SimulateConfig",
]
