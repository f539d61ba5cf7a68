"""Finding statistics fitted to the real fastMRI+ brain annotations, and the simulator's draws from them.

The fit (:func:`fit_findings`, run as ``python -m magphase.simulate.findings BRAIN_CSV``) reads a
fastMRI+ ``brain.csv`` with the project's own reader and keeps, for the volumes whose class is
abnormal (paper 2.1.1):

- per sequence: the sets of distinct abnormal labels the volumes carry and how often each set occurs
  (so each label's incidence and their co-occurrence; the mix differs by sequence: white matter
  lesions lead on AXFLAIR, masses and nonspecific lesions on AXT1 / AXT1POST);
- per label: the box size sqrt(width * height) in pixels of the 320 x 320 image (percentiles), boxes
  per volume, boxes per annotated slice and annotated slices per volume (probability tables).

The result is package data (``fastmri_plus_findings.json``, with the CSV's MIT licence note) that
:func:`load_findings` reads; nothing reads the CSV at simulation time. :func:`annotation_statistics`
gives the three distributions the benchmark compares between a simulated and the real CSV.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magphase.config.labels import PAPER_ABNORMAL_LABELS
from magphase.io.annotations import AnnotationSet, read_annotations
from magphase.utils.atomic import atomic_write_text

FINDINGS_FILE = Path(__file__).with_name("fastmri_plus_findings.json")
#: Percentiles kept of each label's box-size distribution.
SIZE_PERCENTILES: tuple[float, ...] = tuple(float(p) for p in range(0, 101, 5))
#: Joins the labels of one volume's label set in the fitted file.
LABEL_SEPARATOR = " + "
#: Image side the fastMRI+ boxes are drawn on (fastMRI brain reconstructions are 320 x 320).
ANNOTATION_MATRIX = 320
LICENCE_NOTE = (
    "Derived from fastMRI+ Annotations/brain.csv (github.com/microsoft/fastmri-plus, commit 67ed9a6), "
    "MIT License, Copyright (c) Microsoft Corporation."
)


def _pmf(values: list[int]) -> dict[str, float]:
    counts = Counter(int(v) for v in values)
    total = sum(counts.values())
    return {str(k): counts[k] / total for k in sorted(counts)}


@dataclass(frozen=True)
class AnnotationStatistics:
    """The distributions a set of annotations is compared on (one value per box / slice / volume)."""

    box_size_px: np.ndarray  # sqrt(width * height) of every abnormal box
    boxes_per_slice: np.ndarray  # abnormal boxes on each annotated slice
    slices_per_volume: np.ndarray  # annotated slices of each abnormal volume


def _abnormal_boxes(annotations: AnnotationSet, sequence: str | None = None) -> dict[str, list]:
    return {
        stem: annotations.abnormal_boxes(stem)
        for stem in annotations.files(label="abnormal", sequence=sequence)
        if annotations.abnormal_boxes(stem)
    }


def annotation_statistics(annotations: AnnotationSet, sequence: str | None = None) -> AnnotationStatistics:
    """Box sizes, boxes per annotated slice and annotated slices per volume of the abnormal volumes."""
    sizes, per_slice, per_volume = [], [], []
    for boxes in _abnormal_boxes(annotations, sequence).values():
        sizes.extend(float(np.sqrt(b.width * b.height)) for b in boxes)
        slices = Counter(b.slice for b in boxes)
        per_slice.extend(slices.values())
        per_volume.append(len(slices))
    return AnnotationStatistics(
        np.asarray(sizes, np.float64), np.asarray(per_slice, np.int64), np.asarray(per_volume, np.int64)
    )


def fit_findings(brain_csv: str | Path, file_list: str | Path | None = None) -> dict[str, Any]:
    """The statistics described in the module docstring, as a JSON-ready dict."""
    path = Path(brain_csv)
    annotations = read_annotations(path, file_list)
    labels = PAPER_ABNORMAL_LABELS
    per_sequence: dict[str, Any] = {}
    per_label_boxes: dict[str, list] = {label: [] for label in labels}
    per_label_volumes: dict[str, list[list]] = {label: [] for label in labels}
    sequences = sorted({v.sequence for v in annotations.volumes.values() if v.sequence})
    for sequence in sequences:
        volumes = _abnormal_boxes(annotations, sequence)
        if not volumes:
            continue
        n_labels, incidence, combos = [], Counter(), Counter()
        for boxes in volumes.values():
            present = sorted({b.label for b in boxes})
            n_labels.append(len(present))
            incidence.update(present)
            combos[LABEL_SEPARATOR.join(present)] += 1
            for label in present:
                mine = [b for b in boxes if b.label == label]
                per_label_boxes[label].extend(mine)
                per_label_volumes[label].append(mine)
        per_sequence[sequence] = {
            "abnormal_volumes": len(volumes),
            "labels_per_volume": _pmf(n_labels),
            "label_incidence": {label: incidence[label] / len(volumes) for label in labels},
            "label_sets": {k: combos[k] / len(volumes) for k in sorted(combos)},
        }
    per_label: dict[str, Any] = {}
    for label in labels:
        boxes = per_label_boxes[label]
        if not boxes:
            continue
        sizes = np.sqrt([b.width * b.height for b in boxes])
        slices = [Counter(b.slice for b in vol) for vol in per_label_volumes[label]]
        per_label[label] = {
            "boxes": len(boxes),
            "volumes": len(per_label_volumes[label]),
            "box_size_px_percentiles": [round(float(q), 3) for q in np.percentile(sizes, SIZE_PERCENTILES)],
            "boxes_per_volume": _pmf([len(vol) for vol in per_label_volumes[label]]),
            "boxes_per_slice": _pmf([n for c in slices for n in c.values()]),
            "slices_per_volume": _pmf([len(c) for c in slices]),
        }
    return {
        "source": path.name,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "licence": LICENCE_NOTE,
        "annotation_matrix": ANNOTATION_MATRIX,
        "size_percentiles": list(SIZE_PERCENTILES),
        "sequences": per_sequence,
        "labels": per_label,
    }


def _draw_pmf(pmf: dict[str, float], rng: np.random.Generator) -> int:
    keys = [int(k) for k in pmf]
    p = np.asarray(list(pmf.values()), np.float64)
    return int(keys[rng.choice(len(keys), p=p / p.sum())])


@dataclass(frozen=True)
class FindingStatistics:
    """The fitted statistics (:func:`fit_findings`) with the draws the simulator makes from them."""

    data: dict[str, Any]

    @property
    def sequences(self) -> tuple[str, ...]:
        return tuple(self.data["sequences"])

    def draw_labels(self, sequence: str, rng: np.random.Generator) -> tuple[str, ...]:
        """Distinct abnormal labels of one abnormal volume of ``sequence``: a label set drawn with the
        frequency it has in the real abnormal volumes of that sequence (so each label's incidence and
        their co-occurrence are kept)."""
        seq = self.data["sequences"].get(sequence)
        if seq is None:
            fitted = ", ".join(self.sequences)
            raise KeyError(f"no fitted findings for sequence {sequence!r}; fitted: {fitted}")
        sets = list(seq["label_sets"])
        p = np.asarray([seq["label_sets"][k] for k in sets], np.float64)
        return tuple(sets[rng.choice(len(sets), p=p / p.sum())].split(LABEL_SEPARATOR))

    def draw_box_size_px(self, label: str, rng: np.random.Generator, size: int | None = None):
        """Box sizes sqrt(w * h) in pixels of the 320 x 320 image, by inverse CDF of the percentiles."""
        q = np.asarray(self.data["labels"][label]["box_size_px_percentiles"], np.float64)
        u = rng.uniform(0.0, 100.0, size=size)
        return np.interp(u, self.data["size_percentiles"], q)

    def draw_boxes_per_volume(self, label: str, rng: np.random.Generator) -> int:
        """Number of boxes one volume carries of ``label``."""
        return _draw_pmf(self.data["labels"][label]["boxes_per_volume"], rng)


#: In-plane lesion diameter per drawn box size: a box is the bounding box of one slice's section of
#: the lesion, mostly smaller than its largest diameter. Calibrated with benchmarks/annotations.py so
#: that the simulated box sizes match the real ones (docs/simulated-data.md, "Findings").
#: Per label where the default missed (300 volumes, median box with 0.8 vs real): masses 18.7 vs 31.9 px,
#: encephalomalacia 51 vs 40 and lacunes 13.7 vs 11.6 (their annotated gliotic rims reach 1.2 - 1.6
#: radii), nonspecific lesions 23.5 vs 22.
SECTION_TO_DIAMETER: dict[str, float] = {
    "Mass": 1.3,
    "Encephalomalacia": 0.65,
    "Lacunar infarct": 0.7,
    "Nonspecific lesion": 0.75,
}
DEFAULT_SECTION_TO_DIAMETER = 0.8
#: fastMRI brain reconstructions: 320 x 320 pixels over about 220 mm.
ANNOTATION_PIXEL_MM = 220.0 / ANNOTATION_MATRIX


@dataclass(frozen=True, order=True)
class PlannedLesion:
    """One lesion of an abnormal volume: its label, in-plane radius and the slice it is centred on."""

    label: str
    radius_mm: float
    slice: int


def draw_abnormal_lesions(
    stats: FindingStatistics,
    sequence: str,
    rng: np.random.Generator,
    slice_pitch_mm: float,
    n_slices: int,
    max_per_label: int = 16,
) -> list[PlannedLesion]:
    """Every lesion of one abnormal volume of ``sequence``, sorted.

    Labels come from :meth:`FindingStatistics.draw_labels`. Per label, the annotated slices of the
    volume (count from the fitted table, a run of neighbouring slices) and its box count (at least one
    per slice) are drawn; lesions are added, centred on slices of that run, until the slices they are
    expected to cross reach the box count (at most ``max_per_label``). A lesion's size is a drawn box
    size kept with probability 1 / (slices it crosses): boxes over-represent large lesions, which
    appear on more slices.
    """
    lesions: list[PlannedLesion] = []
    for label in stats.draw_labels(sequence, rng):
        table = stats.data["labels"][label]
        n_annotated = min(_draw_pmf(table["slices_per_volume"], rng), n_slices)
        first = int(rng.integers(0, n_slices - n_annotated + 1))
        target = max(stats.draw_boxes_per_volume(label, rng), n_annotated)
        scale = SECTION_TO_DIAMETER.get(label, DEFAULT_SECTION_TO_DIAMETER) * ANNOTATION_PIXEL_MM
        covered, n = 0.0, 0
        while covered < target and n < max_per_label:
            diameter = float(stats.draw_box_size_px(label, rng)) * scale
            slices = 1.0 + diameter / slice_pitch_mm
            if rng.random() * slices > 1.0:
                continue  # size-biased by the box count: keep with probability 1 / slices
            # The first lesions cover the run's ends, so the run is annotated end to end.
            centre = (
                (first, first + n_annotated - 1)[n]
                if n < 2
                else int(rng.integers(first, first + n_annotated))
            )
            lesions.append(PlannedLesion(label, 0.5 * diameter, centre))
            covered += min(slices, n_annotated)
            n += 1
    return sorted(lesions)


@functools.cache
def load_findings(path: str | None = None) -> FindingStatistics:
    """The shipped fit (or another file written by :func:`fit_findings`)."""
    source = Path(path) if path is not None else FINDINGS_FILE
    return FindingStatistics(json.loads(source.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fit finding statistics to a fastMRI+ brain.csv.")
    parser.add_argument("brain_csv", type=Path)
    parser.add_argument("--file-list", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=FINDINGS_FILE)
    args = parser.parse_args(argv)
    fit = fit_findings(args.brain_csv, args.file_list)
    atomic_write_text(json.dumps(fit, indent=1) + "\n", args.out)
    print(f"wrote {args.out}: {len(fit['labels'])} labels over {', '.join(fit['sequences'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ANNOTATION_MATRIX",
    "FINDINGS_FILE",
    "AnnotationStatistics",
    "FindingStatistics",
    "PlannedLesion",
    "annotation_statistics",
    "draw_abnormal_lesions",
    "fit_findings",
    "load_findings",
]
