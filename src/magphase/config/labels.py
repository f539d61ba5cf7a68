"""Which fastMRI+ labels make a volume normal or abnormal (paper 2.1.1): the label rules as config.

The rules are data (a pydantic model any config section may hold); :mod:`magphase.io.annotations`
applies them to parsed CSV rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from magphase.config.presets import Section

#: Volume classes an annotation set assigns (``excluded`` volumes are dropped by prepare).
VOLUME_CLASSES: tuple[str, ...] = ("normal", "abnormal", "excluded", "unlabeled")
VolumeClass = Literal["normal", "abnormal", "excluded", "unlabeled"]


def normalize_label(label: str) -> str:
    """Matching key of a label: whitespace trimmed and collapsed, case folded."""
    return " ".join(label.split()).casefold()


#: fastMRI+ box labels of the paper's abnormal class (2.1.1); the simulator draws its abnormal lesions
#: from the same list, so simulated and real volumes are labelled by one rule.
PAPER_ABNORMAL_LABELS: tuple[str, ...] = (
    "Mass",
    "Extra-axial mass",
    "Nonspecific lesion",
    "Nonspecific white matter lesion",
    "Encephalomalacia",
    "Lacunar infarct",
    "Likely cysts",
)


class LabelRules(Section):
    """Which fastMRI+ labels make a volume normal or abnormal (paper 2.1.1). Matching is
    case-insensitive and whitespace-trimmed (:func:`normalize_label`).

    Attributes:
        normal_study_labels: study-level labels that mark a normal study.
        normal_image_labels: box (image-level) labels that mark a normal image.
        abnormal_labels: box labels that make a volume abnormal.
        normal_tolerated_labels: labels that may co-occur with a normal marker without excluding the
            volume. Empty by default: the paper excludes every label outside the two classes
            ("possible artifact", "posttreatment change"). Add e.g. ``"Motion artifact"`` to keep
            normal studies that also carry that study-level note.
        listed_without_rows: class of a volume listed in the file list with no row in the CSV
            (reviewed, no annotation at all). Default ``unlabeled``: the paper defines normal only
            by an explicit label, and every other normal brain study carries "Normal for age".
    """

    normal_study_labels: list[str] = ["Normal for age"]
    normal_image_labels: list[str] = ["Normal variant"]
    abnormal_labels: list[str] = list(PAPER_ABNORMAL_LABELS)
    normal_tolerated_labels: list[str] = []
    listed_without_rows: Literal["unlabeled", "normal", "excluded"] = "unlabeled"

    @field_validator(
        "normal_study_labels", "normal_image_labels", "abnormal_labels", "normal_tolerated_labels"
    )
    @classmethod
    def _labels_not_blank(cls, labels: list[str]) -> list[str]:
        if any(not label.strip() for label in labels):
            raise ValueError("labels must be non-empty strings")
        return labels

    @model_validator(mode="after")
    def _abnormal_disjoint_from_normal(self) -> LabelRules:
        abnormal = {normalize_label(x) for x in self.abnormal_labels}
        not_abnormal = {
            normalize_label(x)
            for x in (*self.normal_study_labels, *self.normal_image_labels, *self.normal_tolerated_labels)
        }
        overlap = sorted(abnormal & not_abnormal)
        if overlap:
            raise ValueError(f"labels both abnormal and normal/tolerated: {overlap}")
        return self

    def is_abnormal(self, label: str) -> bool:
        return normalize_label(label) in {normalize_label(x) for x in self.abnormal_labels}

    def is_normal_study(self, label: str) -> bool:
        return normalize_label(label) in {normalize_label(x) for x in self.normal_study_labels}

    def is_normal_image(self, label: str) -> bool:
        return normalize_label(label) in {normalize_label(x) for x in self.normal_image_labels}

    def is_tolerated(self, label: str) -> bool:
        return normalize_label(label) in {normalize_label(x) for x in self.normal_tolerated_labels}
