"""The simulated dataset: plan, parallel/sharded/resumable rendering, fastMRI+-format annotations.

Folder layout written by :func:`run_simulation` (``DIR`` = ``--out``)::

    DIR/file_brain_{SEQ}_{site}_{id}.h5       fastMRI multi-coil files (kspace, reconstruction_rss, header)
    DIR/truth/{stem}.h5                        ground-truth sidecars (magphase.simulate.acquisition)
    DIR/brain.csv, DIR/brain_file_list.csv     fastMRI+ annotations (written by the merge step)
    DIR/simulate_plan.json                     the plan (every volume's assignment) and its hash
    DIR/.fragments/{stem}.json                 per-volume annotation rows (merged into brain.csv)
    DIR/external/file_brain_{SEQ}_{site}_{id}.h5, DIR/external/truth/...   external test set
    DIR/external/labels.csv                    file,label,sequence (healthy | metastasis)
    DIR/external/facial_slices.csv             file,slice,facial (1 = orbits/sinuses visible)

Determinism: the plan is a function of ``(config, seed)``; volume ``i`` is rendered from seeds derived
from ``(seed, i)`` only, so its bytes do not depend on workers, shards or the order of completion.
Sharding: shard ``I/N`` renders volumes ``i % N == I``; each finished volume leaves a fragment, and
annotations are merged when every volume has one (by whichever shard finishes last, or by
``merge_annotations``), so concurrent shards never write the same file with different content.
Resume: a volume whose raw file opens, whose sidecar carries the same plan hash, and whose fragment
exists is kept; anything else (missing, truncated, from another plan) is rendered again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from magphase.config.simulate import (
    EXCLUDED_LESIONS,
    EXTERNAL_SEQUENCES,
    SIMULATED_SEQUENCES,
    SimulateConfig,
)
from magphase.conventions import LABELLED_SEQUENCES, UNLABELLED_SEQUENCES
from magphase.errors import ConfigError, DataError
from magphase.io.annotations import Box, StudyLabel, array_to_box, write_annotations
from magphase.io.fastmri import open_volume
from magphase.simulate.acquisition import (
    AcquisitionSettings,
    SimulatedAcquisition,
    SiteProfile,
    acquire,
    patient_id_for,
    read_truth_attrs,
    truth_path_for,
    write_acquisition,
)
from magphase.simulate.findings import (
    ANNOTATOR_MIN_SECTION,
    draw_abnormal_lesions,
    draw_excluded_lesions,
    load_findings,
)
from magphase.simulate.phantom import GroundTruthVolume, VolumeSpec, render_volume
from magphase.utils.atomic import atomic_write_text
from magphase.utils.seeds import derive_seed, derived_rng

logger = logging.getLogger(__name__)

PLAN_FILENAME = "simulate_plan.json"
FRAGMENTS_DIRNAME = ".fragments"
EXTERNAL_DIRNAME = "external"
NORMAL_FOR_AGE = "Normal for age"
#: Lesion label the phantom renders as a small enhancing metastasis (external set).
METASTASIS_LESION = "Metastasis"
#: Sequences x classes the paper's Table 1 fills (excluded volumes come from the annotated sequences).
TABLE1_CELLS: dict[str, tuple[str, ...]] = {
    "normal": LABELLED_SEQUENCES,
    "abnormal": LABELLED_SEQUENCES,
    "excluded": LABELLED_SEQUENCES,
    "unlabeled": ("AXT1POST", *UNLABELLED_SEQUENCES),
}
_TRAIN_ID_BASE = 6_100_000
_EXTERNAL_ID_BASE = 7_100_000
# Independent random streams derived from (seed, stream, index).
_STREAM_PLAN, _STREAM_SITE, _STREAM_RENDER, _STREAM_ACQUIRE = 1, 2, 3, 4


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return derived_rng(int(seed) & 0xFFFFFFFF, *keys)


def _derived_seed(seed: int, *keys: int) -> int:
    return derive_seed(int(seed) & 0xFFFFFFFF, *keys, bits=32)


def _weights(mapping: dict[Any, float]) -> tuple[list[Any], np.ndarray]:
    keys = list(mapping)
    w = np.array([float(mapping[k]) for k in keys])
    return keys, w / w.sum()


def allocate_counts(total: int, weights: np.ndarray, minimum: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``: ``minimum`` first, the rest towards ``total * weights``.

    Largest-remainder rounding of the shortfall ``max(total * w - minimum, 0)``. When the minima do not
    fit, they are lowered uniformly (3, 2, 1, 0 per cell) before anything else.
    """
    weights = np.asarray(weights, dtype=np.float64)
    minimum = np.asarray(minimum, dtype=np.int64).copy()
    while minimum.sum() > total:
        minimum = np.maximum(minimum - (minimum == minimum.max()), 0)
    rest = total - int(minimum.sum())
    want = np.maximum(total * weights - minimum, 0.0)
    if want.sum() <= 0:
        want = weights.copy()
    share = rest * want / want.sum()
    counts = minimum + np.floor(share).astype(np.int64)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class PlannedVolume:
    """One volume of the plan: everything needed to render and acquire it.

    ``volume_class`` is ``normal | abnormal | excluded | unlabeled`` (training-like set) or
    ``healthy | metastasis`` (external set). ``lesions`` are fastMRI+ labels handed to the phantom.
    """

    index: int
    stem: str
    sequence: str
    volume_class: str
    lesions: tuple[str, ...]
    normal_for_age: bool
    field_strength_t: float
    n_coils: int
    n_slices: int
    matrix: tuple[int, int]
    fov_mm: tuple[float, float]
    slice_thickness_mm: float
    slice_gap_mm: float
    slab_offset_mm: float
    site: int
    snr: float
    signal_level: float
    render_seed: int
    acquire_seed: int
    external: bool = False
    lesion_radii_mm: tuple[float, ...] = ()  # one per lesion (fitted sizes), or empty: built-in sizes
    lesion_slices: tuple[int, ...] = ()  # slice each fitted lesion is centred on, or empty
    study_labels: tuple[str, ...] = ()  # study-level labels beside "Normal for age" (excluded volumes)
    annotated_runs: tuple[tuple[str, int, int], ...] = ()  # (label, first, last) slices an annotator boxes

    def plan_hash(self) -> str:
        """Short hash of every field: a kept volume must have been made from the same assignment."""
        fields = asdict(self)
        for key in ("lesion_radii_mm", "lesion_slices", "study_labels", "annotated_runs"):
            if not fields[key]:
                del fields[key]  # volumes without fitted lesions keep the hash they had before
        blob = json.dumps(fields, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def label_runs(self) -> dict[str, tuple[int, int]]:
        """label -> (first, last) slice its boxes are drawn on (empty: every slice the lesion crosses)."""
        return {label: (first, last) for label, first, last in self.annotated_runs}

    def volume_spec(self) -> VolumeSpec:
        """The phantom's :class:`~magphase.simulate.phantom.VolumeSpec` of this volume."""
        return VolumeSpec(
            seed=self.render_seed,
            sequence=self.sequence,
            field_strength_t=self.field_strength_t,
            matrix=self.matrix,
            fov_mm=self.fov_mm,
            n_slices=self.n_slices,
            slice_thickness_mm=self.slice_thickness_mm,
            slice_gap_mm=self.slice_gap_mm,
            slab_offset_mm=self.slab_offset_mm,
            lesions=self.lesions,
            lesion_radii_mm=self.lesion_radii_mm,
            lesion_slices=self.lesion_slices,
        )


@dataclass
class SimulatedDatasetPlan:
    """Every volume's assignment for a config and seed (see :meth:`build`).

    Attributes:
        seed: the dataset seed.
        volumes: training-like volumes (fastMRI brain mix), index order.
        external: external test-set volumes.
        sites: site profiles by site number (scanner identity, field strength, coil former).
    """

    seed: int
    volumes: list[PlannedVolume]
    external: list[PlannedVolume]
    sites: dict[int, SiteProfile]

    @property
    def all_volumes(self) -> list[PlannedVolume]:
        return [*self.volumes, *self.external]

    def plan_hash(self) -> str:
        """Hash of every volume's assignment and of the acquisition effects its sites apply, so a
        folder simulated with other effects is refused instead of resumed with stale volumes."""
        blob = "".join(v.plan_hash() for v in self.all_volumes)
        effects = {str(k): asdict(s.effects) for k, s in sorted(self.sites.items()) if s.effects.enabled}
        if effects:  # effects off: the hash datasets had before effects existed
            blob += json.dumps(effects, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def volume_identity(self, volume: PlannedVolume) -> str:
        """:func:`volume_identity` of one of the plan's volumes."""
        return volume_identity(volume, self.sites[volume.site])

    def shard(self, index: int, count: int) -> list[PlannedVolume]:
        """Volumes of shard ``index`` of ``count``: positions ``i % count == index`` in all_volumes."""
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        return [v for i, v in enumerate(self.all_volumes) if i % count == index]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """``{sequence: {class: volumes}}`` over both sets."""
        out: dict[str, dict[str, int]] = {}
        for v in self.all_volumes:
            out.setdefault(v.sequence, Counter())[v.volume_class] += 1
        return {k: dict(c) for k, c in out.items()}

    @classmethod
    def build(cls, cfg: SimulateConfig, seed: int) -> SimulatedDatasetPlan:
        """Assign sequence, class, lesions, field strength, coils, slices, site, SNR and a file name to
        every volume (``cfg`` already resolved with its preset).

        Classes and sequences: each (class, sequence) cell of :data:`TABLE1_CELLS` gets
        ``min_volumes_per_cell`` volumes first (1 for excluded cells), lowered uniformly when ``volumes``
        is too small, and the rest follow ``sequence_mix x class_fractions`` (AXFLAIR and AXT1 are
        always annotated, AXT2 and AXT1PRE never, as in fastMRI+). The cell list is then shuffled, so
        any prefix of indices mixes classes.
        """
        sites = _build_sites(cfg, seed)
        volumes = _plan_training(cfg, seed, sites)
        external = _plan_external(cfg, seed, start_index=len(volumes))
        if external:
            site = cfg.external.site
            sites[site] = SiteProfile.simulated(
                site,
                cfg.external.field_strength_t,
                _rng(seed, _STREAM_SITE, site),
                institution="magphase simulated external institution",
            )
        return cls(seed=int(seed), volumes=volumes, external=external, sites=sites)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "plan_hash": self.plan_hash(),
            "volumes": [asdict(v) for v in self.volumes],
            "external": [asdict(v) for v in self.external],
            "sites": {str(k): _site_to_json(s) for k, s in self.sites.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimulatedDatasetPlan:
        def volume(d: dict[str, Any]) -> PlannedVolume:
            d = dict(d)
            d["lesions"] = tuple(d["lesions"])
            d["lesion_radii_mm"] = tuple(d.get("lesion_radii_mm", ()))
            d["lesion_slices"] = tuple(d.get("lesion_slices", ()))
            d["study_labels"] = tuple(d.get("study_labels", ()))
            d["annotated_runs"] = tuple((str(a), int(b), int(c)) for a, b, c in d.get("annotated_runs", ()))
            d["matrix"] = tuple(d["matrix"])
            d["fov_mm"] = tuple(d["fov_mm"])
            return PlannedVolume(**d)

        return cls(
            seed=int(data["seed"]),
            volumes=[volume(d) for d in data["volumes"]],
            external=[volume(d) for d in data["external"]],
            sites={int(k): _site_from_json(s) for k, s in data["sites"].items()},
        )


def volume_identity(volume: PlannedVolume, site: SiteProfile) -> str:
    """What determines one volume's raw file: its assignment and its site's acquisition effects
    (identifies a prepared volume whose raw file was deleted, ``pipeline.keep_raw``)."""
    blob = volume.plan_hash() + json.dumps(asdict(site.effects), sort_keys=True)
    return "simulated:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _site_to_json(site: SiteProfile) -> dict[str, Any]:
    d = asdict(site)
    d["coil_design"] = asdict(site.coil_design)
    return d


def _site_from_json(d: dict[str, Any]) -> SiteProfile:
    from magphase.simulate.coils import CoilArrayDesign

    design = dict(d["coil_design"])
    design["semi_axes_mm"] = tuple(design["semi_axes_mm"])
    return SiteProfile(**{**d, "coil_design": CoilArrayDesign(**design)})


def _build_sites(cfg: SimulateConfig, seed: int) -> dict[int, SiteProfile]:
    """Sites ``cfg.sites[0] .. cfg.sites[1]``, split between field strengths by their weights."""
    site_ids = list(range(cfg.sites[0], cfg.sites[1] + 1))
    fields, weights = _weights(cfg.field_strengths_t)
    order = _rng(seed, _STREAM_SITE).permutation(len(site_ids))
    if len(fields) > len(site_ids):
        raise ConfigError(f"simulate.sites: {len(site_ids)} sites cannot host {len(fields)} field strengths")
    counts = allocate_counts(len(site_ids), weights, np.ones(len(fields), dtype=np.int64))
    sites: dict[int, SiteProfile] = {}
    position = 0
    for field_t, n in zip(fields, counts, strict=True):
        for i in order[position : position + n]:
            site = site_ids[i]
            sites[site] = SiteProfile.simulated(site, float(field_t), _rng(seed, _STREAM_SITE, site))
        position += n
    return dict(sorted(sites.items()))


def _draw_snr(cfg: SimulateConfig, field_t: float, rng: np.random.Generator) -> float:
    base = cfg.snr * (cfg.snr_factor_1p5t if field_t < 2.0 else 1.0)
    return float(base * math.exp(rng.normal(0.0, cfg.snr_spread)))


def _plan_training(cfg: SimulateConfig, seed: int, sites: dict[int, SiteProfile]) -> list[PlannedVolume]:
    if cfg.volumes == 0:
        return []
    seq_w = {s: float(w) for s, w in cfg.sequence_mix.items()}
    total_seq = sum(seq_w.values())
    cells: list[tuple[str, str]] = []
    weights: list[float] = []
    minima: list[int] = []
    for cls_name, sequences in TABLE1_CELLS.items():
        for seq in sequences:
            allowed = [c for c, seqs in TABLE1_CELLS.items() if seq in seqs]
            # A sequence with one possible class (AXT2, AXT1PRE: unlabeled) keeps its whole share.
            cls_w = {c: 1.0 if len(allowed) == 1 else cfg.class_fractions.get(c, 0.0) for c in allowed}
            denom = sum(cls_w.values())
            w = seq_w.get(seq, 0.0) / total_seq * (cls_w[cls_name] / denom if denom > 0 else 0.0)
            cells.append((cls_name, seq))
            weights.append(w)
            base_min = (
                min(cfg.min_volumes_per_cell, 1) if cls_name == "excluded" else cfg.min_volumes_per_cell
            )
            minima.append(base_min if w > 0 else 0)
    w_arr = np.array(weights)
    if w_arr.sum() <= 0:
        raise ConfigError("simulate: sequence_mix x class_fractions leaves no volume to simulate")
    counts = allocate_counts(cfg.volumes, w_arr / w_arr.sum(), np.array(minima))
    assignment = [cell for cell, n in zip(cells, counts, strict=True) for _ in range(n)]
    order = _rng(seed, _STREAM_PLAN).permutation(len(assignment))
    assignment = [assignment[i] for i in order]

    by_field: dict[float, list[int]] = {}
    for site_id, site in sites.items():
        by_field.setdefault(site.field_strength_t, []).append(site_id)
    fields, field_w = _weights(cfg.field_strengths_t)
    coil_counts, coil_w = _weights(cfg.coils)
    lesion_labels, lesion_w = _weights(cfg.lesion_weights)
    findings = load_findings()

    volumes = []
    for index, (volume_class, sequence) in enumerate(assignment):
        rng = _rng(seed, _STREAM_PLAN, index)
        field_t = float(fields[rng.choice(len(fields), p=field_w)])
        site = int(rng.choice(by_field[field_t]))
        n_coils = int(coil_counts[rng.choice(len(coil_counts), p=coil_w)])
        n_slices = int(rng.integers(cfg.n_slices_min, cfg.n_slices + 1)) if cfg.n_slices_min else cfg.n_slices
        lesions: tuple[str, ...] = ()
        radii: tuple[float, ...] = ()
        centres: tuple[int, ...] = ()
        study: tuple[str, ...] = ()
        runs: tuple[tuple[str, int, int], ...] = ()
        normal_for_age = volume_class == "normal"
        fitted = cfg.lesion_model == "fastmri_plus" and sequence in findings.sequences
        pitch = cfg.slice_thickness_mm + cfg.slice_gap_mm
        if volume_class in ("abnormal", "excluded") and fitted:
            if volume_class == "abnormal":
                drawn = draw_abnormal_lesions(findings, sequence, rng, pitch, n_slices)
            else:
                drawn, study = draw_excluded_lesions(findings, sequence, rng, pitch, n_slices)
                normal_for_age = bool(rng.random() < cfg.excluded_normal_for_age)
            lesions = tuple(lesion.label for lesion in drawn)
            radii = tuple(round(lesion.radius_mm, 3) for lesion in drawn)
            centres = tuple(lesion.slice for lesion in drawn)
            runs = tuple(sorted({(lesion.label, *lesion.run) for lesion in drawn}))
        elif volume_class == "abnormal":
            n_les = int(rng.integers(cfg.lesions_per_volume[0], cfg.lesions_per_volume[1] + 1))
            lesions = tuple(str(lesion_labels[i]) for i in rng.choice(len(lesion_labels), n_les, p=lesion_w))
        elif volume_class == "excluded":
            n_les = int(rng.integers(1, 3))
            lesions = tuple(str(x) for x in rng.choice(EXCLUDED_LESIONS, n_les))
            normal_for_age = bool(rng.random() < cfg.excluded_normal_for_age)
        volumes.append(
            PlannedVolume(
                index=index,
                stem=f"file_brain_{sequence}_{site}_{_TRAIN_ID_BASE + index}",
                sequence=sequence,
                volume_class=volume_class,
                lesions=lesions if radii else tuple(sorted(lesions)),
                lesion_radii_mm=radii,
                lesion_slices=centres,
                study_labels=study,
                annotated_runs=runs,
                normal_for_age=normal_for_age,
                field_strength_t=field_t,
                n_coils=n_coils,
                n_slices=n_slices,
                matrix=(int(cfg.matrix[0]), int(cfg.matrix[1])),
                fov_mm=(float(cfg.fov_mm[0]), float(cfg.fov_mm[1])),
                slice_thickness_mm=float(cfg.slice_thickness_mm),
                slice_gap_mm=float(cfg.slice_gap_mm),
                slab_offset_mm=float(rng.normal(0.0, 3.0)),
                site=site,
                snr=_draw_snr(cfg, field_t, rng),
                signal_level=float(cfg.signal_level * math.exp(rng.normal(0.0, 0.5))),
                render_seed=_derived_seed(seed, _STREAM_RENDER, index),
                acquire_seed=_derived_seed(seed, _STREAM_ACQUIRE, index),
            )
        )
    return volumes


def _plan_external(cfg: SimulateConfig, seed: int, start_index: int) -> list[PlannedVolume]:
    ext = cfg.external
    if cfg.external_volumes == 0:
        return []
    seqs, seq_w = _weights(ext.sequence_mix)
    cells = [(seq, label) for seq in seqs for label in ("healthy", "metastasis")]
    label_w = {"healthy": 1.0 - ext.metastasis_fraction, "metastasis": ext.metastasis_fraction}
    weights = np.array([seq_w[seqs.index(s)] * label_w[lab] for s, lab in cells])
    minima = (weights > 0).astype(np.int64)
    counts = allocate_counts(cfg.external_volumes, weights / weights.sum(), minima)
    assignment = [cell for cell, n in zip(cells, counts, strict=True) for _ in range(n)]
    order = _rng(seed, _STREAM_PLAN, 1 << 30).permutation(len(assignment))
    assignment = [assignment[i] for i in order]
    coil_counts, coil_w = _weights(ext.coils)
    volumes = []
    for k, (sequence, label) in enumerate(assignment):
        index = start_index + k
        rng = _rng(seed, _STREAM_PLAN, index)
        matrix = ext.matrices[int(rng.integers(len(ext.matrices)))]
        lesions: tuple[str, ...] = ()
        if label == "metastasis":
            n_les = int(rng.integers(ext.metastases_per_volume[0], ext.metastases_per_volume[1] + 1))
            lesions = (METASTASIS_LESION,) * n_les
        volumes.append(
            PlannedVolume(
                index=index,
                stem=f"file_brain_{sequence}_{ext.site}_{_EXTERNAL_ID_BASE + k}",
                sequence=sequence,
                volume_class=label,
                lesions=lesions,
                normal_for_age=False,
                field_strength_t=float(ext.field_strength_t),
                n_coils=int(coil_counts[rng.choice(len(coil_counts), p=coil_w)]),
                n_slices=int(rng.integers(cfg.n_slices_min, cfg.n_slices + 1))
                if cfg.n_slices_min
                else cfg.n_slices,
                matrix=(int(matrix[0]), int(matrix[1])),
                fov_mm=(float(cfg.fov_mm[0]), float(cfg.fov_mm[1])),
                slice_thickness_mm=float(cfg.slice_thickness_mm),
                slice_gap_mm=float(cfg.slice_gap_mm),
                slab_offset_mm=float(rng.uniform(*ext.slab_offset_mm)),
                site=ext.site,
                snr=_draw_snr(cfg, ext.field_strength_t, rng),
                signal_level=float(cfg.signal_level * math.exp(rng.normal(0.0, 0.5))),
                render_seed=_derived_seed(seed, _STREAM_RENDER, index),
                acquire_seed=_derived_seed(seed, _STREAM_ACQUIRE, index),
                external=True,
            )
        )
    return volumes


def estimated_bytes(volume: PlannedVolume, map_step_mm: float = 5.0) -> int:
    """Disk estimate of one volume: k-space + RSS (raw file) + the truth sidecar (image, maps, B0)."""
    s, c, (h, w) = volume.n_slices, volume.n_coils, volume.matrix
    raw = s * c * 2 * h * w * 8 + s * h * w * 4
    map_points = (2 * volume.fov_mm[0] / map_step_mm + 4) * (volume.fov_mm[1] / map_step_mm + 4)
    truth = s * h * w * (8 + 3) + s * c * map_points * 8
    return int(raw + truth)


# ------------------------------------------------------------------------------------------------
# paths, fragments, annotation rows


def raw_path(out_dir: Path, volume: PlannedVolume) -> Path:
    folder = out_dir / EXTERNAL_DIRNAME if volume.external else out_dir
    return folder / f"{volume.stem}.h5"


def fragment_path(out_dir: Path, volume: PlannedVolume) -> Path:
    folder = out_dir / EXTERNAL_DIRNAME if volume.external else out_dir
    return folder / FRAGMENTS_DIRNAME / f"{volume.stem}.json"


def lesion_boxes(
    stem: str,
    lesion_masks: np.ndarray,
    labels: Iterable[str],
    margin: int = 1,
    min_section: float = ANNOTATOR_MIN_SECTION,
    runs: dict[str, tuple[int, int]] | None = None,
) -> list[Box]:
    """One fastMRI+ box per lesion per slice: the bounding box of the lesion's mask in that slice.

    Args:
        stem: file stem of the volume.
        lesion_masks: bool ``(L, S, H, W)`` on the stored (recon) array.
        labels: the L lesion labels.
        margin: pixels added on every side (clipped to the image), as annotators draw around a finding.
        min_section: slices where the lesion's section area is below this fraction of its largest
            section get no box (:data:`ANNOTATOR_MIN_SECTION`).
        runs: label -> (first, last) slices the annotator boxes that label on (the fitted annotated
            slices per volume: fastMRI+ annotators boxed a finding on some of the slices it crosses,
            not always all). A lesion with no qualifying section inside its run is boxed where it is
            largest (an annotator does not skip a finding altogether). None: every slice.

    Returns:
        Boxes in the flipped-image convention (:func:`magphase.io.annotations.array_to_box`).
    """
    boxes = []
    _, _, h, w = lesion_masks.shape if lesion_masks.ndim == 4 else (0, 0, 0, 0)
    for mask, label in zip(lesion_masks, labels, strict=True):
        area = mask.sum(axis=(1, 2))
        if not area.any():
            continue
        chosen = np.nonzero(area >= max(min_section * area.max(), 1))[0]
        if runs and label in runs:
            first, last = runs[label]
            inside = chosen[(chosen >= first) & (chosen <= last)]
            chosen = inside if inside.size else np.array([int(np.argmax(area))])
        for s in chosen:
            rows = np.nonzero(mask[s].any(axis=1))[0]
            cols = np.nonzero(mask[s].any(axis=0))[0]
            row0, row1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, h)
            col0, col1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, w)
            x, y, width, height = array_to_box(row0, row1, col0, col1, h)
            boxes.append(Box(stem, int(s), x, y, width, height, str(label)))
    return boxes


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(json.dumps(data, indent=1, sort_keys=True), path)


def _fragment(volume: PlannedVolume, lesion_masks: np.ndarray, labels: list[str], facial: np.ndarray) -> dict:
    """What the merge step needs from a finished volume (no arrays)."""
    frag: dict[str, Any] = {
        "stem": volume.stem,
        "plan_hash": volume.plan_hash(),
        "sequence": volume.sequence,
        "volume_class": volume.volume_class,
    }
    if volume.external:
        frag["facial"] = [bool(f) for f in facial]
        return frag
    if volume.volume_class == "unlabeled":
        frag.update(annotated=False, boxes=[], study_labels=[])
        return frag
    boxes = lesion_boxes(volume.stem, lesion_masks, labels, runs=volume.label_runs())
    study_labels = [NORMAL_FOR_AGE] if volume.normal_for_age else []
    study_labels.extend(volume.study_labels)
    if volume.volume_class == "excluded" and not boxes and not volume.study_labels:
        # The out-of-rule finding missed every slice (e.g. a ventricle artifact above a low slab):
        # annotators would still note it, at study level, which keeps the volume excluded.
        study_labels.append(volume.lesions[0])
    frag.update(
        annotated=True,
        boxes=[[b.slice, b.x, b.y, b.width, b.height, b.label] for b in boxes],
        study_labels=study_labels,
    )
    return frag


# ------------------------------------------------------------------------------------------------
# one volume


@dataclass(frozen=True)
class VolumeTask:
    """A picklable unit of work for a worker process."""

    out_dir: str
    volume: PlannedVolume
    site: SiteProfile


@dataclass
class VolumeOutcome:
    """What happened to one volume.

    ``status`` is ``written`` or ``kept``; ``seconds`` splits wall time into ``render``, ``acquire``
    (coil maps, k-space, noise, RSS) and ``write``; ``bytes`` counts the raw file plus its sidecar.
    ``note`` reports a class the annotations could not express (e.g. an abnormal volume whose lesions
    all fell outside the slab).
    """

    stem: str
    status: str
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: int = 0
    note: str | None = None


def read_fragment(out_dir: Path, volume: PlannedVolume) -> dict[str, Any] | None:
    """The volume's annotation fragment when it exists and was made from this plan, else None."""
    try:
        fragment = json.loads(fragment_path(out_dir, volume).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return fragment if fragment.get("plan_hash") == volume.plan_hash() else None


def fragment_rows(stem: str, fragment: dict[str, Any]) -> list[Box | StudyLabel]:
    """The fastMRI+ CSV rows of one annotated volume's fragment (study labels, then boxes)."""
    rows: list[Box | StudyLabel] = [StudyLabel(stem, label) for label in fragment["study_labels"]]
    rows.extend(Box(stem, s, x, y, w, h, label) for s, x, y, w, h, label in fragment["boxes"])
    return rows


def discard_raw(out_dir: Path, volume: PlannedVolume) -> None:
    """Delete a volume's raw file and its ground-truth sidecar (its fragment stays)."""
    raw = raw_path(out_dir, volume)
    for path in (raw, truth_path_for(raw)):
        path.unlink(missing_ok=True)


def volume_is_complete(out_dir: Path, volume: PlannedVolume) -> bool:
    """True when the raw file opens and matches the plan, the sidecar has the plan hash and the fragment
    exists with the same hash."""
    raw = raw_path(out_dir, volume)
    frag_path = fragment_path(out_dir, volume)
    truth = truth_path_for(raw)
    if not (raw.is_file() and truth.is_file() and frag_path.is_file()):
        return False
    try:
        fragment = json.loads(frag_path.read_text())
        if fragment.get("plan_hash") != volume.plan_hash():
            return False
        if read_truth_attrs(truth).get("plan_hash") != volume.plan_hash():
            return False
        with open_volume(raw) as handle:
            expected = (volume.n_slices, volume.n_coils, 2 * volume.matrix[0], volume.matrix[1])
            return handle.kspace_shape == expected
    except (DataError, ValueError, OSError):
        return False


def acquire_planned(
    volume: PlannedVolume, truth_volume: GroundTruthVolume, site: SiteProfile
) -> SimulatedAcquisition:
    """The planned acquisition of a rendered volume: its coils, SNR, signal level, ``site`` and seed."""
    settings = AcquisitionSettings(
        n_coils=volume.n_coils, snr=volume.snr, site=site, signal_level=volume.signal_level
    )
    return acquire(
        truth_volume,
        settings,
        np.random.default_rng(volume.acquire_seed),
        stem=volume.stem,
        patient_id=patient_id_for(volume.stem, volume.render_seed),
    )


def simulate_volume(task: VolumeTask) -> VolumeOutcome:
    """Render, acquire and write one volume (top-level, so spawn-started workers can run it).

    Keeps the volume when :func:`volume_is_complete`; otherwise renders it from its own seeds and writes
    the raw file, its sidecar and its annotation fragment, each atomically (fragment last).
    """
    out_dir = Path(task.out_dir)
    volume = task.volume
    raw = raw_path(out_dir, volume)
    if volume_is_complete(out_dir, volume):
        return VolumeOutcome(volume.stem, "kept", bytes=_disk_bytes(raw))
    raw.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth_volume = render_volume(volume.volume_spec())
    t1 = time.perf_counter()
    acquisition = acquire_planned(volume, truth_volume, task.site)
    t2 = time.perf_counter()
    write_acquisition(
        raw,
        acquisition,
        truth_attrs={"plan_hash": volume.plan_hash(), "volume_class": volume.volume_class},
    )
    truth = acquisition.truth
    fragment = _fragment(volume, truth.lesion_masks, truth.lesion_labels, truth.facial)
    _write_json_atomic(fragment_path(out_dir, volume), fragment)
    t3 = time.perf_counter()
    note = None
    if volume.volume_class in ("abnormal", "metastasis") and not truth.lesion_masks.any():
        note = f"{volume.stem}: planned {volume.volume_class} but no lesion voxel lies in the slab"
        logger.warning(note)
    return VolumeOutcome(
        volume.stem,
        "written",
        seconds={"render": t1 - t0, "acquire": t2 - t1, "write": t3 - t2},
        bytes=_disk_bytes(raw),
        note=note,
    )


def _disk_bytes(raw: Path) -> int:
    total = 0
    for p in (raw, truth_path_for(raw)):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


# ------------------------------------------------------------------------------------------------
# whole dataset


@dataclass
class SimulationSummary:
    """Result of :func:`run_simulation`."""

    out_dir: Path
    planned: int
    in_shard: int
    written: int = 0
    kept: int = 0
    bytes: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    merged: bool = False
    notes: list[str] = field(default_factory=list)
    outcomes: list[VolumeOutcome] = field(default_factory=list)


def write_plan(out_dir: Path, plan: SimulatedDatasetPlan) -> Path:
    """Write ``simulate_plan.json``; refuse when the folder holds a different plan.

    Raises:
        ConfigError: ``out_dir`` was simulated with another config/seed (mixing would corrupt it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PLAN_FILENAME
    data = plan.to_json()
    if path.is_file():
        try:
            existing = json.loads(path.read_text()).get("plan_hash")
        except (json.JSONDecodeError, OSError):
            existing = None
        if existing is not None and existing != data["plan_hash"]:
            raise ConfigError(
                f"{out_dir} holds a dataset simulated with another config or seed (plan {existing}, "
                f"now {data['plan_hash']}); use a new --out folder or the same settings"
            )
    _write_json_atomic(path, data)
    return path


def read_plan(out_dir: str | os.PathLike[str]) -> SimulatedDatasetPlan:
    """The plan stored in a simulated folder.

    Raises:
        DataError: no readable ``simulate_plan.json``.
    """
    path = Path(out_dir) / PLAN_FILENAME
    try:
        return SimulatedDatasetPlan.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise DataError(path, None, "no simulation plan: not a folder written by magphase simulate") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(path, None, f"unreadable simulation plan: {exc}") from None


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _single_thread_worker() -> None:
    """Pool initializer: torch's intra-op pool to one thread as well."""
    import torch

    torch.set_num_threads(1)


def run_simulation(
    out_dir: str | os.PathLike[str],
    plan: SimulatedDatasetPlan,
    *,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: Callable[[VolumeOutcome], None] | None = None,
    volume_fn: Callable[[VolumeTask], VolumeOutcome] = simulate_volume,
) -> SimulationSummary:
    """Simulate the plan's volumes of one shard into ``out_dir``; merge annotations when all are done.

    Args:
        out_dir: dataset folder (created).
        plan: from :meth:`SimulatedDatasetPlan.build`.
        shard: ``(I, N)``: only volumes ``i % N == I``.
        workers: processes (``1``: in this process). Workers are started with ``spawn``.
        progress: called once per volume (written or kept), in completion order.
        volume_fn: what runs per volume (default :func:`simulate_volume`): a picklable top-level
            callable that wraps it, e.g. to prepare each volume as it is written and delete its raw
            file (:mod:`magphase.stages.simulate`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_plan(out, plan)
    selected = plan.shard(*shard)
    summary = SimulationSummary(out_dir=out, planned=len(plan.all_volumes), in_shard=len(selected))
    tasks = [VolumeTask(str(out), v, plan.sites[v.site]) for v in selected]
    t0 = time.perf_counter()

    def record(outcome: VolumeOutcome) -> None:
        summary.outcomes.append(outcome)
        if outcome.status == "written":
            summary.written += 1
        else:
            summary.kept += 1
        summary.bytes += outcome.bytes
        for key, value in outcome.seconds.items():
            summary.stage_seconds[key] = summary.stage_seconds.get(key, 0.0) + value
        if outcome.note:
            summary.notes.append(outcome.note)
        if progress is not None:
            progress(outcome)

    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            record(volume_fn(task))
    else:
        # Build (or load) the cached head model once here, so spawned workers only read the cache
        # instead of each building it at the same time (~20 s, ~2 GB each on a fresh machine).
        from magphase.simulate.anatomy import load_head_anatomy

        load_head_anatomy()
        context = multiprocessing.get_context("spawn")
        # One thread per worker: the workers are the parallelism; BLAS/FFT/torch thread pools on top
        # would oversubscribe the cores. Spawned children inherit the environment at start-up.
        saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
        os.environ.update(dict.fromkeys(_THREAD_VARIABLES, "1"))
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(tasks)), mp_context=context, initializer=_single_thread_worker
            ) as pool:
                futures = [pool.submit(volume_fn, task) for task in tasks]
                for future in as_completed(futures):
                    record(future.result())
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    summary.seconds = time.perf_counter() - t0
    summary.merged = merge_annotations(out, plan, require_complete=False)
    return summary


def merge_annotations(
    out_dir: str | os.PathLike[str],
    plan: SimulatedDatasetPlan | None = None,
    *,
    require_complete: bool = True,
) -> bool:
    """Merge the volume fragments into ``brain.csv``/``brain_file_list.csv`` (and the external CSVs).

    Runs only when every planned volume has a fragment from this plan. Output is a pure function of
    the fragments (plan order), so concurrent merges by several shards write identical files.

    Args:
        out_dir: the dataset folder.
        plan: default: read ``simulate_plan.json``.
        require_complete: raise instead of returning False when fragments are missing.

    Returns:
        True when the annotation files were written.

    Raises:
        DataError: fragments missing (with ``require_complete``) or unreadable.
    """
    out = Path(out_dir)
    plan = plan or read_plan(out)
    fragments: dict[str, dict[str, Any]] = {}
    missing = []
    for volume in plan.all_volumes:
        path = fragment_path(out, volume)
        try:
            frag = json.loads(path.read_text())
        except FileNotFoundError:
            missing.append(volume.stem)
            continue
        except json.JSONDecodeError as exc:
            raise DataError(path, None, f"unreadable annotation fragment: {exc}") from None
        if frag.get("plan_hash") != volume.plan_hash():
            missing.append(volume.stem)
            continue
        fragments[volume.stem] = frag
    if missing:
        if require_complete:
            raise DataError(
                out,
                FRAGMENTS_DIRNAME,
                f"{len(missing)} of {len(plan.all_volumes)} volumes not finished yet "
                f"(first: {missing[0]}); run the remaining shards first",
            )
        logger.info("annotations not merged yet: %d volumes unfinished", len(missing))
        return False

    rows: list[Box | StudyLabel] = []
    listed: list[str] = []
    for volume in plan.volumes:
        frag = fragments[volume.stem]
        if not frag["annotated"]:
            continue
        listed.append(volume.stem)
        rows.extend(fragment_rows(volume.stem, frag))
    if plan.volumes:
        write_annotations(out / "brain.csv", rows, out / "brain_file_list.csv", files=listed)
    if plan.external:
        labels = io.StringIO()
        writer = csv.writer(labels, lineterminator="\n")
        writer.writerow(("file", "label", "sequence"))
        facial = io.StringIO()
        facial_writer = csv.writer(facial, lineterminator="\n")
        facial_writer.writerow(("file", "slice", "facial"))
        for volume in plan.external:
            writer.writerow((volume.stem, volume.volume_class, volume.sequence))
            for s, flag in enumerate(fragments[volume.stem]["facial"]):
                facial_writer.writerow((volume.stem, s, int(flag)))
        atomic_write_text(labels.getvalue(), out / EXTERNAL_DIRNAME / "labels.csv")
        atomic_write_text(facial.getvalue(), out / EXTERNAL_DIRNAME / "facial_slices.csv")
    logger.info("merged annotations of %d volumes into %s", len(plan.all_volumes), out)
    return True


def plan_table(plan: SimulatedDatasetPlan) -> str:
    """Volumes per sequence and class as a small text table (for ``--dry-run`` and logs)."""
    classes = ["normal", "abnormal", "excluded", "unlabeled", "healthy", "metastasis"]
    counts = plan.class_counts()
    used = [c for c in classes if any(c in row for row in counts.values())]
    order = [s for s in (*SIMULATED_SEQUENCES, *EXTERNAL_SEQUENCES) if s in counts]
    lines = [f"{'sequence':<10}" + "".join(f"{c:>11}" for c in used) + f"{'total':>8}"]
    for seq in order:
        row = counts[seq]
        lines.append(f"{seq:<10}" + "".join(f"{row.get(c, 0):>11}" for c in used) + f"{sum(row.values()):>8}")
    return "\n".join(lines)


__all__ = [
    "EXTERNAL_DIRNAME",
    "FRAGMENTS_DIRNAME",
    "METASTASIS_LESION",
    "NORMAL_FOR_AGE",
    "PLAN_FILENAME",
    "TABLE1_CELLS",
    "PlannedVolume",
    "SimulatedDatasetPlan",
    "SimulationSummary",
    "VolumeOutcome",
    "VolumeTask",
    "acquire_planned",
    "allocate_counts",
    "estimated_bytes",
    "fragment_path",
    "lesion_boxes",
    "merge_annotations",
    "plan_table",
    "raw_path",
    "read_plan",
    "run_simulation",
    "simulate_volume",
    "volume_is_complete",
    "write_plan",
]
