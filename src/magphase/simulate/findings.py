"""Finding statistics fitted to the real fastMRI+ brain annotations, and the simulator's draws from them.

The fit (:func:`fit_findings`, run as ``python -m magphase.simulate.findings BRAIN_CSV``) reads a
fastMRI+ ``brain.csv`` with the project's own reader and keeps, for the volumes whose class is
abnormal (paper 2.1.1):

- per sequence: the sets of distinct abnormal labels the volumes carry and how often each set occurs
  (so each label's incidence and their co-occurrence; the mix differs by sequence: white matter
  lesions lead on AXFLAIR, masses and nonspecific lesions on AXT1 / AXT1POST);
- per sequence, the **companion findings** of the catalogue (:data:`COMPANION_LABELS`: edema,
  craniotomy, posttreatment change, dural thickening, enlarged ventricles, resection cavity, possible
  artifact) that real abnormal volumes carry beside their abnormal labels (``finding_sets``: the whole
  set of catalogue labels of each abnormal volume, so an edema box goes with the mass it surrounds and
  a craniotomy with the resection under it), and the catalogue label sets of the EXCLUDED volumes
  (``excluded_sets``; ``""`` for excluded volumes whose out-of-rule labels are only study-level or
  outside the catalogue, with those study-level labels in ``excluded_study_labels``);
- per label of the catalogue: the box size sqrt(width * height) in pixels of the 320 x 320 image
  (percentiles), boxes per volume, boxes per annotated slice and annotated slices per volume
  (probability tables), over all sequences and, in ``by_sequence``, per sequence where at least
  :data:`MIN_VOLUMES_PER_TABLE` volumes carry the label (the same label is boxed differently per
  sequence: AXT1POST lesions on fewer slices and in smaller boxes than on AXT1).

The result is package data (``fastmri_plus_findings.json``, with the CSV's MIT licence note) that
:func:`load_findings` reads; nothing reads the CSV at simulation time. :func:`annotation_statistics`
gives the three distributions the benchmark compares between a simulated and the real CSV.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
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
#: fastMRI+ box labels outside the paper's abnormal class that the simulator renders: the common
#: companions of abnormal findings in the real CSV (about 55 % of its boxes) and the findings of most
#: excluded volumes. A volume carrying one of them and no abnormal label is excluded (paper 2.1.1).
COMPANION_LABELS: tuple[str, ...] = (
    "Edema",
    "Craniotomy",
    "Posttreatment change",
    "Dural thickening",
    "Enlarged ventricles",
    "Resection cavity",
    "Possible artifact",
)
#: Every box label the simulator renders from the fitted statistics.
CATALOGUE_LABELS: tuple[str, ...] = (*PAPER_ABNORMAL_LABELS, *COMPANION_LABELS)
#: A per-sequence table (slices per volume) needs at least this many volumes, else the label's pooled one.
MIN_VOLUMES_PER_TABLE = 10
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


def _catalogue_boxes(annotations: AnnotationSet, cls: str, sequence: str) -> dict[str, list]:
    """Boxes of the catalogue labels of every volume of class ``cls`` and ``sequence``."""
    catalogue = set(CATALOGUE_LABELS)
    return {
        stem: [b for b in annotations.volumes[stem].boxes if b.label in catalogue]
        for stem in annotations.files(label=cls, sequence=sequence)
    }


def _label_table(boxes: list, volumes: list[list]) -> dict[str, Any]:
    sizes = np.sqrt([b.width * b.height for b in boxes])
    slices = [Counter(b.slice for b in vol) for vol in volumes]
    return {
        "boxes": len(boxes),
        "volumes": len(volumes),
        "box_size_px_percentiles": [round(float(q), 3) for q in np.percentile(sizes, SIZE_PERCENTILES)],
        "boxes_per_volume": _pmf([len(vol) for vol in volumes]),
        "boxes_per_slice": _pmf([n for c in slices for n in c.values()]),
        "slices_per_volume": _pmf([len(c) for c in slices]),
    }


def fit_findings(brain_csv: str | Path, file_list: str | Path | None = None) -> dict[str, Any]:
    """The statistics described in the module docstring, as a JSON-ready dict."""
    path = Path(brain_csv)
    annotations = read_annotations(path, file_list)
    labels = PAPER_ABNORMAL_LABELS
    per_sequence: dict[str, Any] = {}
    label_boxes: dict[str, list] = {label: [] for label in CATALOGUE_LABELS}
    label_volumes: dict[str, dict[str, list[list]]] = {label: {} for label in CATALOGUE_LABELS}
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
        findings, companion = Counter(), Counter()
        for boxes in _catalogue_boxes(annotations, "abnormal", sequence).values():
            present = sorted({b.label for b in boxes})
            findings[LABEL_SEPARATOR.join(present)] += 1
            companion.update(label for label in present if label in COMPANION_LABELS)
        excluded = _catalogue_boxes(annotations, "excluded", sequence)
        excluded_sets, study = Counter(), Counter()
        for stem, boxes in excluded.items():
            key = LABEL_SEPARATOR.join(sorted({b.label for b in boxes}))
            excluded_sets[key] += 1
            if not key:  # the labels that exclude it (a normal marker alone would make it normal)
                labels_here = set(annotations.volumes[stem].study_labels)
                study.update(x for x in labels_here if not annotations.rules.is_normal_study(x))
        for cls in ("abnormal", "excluded"):
            for boxes in _catalogue_boxes(annotations, cls, sequence).values():
                for label in {b.label for b in boxes}:
                    mine = [b for b in boxes if b.label == label]
                    label_boxes[label].extend(mine)
                    label_volumes[label].setdefault(sequence, []).append(mine)
        n_excluded = max(len(excluded), 1)
        per_sequence[sequence] = {
            "abnormal_volumes": len(volumes),
            "labels_per_volume": _pmf(n_labels),
            "label_incidence": {label: incidence[label] / len(volumes) for label in labels},
            "label_sets": {k: combos[k] / len(volumes) for k in sorted(combos)},
            "companion_incidence": {label: companion[label] / len(volumes) for label in COMPANION_LABELS},
            "finding_sets": {k: findings[k] / len(volumes) for k in sorted(findings)},
            "excluded_volumes": len(excluded),
            "excluded_sets": {k: excluded_sets[k] / n_excluded for k in sorted(excluded_sets)},
            "excluded_study_labels": {k: study[k] / max(excluded_sets[""], 1) for k in sorted(study)},
        }
    per_label: dict[str, Any] = {}
    for label in CATALOGUE_LABELS:
        if not label_boxes[label]:
            continue
        by_sequence = label_volumes[label]
        per_label[label] = _label_table(
            label_boxes[label], [v for vols in by_sequence.values() for v in vols]
        )
        per_label[label]["by_sequence"] = {
            sequence: _label_table([b for vol in vols for b in vol], vols)
            for sequence, vols in sorted(by_sequence.items())
            if len(vols) >= MIN_VOLUMES_PER_TABLE
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

    def draw_labels(
        self, sequence: str, rng: np.random.Generator, companions: bool = True
    ) -> tuple[str, ...]:
        """Distinct labels of one abnormal volume of ``sequence``: a label set drawn with the frequency
        it has in the real abnormal volumes of that sequence (so each label's incidence and their
        co-occurrence are kept). ``companions``: the whole catalogue set (``finding_sets``: abnormal
        labels with the edema, craniotomy, ... boxed beside them), else the abnormal labels alone."""
        seq = self._sequence(sequence)
        table = seq["finding_sets"] if companions and "finding_sets" in seq else seq["label_sets"]
        return self._draw_set(table, rng)

    def draw_excluded(
        self, sequence: str, rng: np.random.Generator
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(box labels, study-level labels) of one excluded volume of ``sequence``: its catalogue box
        labels drawn as a set with their real frequency; a volume drawn without catalogue boxes gets
        one study-level label instead (drawn from those of the real such volumes)."""
        seq = self._sequence(sequence)
        labels = self._draw_set(seq["excluded_sets"], rng)
        if labels:
            return labels, ()
        study = seq["excluded_study_labels"] or {COMPANION_LABELS[-1]: 1.0}
        names = list(study)
        p = np.asarray([study[k] for k in names], np.float64)
        return (), (names[rng.choice(len(names), p=p / p.sum())],)

    def table(self, label: str, sequence: str | None = None) -> dict[str, Any]:
        """The fitted per-label table (sizes, boxes per volume / slice, slices per volume): the
        sequence's own where at least :data:`MIN_VOLUMES_PER_TABLE` of its volumes carry the label,
        else the label's table over every sequence."""
        table = self.data["labels"][label]
        return table.get("by_sequence", {}).get(sequence) or table

    def slices_per_volume(self, label: str, sequence: str | None = None) -> dict[str, float]:
        """Annotated slices per volume of ``label`` (:meth:`table`)."""
        return self.table(label, sequence)["slices_per_volume"]

    def _sequence(self, sequence: str) -> dict[str, Any]:
        seq = self.data["sequences"].get(sequence)
        if seq is None:
            fitted = ", ".join(self.sequences)
            raise KeyError(f"no fitted findings for sequence {sequence!r}; fitted: {fitted}")
        return seq

    @staticmethod
    def _draw_set(table: dict[str, float], rng: np.random.Generator) -> tuple[str, ...]:
        sets = list(table)
        p = np.asarray([table[k] for k in sets], np.float64)
        drawn = sets[rng.choice(len(sets), p=p / p.sum())]
        return tuple(drawn.split(LABEL_SEPARATOR)) if drawn else ()

    def draw_box_size_px(
        self, label: str, rng: np.random.Generator, size: int | None = None, sequence: str | None = None
    ):
        """Box sizes sqrt(w * h) in pixels of the 320 x 320 image, by inverse CDF of the percentiles."""
        q = np.asarray(self.table(label, sequence)["box_size_px_percentiles"], np.float64)
        u = rng.uniform(0.0, 100.0, size=size)
        return np.interp(u, self.data["size_percentiles"], q)

    def box_size_quantile(self, label: str, q: float, sequence: str | None = None) -> float:
        """The ``q``-th percentile (0-100) of the label's fitted box size sqrt(w * h), pixels."""
        sizes = self.table(label, sequence)["box_size_px_percentiles"]
        return float(np.interp(q, self.data["size_percentiles"], sizes))

    def draw_boxes_on_slices(
        self, label: str, n_slices: int, rng: np.random.Generator, sequence: str | None = None
    ) -> np.ndarray:
        """Boxes of ``label`` on each of ``n_slices`` annotated slices: one fitted boxes-per-slice draw
        each (int array)."""
        pmf = self.table(label, sequence)["boxes_per_slice"]
        return np.array([_draw_pmf(pmf, rng) for _ in range(n_slices)], dtype=np.int64)


