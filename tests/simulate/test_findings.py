"""Finding statistics fitted to the real fastMRI+ CSV, and the simulator's draws from them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from magphase.config.labels import PAPER_ABNORMAL_LABELS
from magphase.config.simulate import SimulateConfig
from magphase.errors import ConfigError
from magphase.io.annotations import Box, read_annotations, write_annotations
from magphase.simulate.dataset import SimulatedDatasetPlan
from magphase.simulate.findings import (
    ANNOTATOR_MIN_SECTION,
    CATALOGUE_LABELS,
    COMPANION_LABELS,
    FINDINGS_FILE,
    SINGLE_LESION_LABELS,
    annotation_statistics,
    draw_abnormal_lesions,
    draw_excluded_lesions,
    draw_lesions,
    fit_findings,
    load_findings,
)
from magphase.simulate.phantom import VolumeSpec, render_volume


def test_shipped_fit_is_the_fit_of_the_real_csv(fastmri_plus_dir: Path):
    shipped = json.loads(FINDINGS_FILE.read_text())
    fit = fit_findings(fastmri_plus_dir / "brain.csv", fastmri_plus_dir / "brain_file_list.csv")
    assert json.loads(json.dumps(fit)) == shipped, "re-run: python -m magphase.simulate.findings BRAIN_CSV"
    assert "MIT" in shipped["licence"]
    assert set(shipped["sequences"]) == {"AXFLAIR", "AXT1", "AXT1POST"}  # the annotated sequences
    assert set(shipped["labels"]) == set(CATALOGUE_LABELS)  # every catalogue label has boxes to fit


def test_fit_matches_an_independent_count_of_the_real_csv(fastmri_plus_dir: Path):
    import csv

    rows = list(csv.DictReader((fastmri_plus_dir / "brain.csv").open()))
    wml = [r for r in rows if r["label"] == "Nonspecific white matter lesion" and r["study_level"] == "No"]
    fit = load_findings().data["labels"]["Nonspecific white matter lesion"]
    # The reader drops duplicate and zero-size rows; the fit may hold at most a handful fewer boxes.
    assert 0 <= len(wml) - fit["boxes"] <= 3
    sizes = np.sqrt([int(r["width"]) * int(r["height"]) for r in wml])
    assert fit["box_size_px_percentiles"][10] == pytest.approx(np.median(sizes), rel=0.02)


def test_label_mix_follows_the_sequence():
    stats = load_findings()
    rng = np.random.default_rng(0)
    for sequence, leader in (
        ("AXFLAIR", "Nonspecific white matter lesion"),
        ("AXT1POST", "Nonspecific lesion"),
    ):
        counts = Counter(label for _ in range(2000) for label in stats.draw_labels(sequence, rng))
        assert counts.most_common(1)[0][0] == leader
        incidence = stats.data["sequences"][sequence]["label_incidence"][leader]
        assert counts[leader] / 2000 == pytest.approx(incidence, abs=0.06)


def test_drawn_sizes_follow_the_fitted_percentiles():
    stats = load_findings()
    sizes = stats.draw_box_size_px("Mass", np.random.default_rng(1), size=20_000)
    q = stats.data["labels"]["Mass"]["box_size_px_percentiles"]
    assert np.median(sizes) == pytest.approx(q[10], rel=0.05)
    assert sizes.min() >= q[0] and sizes.max() <= q[-1]


def test_abnormal_lesions_are_sorted_sized_and_capped():
    stats = load_findings()
    rng = np.random.default_rng(2)
    for _ in range(200):
        lesions = draw_abnormal_lesions(
            stats, "AXFLAIR", rng, slice_pitch_mm=6.0, n_slices=12, max_per_label=5
        )
        assert lesions == sorted(lesions) and lesions
        assert {x.label for x in lesions} & set(PAPER_ABNORMAL_LABELS)
        assert all(x.label in CATALOGUE_LABELS and x.radius_mm > 0 and 0 <= x.slice < 12 for x in lesions)
        assert max(Counter(x.label for x in lesions).values()) <= 5


def test_lesions_of_a_label_cover_its_annotated_run():
    # Every slice of a label's run gets a lesion whose boxed slab (|z| <= r sqrt(1 - f)) reaches it:
    # the annotator has something to box on each slice (the run is tiled before extra lesions are
    # added for the box count, and 12 slices never need more than the cap of 16).
    stats = load_findings()
    rng = np.random.default_rng(5)
    pitch = 6.0
    for sequence in ("AXFLAIR", "AXT1", "AXT1POST"):
        for _ in range(150):
            lesions = draw_abnormal_lesions(stats, sequence, rng, slice_pitch_mm=pitch, n_slices=12)
            for label in {x.label for x in lesions} - set(SINGLE_LESION_LABELS):
                mine = [x for x in lesions if x.label == label]
                first, last = mine[0].run
                assert all(x.run == (first, last) and first <= x.slice <= last for x in mine)
                covered = set()
                for x in mine:
                    reach = int(x.radius_mm * np.sqrt(1 - ANNOTATOR_MIN_SECTION) / pitch)
                    covered.update(range(x.slice - reach, x.slice + reach + 1))
                assert set(range(first, last + 1)) <= covered, (label, first, last, mine)


def test_extra_lesions_go_to_the_slices_drawn_with_many_boxes():
    # A slice drawn with four boxes gets (about) four small lesions, its neighbours drawn with one box
    # get one each: the boxes per slice keep the fitted spread (mostly 1, a tail of busy slices), not
    # an even two per slice.
    stats = load_findings()
    label, sequence = "Nonspecific white matter lesion", "AXFLAIR"
    pmf = stats.table(label, sequence)["boxes_per_slice"]
    rng = np.random.default_rng(11)
    one, slices = 0, 0
    for _ in range(300):
        lesions = draw_lesions(stats, (label,), sequence, rng, slice_pitch_mm=6.0, n_slices=12)
        first, last = lesions[0].run
        reach = [int(x.radius_mm * np.sqrt(1 - ANNOTATOR_MIN_SECTION) / 6.0) for x in lesions]
        for k in range(first, last + 1):
            one += sum(abs(k - x.slice) <= r for x, r in zip(lesions, reach, strict=True)) == 1
            slices += 1
    assert abs(one / slices - float(pmf["1"])) < 0.12, (one / slices, pmf)


def test_plan_draws_fitted_lesions_only_under_the_fastmri_plus_model():
    fitted = SimulatedDatasetPlan.build(SimulateConfig(volumes=30, min_volumes_per_cell=1), seed=3)
    legacy = SimulatedDatasetPlan.build(
        SimulateConfig(volumes=30, min_volumes_per_cell=1, lesion_model="config"), seed=3
    )
    abnormal = [v for v in fitted.volumes if v.volume_class == "abnormal"]
    assert abnormal and all(len(v.lesion_radii_mm) == len(v.lesions) > 0 for v in abnormal)
    assert all(not v.lesion_radii_mm for v in legacy.volumes)
    normal = [v for v in fitted.volumes if v.volume_class in ("normal", "unlabeled")]
    assert all(not v.lesion_radii_mm and not v.lesions for v in normal)
    excluded = [v for v in fitted.volumes if v.volume_class == "excluded"]
    assert excluded and all(len(v.lesion_radii_mm) == len(v.lesions) for v in excluded)
    # A plan round-trips through JSON with its sizes.
    again = SimulatedDatasetPlan.from_json(json.loads(json.dumps(fitted.to_json())))
    assert again.plan_hash() == fitted.plan_hash()


def test_phantom_renders_the_given_lesion_size_on_the_given_slice():
    def mass(radius: float, slice_: int):
        spec = VolumeSpec(
            seed=5,
            sequence="AXFLAIR",
            matrix=(128, 128),
            n_slices=8,
            lesions=("Mass",),
            lesion_radii_mm=(radius,),
            lesion_slices=(slice_,),
        )
        return render_volume(spec)

    small, large = mass(6.0, 2), mass(16.0, 5)
    assert int(np.argmax(small.lesions[0].mask.sum(axis=(1, 2)))) in (1, 2, 3)
    assert int(np.argmax(large.lesions[0].mask.sum(axis=(1, 2)))) in (4, 5, 6)
    assert 3 * small.lesions[0].mask.sum() < large.lesions[0].mask.sum()
    with pytest.raises(ConfigError, match="one positive size per lesion"):
        render_volume(VolumeSpec(seed=5, sequence="AXFLAIR", lesions=("Mass",), lesion_radii_mm=(1.0, 2.0)))


def test_annotation_statistics_count_boxes_slices_and_volumes(tmp_path: Path):
    rows = [
        Box("file_brain_AXFLAIR_200_1", 2, 10, 10, 4, 9, "Nonspecific white matter lesion"),
        Box("file_brain_AXFLAIR_200_1", 2, 40, 10, 3, 3, "Nonspecific white matter lesion"),
        Box("file_brain_AXFLAIR_200_1", 3, 10, 10, 5, 5, "Mass"),
        Box("file_brain_AXT1_200_2", 0, 10, 10, 8, 8, "Mass"),
        Box("file_brain_AXT1_200_3", 0, 10, 10, 8, 8, "Possible artifact"),  # not abnormal
    ]
    path = tmp_path / "brain.csv"
    write_annotations(path, rows)
    stats = annotation_statistics(read_annotations(path))
    assert sorted(stats.box_size_px) == [3.0, 5.0, 6.0, 8.0]
    assert sorted(stats.boxes_per_slice) == [1, 1, 2]
    assert sorted(stats.slices_per_volume) == [1, 2]
    assert list(annotation_statistics(read_annotations(path), "AXT1").slices_per_volume) == [1]


def _real_volumes(fastmri_plus_dir: Path, cls: str, sequence: str):
    annotations = read_annotations(fastmri_plus_dir / "brain.csv")
    return [v for v in annotations.volumes.values() if v.label == cls and v.sequence == sequence]


def test_companion_findings_match_an_independent_count(fastmri_plus_dir: Path):
    """Edema beside the abnormal labels of AXT1POST volumes, craniotomies among the excluded ones."""
    seq = load_findings().data["sequences"]["AXT1POST"]
    abnormal = _real_volumes(fastmri_plus_dir, "abnormal", "AXT1POST")
    with_edema = sum(any(b.label == "Edema" for b in v.boxes) for v in abnormal)
    assert seq["companion_incidence"]["Edema"] == pytest.approx(with_edema / len(abnormal))
    excluded = _real_volumes(fastmri_plus_dir, "excluded", "AXT1POST")
    assert seq["excluded_volumes"] == len(excluded)
    with_craniotomy = sum(any(b.label == "Craniotomy" for b in v.boxes) for v in excluded)
    fitted = sum(p for k, p in seq["excluded_sets"].items() if "Craniotomy" in k.split(" + "))
    assert fitted == pytest.approx(with_craniotomy / len(excluded))
    # The finding sets keep the abnormal label sets: their marginal over the abnormal labels is the same.
    marginal = Counter()
    for key, p in seq["finding_sets"].items():
        marginal[" + ".join(x for x in key.split(" + ") if x in PAPER_ABNORMAL_LABELS)] += p
    assert dict(marginal) == pytest.approx(seq["label_sets"])
    # Study-level labels of excluded volumes never include a normal marker (it would make them normal).
    assert "Normal for age" not in seq["excluded_study_labels"]


def test_abnormal_volumes_carry_companions_at_their_real_rate():
    stats = load_findings()
    rng = np.random.default_rng(4)
    for sequence in ("AXT1", "AXT1POST"):
        draws = [stats.draw_labels(sequence, rng) for _ in range(3000)]
        for label in ("Edema", "Craniotomy"):
            rate = sum(label in d for d in draws) / len(draws)
            assert rate == pytest.approx(
                stats.data["sequences"][sequence]["companion_incidence"][label], abs=0.03
            )
        assert all(set(d) & set(PAPER_ABNORMAL_LABELS) for d in draws)
        alone = [stats.draw_labels(sequence, rng, companions=False) for _ in range(200)]
        assert all(set(d) <= set(PAPER_ABNORMAL_LABELS) for d in alone)


def test_excluded_volumes_draw_companions_or_a_study_label():
    stats = load_findings()
    rng = np.random.default_rng(5)
    draws = [draw_excluded_lesions(stats, "AXFLAIR", rng, 6.0, 14) for _ in range(2000)]
    study_only = [study for lesions, study in draws if not lesions]
    share = stats.data["sequences"]["AXFLAIR"]["excluded_sets"][""]
    assert len(study_only) / len(draws) == pytest.approx(share, abs=0.03)
    assert all(len(study) == 1 for study in study_only)
    assert all(
        {x.label for x in lesions} <= set(COMPANION_LABELS) and not study
        for lesions, study in draws
        if lesions
    )


def test_slices_per_volume_table_is_the_sequences_own_where_fitted():
    stats = load_findings()
    nonspecific = stats.data["labels"]["Nonspecific lesion"]
    assert (
        stats.slices_per_volume("Nonspecific lesion", "AXT1POST")
        == (nonspecific["by_sequence"]["AXT1POST"]["slices_per_volume"])
    )
    own = nonspecific["by_sequence"]["AXT1POST"]["box_size_px_percentiles"]
    sizes = stats.draw_box_size_px("Nonspecific lesion", np.random.default_rng(0), 5000, "AXT1POST")
    assert np.median(sizes) == pytest.approx(own[10], rel=0.05)
    assert (
        stats.slices_per_volume("Likely cysts", "AXT1POST")
        == stats.data["labels"]["Likely cysts"]["slices_per_volume"]
    )
