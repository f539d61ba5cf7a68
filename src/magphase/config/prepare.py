"""Config section `prepare` (owned by the prepare stage): raw volumes -> patch store (paper 2.1.2-2.1.4).

Counts are ``[low, high]`` ranges (inclusive); each volume draws its own count from its seeded
generator, so "between 10 and 40 patches per volume, depending on class and volume" (2.1.3).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from magphase.config.labels import LabelRules
from magphase.config.presets import Section


def _check_range(v: tuple[int, int]) -> tuple[int, int]:
    lo, hi = v
    if lo < 0 or hi < lo:
        raise ValueError(f"range must satisfy 0 <= low <= high, got [{lo}, {hi}]")
    return v


class BrainMaskConfig(Section):
    """Parameters of the magnitude brain mask (:mod:`magphase.mri.brainmask`); lengths in mm."""

    smoothing_mm: float = Field(0.7, ge=0)
    core_radius_fraction: float = Field(0.5, gt=0, le=1, description="central disc that sets the brain level")
    tissue_fraction: float = Field(0.75, gt=0, description="tissue = magnitude > this x brain level")
    scalp_depth_mm: float = Field(11.0, ge=0, description="head mask eroded by this bounds the brain")
    separation_mm: float = Field(2.0, ge=0, description="erosion that breaks bridges through CSF/bone")
    keep_fraction: float = Field(0.2, ge=0, le=1, description="keep components >= this x the central one")
    closing_mm: float = Field(2.75, ge=0, description="bridges sulci")
    shrink_mm: float = Field(0.7, ge=0, description="final erosion (keeps the mask inside the brain)")
    min_area_fraction: float = Field(0.02, ge=0, le=1, description="smaller masks count as no brain")
    max_head_fraction: float = Field(0.9, gt=0, le=1, description="a larger 'head' is noise, not anatomy")


class SplitConfig(Section):
    """Volume-level split fractions (train, val, test)."""

    labelled: tuple[float, float, float] = (0.70, 0.15, 0.15)
    unlabeled: tuple[float, float, float] = (0.95, 0.025, 0.025)
    min_volumes_per_split: int = Field(
        1, ge=0, description="every split of a stratum with >= 3x this many volumes gets at least this many"
    )
    stratify_findings: bool = Field(
        True,
        description="spread each abnormal finding type (a volume's most frequent abnormal box label) over "
        "the splits in proportion, so that no split holds only one kind of lesion",
    )

    @field_validator("labelled", "unlabeled")
    @classmethod
    def _sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be >= 0 and sum to 1, got {v}")
        return v


class ExternalConfig(Section):
    """External test preprocessing (2.1.4): k-space to ``matrix``, centre patches of a grid."""

    matrix: tuple[int, int] = (320, 320)
    grid: int = Field(4, ge=1, description="patches per axis of the overlapping grid")
    stride: int = Field(75, ge=1)
    keep: int = Field(2, ge=1, description="centre patches kept per axis (2 -> the 4 centre patches)")
    label_map: dict[str, str] = Field(
        default_factory=lambda: {
            "healthy": "normal",
            "normal": "normal",
            "metastasis": "abnormal",
            "abnormal": "abnormal",
        },
        description="volume label in the labels CSV (case-insensitive) -> patch class",
    )

    @model_validator(mode="after")
    def _keep_fits(self) -> ExternalConfig:
        if self.keep > self.grid or (self.grid - self.keep) % 2:
            raise ValueError(f"keep={self.keep} must be <= grid={self.grid} and centred (same parity)")
        return self


class PrepareConfig(Section):
    """Settings of the prepare stage (the run seed and device come from the top-level config)."""

    labels: LabelRules = LabelRules()
    min_brain_fraction: float = Field(
        0.8, ge=0, le=1, description="patch kept if >= this inside the brain mask"
    )
    min_box_overlap: float = Field(
        0.25, gt=0, le=1, description="box patch must cover >= this of the box area"
    )
    normal_patches: tuple[int, int] = Field((30, 40), description="patches per normal volume")
    unlabeled_patches: tuple[int, int] = Field((10, 10), description="patches per unlabeled volume")
    abnormal_box_patches: tuple[int, int] = Field(
        (15, 30),
        description="box-derived patches per abnormal volume (clip of total box area / box_area_per_patch)",
    )
    box_area_per_patch: float = Field(
        50.0, gt=0, description="box area (pixels) per box patch: patches grow in proportion to lesion area"
    )
    abnormal_volume_normal_patches: tuple[int, int] = Field(
        (5, 10), description="normal patches from box-free regions of each abnormal volume"
    )
    box_slice_margin: int = Field(
        1, ge=0, description="box-free means no box on this slice or within N slices"
    )
    box_pixel_margin: int = Field(0, ge=0, description="... and not within N pixels of a box")
    brain_mask: BrainMaskConfig = BrainMaskConfig()
    splits: SplitConfig = SplitConfig()
    external: ExternalConfig = ExternalConfig()
    espirit: dict[str, Any] = Field(
        default_factory=dict, description="forwarded to magphase.mri.espirit.espirit_maps (calib_size, ...)"
    )
    readout_oversampling: int = Field(2, ge=1, description="fastMRI brain k-space is 2x oversampled")
    nifti: bool = Field(False, description="also export combined volumes (magnitude, phase) as NIfTI")
    keep_masks: bool = Field(True, description="store each volume's brain mask in its per-volume file")

    @field_validator(
        "normal_patches", "unlabeled_patches", "abnormal_box_patches", "abnormal_volume_normal_patches"
    )
    @classmethod
    def _ranges(cls, v: tuple[int, int]) -> tuple[int, int]:
        return _check_range(v)