#: In-plane lesion diameter per drawn box size: a box is the bounding box of one slice's section of
#: the lesion, mostly smaller than its largest diameter. Calibrated with benchmarks/annotations.py so
#: that the simulated box sizes match the real ones (docs/simulated-data.md, "Findings").
#: Per label where the default missed (300 volumes, median box with 0.8 vs real): masses 18.7 vs 31.9 px,
#: encephalomalacia 51 vs 40 and lacunes 13.7 vs 11.6 (their annotated gliotic rims reach 1.2 - 1.6
#: radii), nonspecific lesions 23.5 vs 22.
SECTION_TO_DIAMETER: dict[str, float] = {
    # Findings along the skull are boxed as a band: a flap of 5-8 cm, a dural reaction over the convexity.
    "Craniotomy": 2.2,
    "Dural thickening": 1.5,
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
    """One lesion of a volume: its label, in-plane radius, the slice it is centred on, and the run of
    slices (first, last) its label is annotated on in this volume."""

    label: str
    radius_mm: float
    slice: int
    run: tuple[int, int] = (0, 0)


#: Companion findings rendered as ONE lesion per volume whatever their box count: the edema around a
#: mass, one craniotomy with its resection cavity and dural reaction, one (enlarged) ventricular system.
SINGLE_LESION_LABELS: frozenset[str] = frozenset(
    {"Edema", "Craniotomy", "Dural thickening", "Enlarged ventricles", "Resection cavity"}
)


#: An annotator boxes a lesion on the slices where its section is a fair part of its largest one, not
#: on the thin caps at its poles: fraction of the largest section's area below which a slice's section
#: gets no box (:func:`magphase.simulate.dataset.lesion_boxes`). Calibrated with
#: benchmarks/annotations.py against the real fastMRI+ slices per volume.
ANNOTATOR_MIN_SECTION = 0.25
#: Percentile of the label's box sizes up to which its first lesion grows to span its annotated run.
SPANNING_QUANTILE = 90.0
#: Half-height, in radii, of the slab where a sphere's section keeps ANNOTATOR_MIN_SECTION of its
#: largest area.
_SECTION_REACH = math.sqrt(1.0 - ANNOTATOR_MIN_SECTION)
#: Size draws for an extra lesion before it is shrunk to the slices that lack a box.
_MAX_SIZE_TRIES = 50


def draw_lesions(
    stats: FindingStatistics,
    labels: tuple[str, ...],
    sequence: str,
    rng: np.random.Generator,
    slice_pitch_mm: float,
    n_slices: int,
    max_per_label: int = 16,
) -> list[PlannedLesion]:
    """Every lesion of a volume carrying the distinct ``labels``, sorted.

    Per label, the annotated slices of the volume (count from the fitted table of the sequence, a run
    of neighbouring slices) and its boxes on each of them (a fitted boxes-per-slice draw each). The
    label's first lesion grows (up to the label's :data:`SPANNING_QUANTILE` box size) to span the run,
    centred on it, since a finding boxed on many slices is mostly one large lesion; if it cannot, the
    run is tiled from one end, each lesion reaching the slices where its section would be boxed. Then
    lesions are added, each at the slice whose drawn boxes exceed most those the lesions so far are
    expected to get, until no slice lacks one (at most ``max_per_label``; one for
    :data:`SINGLE_LESION_LABELS`): one slice with four white matter lesions, its neighbours with one,
    as annotators box them, not two on every slice. Apart from
    the spanning one, a lesion's size is a drawn box size kept with probability 1 / (slices it
    crosses), since boxes over-represent large lesions, which appear on more slices. Each lesion
    carries its label's run: the annotator model boxes the label on those slices
    (:func:`magphase.simulate.dataset.lesion_boxes`).
    """
    lesions: list[PlannedLesion] = []
    for label in labels:
        n_annotated = min(_draw_pmf(stats.slices_per_volume(label, sequence), rng), n_slices)
        first = int(rng.integers(0, n_slices - n_annotated + 1))
        run = np.arange(first, first + n_annotated)
        # Boxes per annotated slice drawn slice by slice: a volume boxed on few slices has few boxes.
        wanted = stats.draw_boxes_on_slices(label, n_annotated, rng, sequence)
        cap = 1 if label in SINGLE_LESION_LABELS else max_per_label
        scale = SECTION_TO_DIAMETER.get(label, DEFAULT_SECTION_TO_DIAMETER) * ANNOTATION_PIXEL_MM
        covered = np.zeros(n_annotated, bool)  # run slices some lesion of the label is boxed on
        expected = np.zeros(n_annotated)  # boxes each run slice is expected to get so far
        n = tries = 0
        while ((wanted - expected).max() > 0.5 or not covered.all()) and n < cap:
            spanning = n == 0 and cap > 1
            extra = cap > 1 and not spanning and covered.all()
            if extra:
                # Extra lesions go where the drawn boxes per slice still lack the most, and fit the
                # slices that lack one: a second mass boxed on one slice is a small one there, not a
                # large one that would add a box to every neighbouring slice as well.
                lacking = wanted - expected > 0.5
                centre_at = int(np.argmax(wanted - expected + rng.uniform(0.0, 0.1, n_annotated)))
                left = centre_at - next((k for k in range(centre_at, -1, -1) if not lacking[k]), -1) - 1
                right = next((k for k in range(centre_at, n_annotated) if not lacking[k]), n_annotated)
                fits = min(left, right - centre_at - 1) + 0.5  # largest half-height a that fits
            diameter = float(stats.draw_box_size_px(label, rng, sequence=sequence)) * scale
            if spanning:
                # The label's first lesion spans the run as far as the label's large lesions can:
                # one mass boxed on 6 slices is one lesion, not six small ones stacked.
                span = (n_annotated - 1) * slice_pitch_mm / _SECTION_REACH
                large = float(stats.box_size_quantile(label, SPANNING_QUANTILE, sequence)) * scale
                diameter = max(diameter, min(span, large))
            # Half-height, in slices, of the slab where its section keeps ANNOTATOR_MIN_SECTION of the
            # largest one (a sphere: |z| <= r sqrt(1 - f)), so the annotator boxes it there; reach:
            # the slices either side of its centre that surely qualify.
            a = 0.5 * diameter * _SECTION_REACH / slice_pitch_mm
            if extra and a > fits:
                tries += 1
                if tries < _MAX_SIZE_TRIES:
                    continue  # redraw: the label's sizes among those that fit
                a, diameter = fits, 2.0 * fits * slice_pitch_mm / _SECTION_REACH
            reach = int(a)
            if cap > 1 and not spanning and rng.random() * min(2 * reach + 1, n_annotated) > 1.0:
                continue  # size-biased by the box count: keep with probability 1 / boxes
            tries = 0
            if cap == 1:
                centre = first + n_annotated // 2
            elif spanning and 2 * reach + 1 >= n_annotated:
                centre = first + (n_annotated - 1 + int(rng.integers(0, 2))) // 2
            elif not extra:  # tile the run from its first uncovered slice
                centre = min(int(run[np.argmin(covered)]) + reach, int(run[-1]))
                if n == 0 and rng.random() < 0.5:  # or from its last, so neither end is favoured
                    centre = max(int(run[-1]) - reach, first)
            else:
                centre = int(run[centre_at])
            covered |= np.abs(run - centre) <= reach
            # Boxes it is expected to get: slice k of the run qualifies when |k - centre - u| <= a for
            # the lesion's offset u from the slice centre (about uniform in +-1/2 slice); at least
            # its own slice (lesion_boxes boxes its largest section).
            share = np.clip(a + 0.5 - np.abs(run - centre), 0.0, 1.0)
            share[run == centre] = 1.0
            expected += share
            lesions.append(PlannedLesion(label, 0.5 * diameter, centre, (first, first + n_annotated - 1)))
            n += 1
    return sorted(lesions)


def draw_abnormal_lesions(
    stats: FindingStatistics,
    sequence: str,
    rng: np.random.Generator,
    slice_pitch_mm: float,
    n_slices: int,
    max_per_label: int = 16,
    companions: bool = True,
) -> list[PlannedLesion]:
    """Every lesion of one abnormal volume of ``sequence`` (labels from
    :meth:`FindingStatistics.draw_labels`, then :func:`draw_lesions`)."""
    labels = stats.draw_labels(sequence, rng, companions)
    return draw_lesions(stats, labels, sequence, rng, slice_pitch_mm, n_slices, max_per_label)


def draw_excluded_lesions(
    stats: FindingStatistics, sequence: str, rng: np.random.Generator, slice_pitch_mm: float, n_slices: int
) -> tuple[list[PlannedLesion], tuple[str, ...]]:
    """(lesions, study-level labels) of one excluded volume of ``sequence``
    (:meth:`FindingStatistics.draw_excluded`, then :func:`draw_lesions`)."""
    labels, study = stats.draw_excluded(sequence, rng)
    return draw_lesions(stats, labels, sequence, rng, slice_pitch_mm, n_slices), study


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
    "CATALOGUE_LABELS",
    "COMPANION_LABELS",
    "FINDINGS_FILE",
    "AnnotationStatistics",
    "FindingStatistics",
    "PlannedLesion",
    "annotation_statistics",
    "draw_abnormal_lesions",
    "draw_excluded_lesions",
    "draw_lesions",
    "fit_findings",
    "load_findings",
]
