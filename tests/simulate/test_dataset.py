"""The simulated dataset: plan, files, fastMRI+ annotations, external set, determinism, shards, resume."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from magphase.cli import app
from magphase.config import MagphaseConfig, dump_config, load_config
from magphase.config.simulate import ABNORMAL_LESIONS, SIMULATE_PRESETS, SimulateConfig
from magphase.errors import ConfigError, DataError
from magphase.io.annotations import read_annotations, read_file_list
from magphase.io.fastmri import open_volume, scan_folder
from magphase.simulate.acquisition import read_truth, truth_path_for
from magphase.simulate.dataset import (
    TABLE1_CELLS,
    SimulatedDatasetPlan,
    allocate_counts,
    fragment_path,
    lesion_boxes,
    merge_annotations,
    raw_path,
    read_plan,
    run_simulation,
    volume_is_complete,
    write_plan,
)
from magphase.simulate.findings import CATALOGUE_LABELS, COMPANION_LABELS

MATRIX = (48, 48)


def small_config(**overrides) -> SimulateConfig:
    # AXT1POST takes every class; with one volume per cell, 5 volumes cover normal, abnormal,
    # excluded, unlabeled AXT1POST and an (always unlabeled) AXT2.
    base = dict(
        volumes=5,
        external_volumes=0,
        matrix=MATRIX,
        n_slices=3,
        coils={4: 1.0},
        sequence_mix={"AXT1POST": 0.8, "AXT2": 0.2},
        min_volumes_per_cell=1,
        lesions_per_volume=(1, 2),
        lesion_model="config",  # few lesions keep these 40 x 40 volumes fast; the fitted model: test_findings
        external={"matrices": [(40, 40), (56, 56)], "coils": {6: 1.0}, "metastases_per_volume": (1, 2)},
    )
    base.update(overrides)
    return SimulateConfig(**base)


def kspace_bytes(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(folder.rglob("file_brain_*.h5")):
        if "truth" in path.parts:
            continue
        with open_volume(path) as volume:
            out[path.name] = volume.kspace().tobytes()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 training-like volumes (every class) + 2 external volumes, 48 x 48, 3 slices, 4-6 coils."""
    out = tmp_path_factory.mktemp("sim")
    plan = SimulatedDatasetPlan.build(small_config(external_volumes=2), seed=11)
    summary = run_simulation(out, plan)
    return out, plan, summary


# -------------------------------------------------------------------------------------------- plan


def test_allocate_counts_minimum_then_weights():
    counts = allocate_counts(20, np.array([0.7, 0.2, 0.1]), np.array([3, 3, 3]))
    assert counts.sum() == 20 and counts.min() >= 3 and counts[0] == counts.max()
    # minima that do not fit are lowered uniformly
    assert allocate_counts(4, np.array([0.5, 0.3, 0.2]), np.array([3, 3, 3])).tolist() == [2, 1, 1]


def test_small_plan_fills_every_table1_cell():
    plan = SimulatedDatasetPlan.build(SimulateConfig(volumes=30), seed=0)
    counts = plan.class_counts()
    for cls, sequences in TABLE1_CELLS.items():
        for seq in sequences:
            assert counts[seq].get(cls, 0) >= (1 if cls == "excluded" else 3), (cls, seq)
    for seq in ("AXT2", "AXT1PRE"):
        assert set(counts[seq]) == {"unlabeled"}
    assert {v.volume_class for v in plan.volumes if v.sequence in ("AXFLAIR", "AXT1")} <= {
        "normal",
        "abnormal",
        "excluded",
    }
    stems = [v.stem for v in plan.volumes]
    assert len(set(stems)) == 30
    assert all(v.stem.startswith(f"file_brain_{v.sequence}_") for v in plan.volumes)
    assert {v.site for v in plan.volumes} <= set(range(200, 211))
    for v in plan.volumes:
        assert v.n_coils in (4, 8, 12, 16, 20) and v.field_strength_t in (1.5, 3.0)
        assert plan.sites[v.site].field_strength_t == v.field_strength_t
        if v.volume_class == "abnormal":  # the fitted fastMRI+ model: up to 16 lesions per label
            assert set(v.lesions) & set(ABNORMAL_LESIONS) and set(v.lesions) <= set(CATALOGUE_LABELS)
            assert len(v.lesions) <= 16 * len(set(v.lesions)) and not v.study_labels
        elif v.volume_class == "excluded":  # companion findings only, or a study-level label
            assert set(v.lesions) <= set(COMPANION_LABELS) and (v.lesions or v.study_labels)
        else:
            assert v.lesions == ()


def test_large_plan_follows_the_fastmri_mix():
    plan = SimulatedDatasetPlan.build(SimulateConfig(volumes=3000), seed=1)
    sequences = [v.sequence for v in plan.volumes]
    for seq, share in {
        "AXT2": 0.40,
        "AXT1POST": 0.35,
        "AXT1PRE": 0.12,
        "AXFLAIR": 0.07,
        "AXT1": 0.06,
    }.items():
        assert sequences.count(seq) / 3000 == pytest.approx(share, abs=0.02)
    coils = [v.n_coils for v in plan.volumes]
    assert coils.count(16) / 3000 == pytest.approx(0.45, abs=0.04)


def test_plan_is_deterministic_and_survives_json():
    cfg = SimulateConfig(volumes=25, external_volumes=6)
    a, b = SimulatedDatasetPlan.build(cfg, seed=4), SimulatedDatasetPlan.build(cfg, seed=4)
    assert a.plan_hash() == b.plan_hash()
    assert SimulatedDatasetPlan.build(cfg, seed=5).plan_hash() != a.plan_hash()
    restored = SimulatedDatasetPlan.from_json(json.loads(json.dumps(a.to_json())))
    assert restored.plan_hash() == a.plan_hash() and restored.sites == a.sites


def test_external_plan_matches_table2_and_other_protocols():
    plan = SimulatedDatasetPlan.build(SimulateConfig(volumes=0, external_volumes=96), seed=2)
    counts = plan.class_counts()
    assert sum(counts["T1TSE"].values()) == 16 and sum(counts["T2TIRM"].values()) == 80
    metastasis = sum(c.get("metastasis", 0) for c in counts.values())
    assert metastasis == pytest.approx(0.46 * 96, abs=2)
    assert {v.matrix for v in plan.external} == {(256, 256), (384, 384)}
    assert {v.field_strength_t for v in plan.external} == {1.5}
    assert all(v.slab_offset_mm < -10 for v in plan.external)
    assert all(len(v.lesions) >= 2 for v in plan.external if v.volume_class == "metastasis")


def test_presets_resolve_and_explicit_values_win(tmp_path):
    demo = SimulateConfig(preset="demo")
    assert demo.volumes == SIMULATE_PRESETS["demo"]["volumes"] and set(demo.coils) <= {4, 8}
    mine = SimulateConfig(preset="demo", volumes=7, external={"site": 301})
    assert mine.volumes == 7 and mine.external.site == 301 and mine.external.coils == demo.external.coils
    # a resolved config dumps and reloads unchanged (run folders store config.yaml)
    path = tmp_path / "config.yaml"
    path.write_text("simulate:\n  preset: reproduce\n  n_slices: 10\n")
    cfg = load_config(path)
    assert cfg.simulate.volumes == SIMULATE_PRESETS["reproduce"]["volumes"] and cfg.simulate.n_slices == 10
    assert MagphaseConfig.model_validate(yaml.safe_load(dump_config(cfg))).simulate == cfg.simulate
    with pytest.raises(ValueError):
        SimulateConfig(preset="huge")
    with pytest.raises(ValueError):
        SimulateConfig(coils={3: 1.0, 100: 1.0})
    with pytest.raises(ValueError):
        SimulateConfig(sequence_mix={"AXT3": 1.0})


# -------------------------------------------------------------------------------------------- files


@pytest.mark.slow
def test_every_file_reads_with_a_consistent_header(dataset):
    out, plan, summary = dataset
    assert summary.written == 7 and summary.kept == 0 and summary.merged and not summary.notes
    volumes, rejects = scan_folder(out)
    assert not rejects and sorted(v.path.stem for v in volumes) == sorted(v.stem for v in plan.volumes)
    for planned in plan.all_volumes:
        with open_volume(raw_path(out, planned)) as volume:
            h, w = planned.matrix
            assert volume.kspace_shape == (planned.n_slices, planned.n_coils, 2 * h, w)
            header = volume.header
            assert header.encoded_matrix == (2 * h, w, 1) and header.recon_matrix == (h, w, 1)
            assert header.encoded_fov_mm[0] == 2 * header.recon_fov_mm[0] == 2 * planned.fov_mm[0]
            assert header.field_strength_t == planned.field_strength_t and header.n_coils == planned.n_coils
            assert header.tr_ms > 0 and header.te_ms > 0
            assert volume.attrs["acquisition"] == planned.sequence
            assert volume.recon_shape == (h, w)
            rss = volume.reconstruction_rss()
            assert volume.attrs["max"] == pytest.approx(float(rss.max()))
        truth = read_truth(truth_path_for(raw_path(out, planned)))
        assert truth.image.shape == (planned.n_slices, h, w)
        assert truth.attrs["plan_hash"] == planned.plan_hash()


@pytest.mark.slow
def test_label_rule_yields_every_class(dataset):
    out, plan, _ = dataset
    annotations = read_annotations(out / "brain.csv", out / "brain_file_list.csv")
    assert not annotations.rejects
    listed, _ = read_file_list(out / "brain_file_list.csv")
    for planned in plan.volumes:
        assert annotations.label_of(planned.stem) == planned.volume_class, planned
        assert (planned.stem in listed) == (planned.volume_class != "unlabeled")
    found = {annotations.label_of(v.stem) for v in plan.volumes}
    assert found == {"normal", "abnormal", "excluded", "unlabeled"}
    assert not any(v.stem in listed for v in plan.external)


@pytest.mark.slow
def test_boxes_cover_their_lesions(dataset):
    out, plan, _ = dataset
    annotations = read_annotations(out / "brain.csv", out / "brain_file_list.csv")
    n_checked = 0
    for planned in plan.volumes:
        if planned.volume_class not in ("abnormal", "excluded"):
            continue
        truth = read_truth(truth_path_for(raw_path(out, planned)))
        boxes = annotations.get(planned.stem).boxes
        h = planned.matrix[0]
        for mask, label in zip(truth.lesion_masks, truth.lesion_labels, strict=True):
            for s in np.nonzero(mask.any(axis=(1, 2)))[0]:
                covering = []
                for box in boxes:
                    if box.slice != s or box.label != label:
                        continue
                    row0, row1, col0, col1 = box.to_array(h)
                    inside = np.zeros_like(mask[s])
                    inside[row0:row1, col0:col1] = True
                    covering.append(not (mask[s] & ~inside).any())
                assert any(covering), (planned.stem, label, s)
                n_checked += 1
    assert n_checked > 0


def test_lesion_boxes_use_the_flipped_convention():
    mask = np.zeros((1, 2, 10, 8), bool)
    mask[0, 1, 6:8, 2:5] = True  # stored rows 6..7, columns 2..4
    (box,) = lesion_boxes("f", mask, ["Mass"], margin=0)
    assert (box.slice, box.x, box.y, box.width, box.height) == (1, 2, 2, 3, 2)  # flipped rows 2..3
    assert box.to_array(10) == (6, 8, 2, 5)


def test_lesion_boxes_stay_on_the_labels_annotated_run():
    mask = np.zeros((2, 6, 10, 8), bool)
    mask[0, 1:5, 3:6, 3:6] = True  # a lesion crossing slices 1..4
    mask[1, 0:2, 2:4, 2:4] = True  # one wholly outside its run
    mask[1, 1, 1:5, 1:5] = True  # largest on slice 1
    runs = {"Mass": (2, 3), "Edema": (4, 5)}
    boxes = lesion_boxes("f", mask, ["Mass", "Edema"], runs=runs)
    assert sorted(b.slice for b in boxes if b.label == "Mass") == [2, 3]
    assert [b.slice for b in boxes if b.label == "Edema"] == [1]  # never skipped: its largest section
    assert len(lesion_boxes("f", mask, ["Mass", "Edema"])) == 4 + 2  # no runs: every qualifying slice


@pytest.mark.slow
def test_external_set(dataset):
    out, plan, _ = dataset
    with open(out / "external" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [v.stem for v in plan.external]
    assert {r["label"] for r in rows} == {"healthy", "metastasis"}
    assert {r["sequence"] for r in rows} <= {"T1TSE", "T2TIRM"}
    with open(out / "external" / "facial_slices.csv", newline="") as handle:
        facial = list(csv.DictReader(handle))
    assert len(facial) == sum(v.n_slices for v in plan.external)
    for planned in plan.external:
        with open_volume(raw_path(out, planned)) as volume:
            assert volume.recon_shape in ((40, 40), (56, 56)) and volume.recon_shape != MATRIX
            assert volume.n_coils == 6 and volume.header.field_strength_t == 1.5
        truth = read_truth(truth_path_for(raw_path(out, planned)))
        flags = [int(r["facial"]) for r in facial if r["file"] == planned.stem]
        assert flags == truth.facial.astype(int).tolist()


# ------------------------------------------------------------------------------ determinism, resume


@pytest.mark.slow
def test_same_seed_same_bytes_and_shards_equal_one_run(tmp_path):
    plan = SimulatedDatasetPlan.build(small_config(volumes=2), seed=3)
    whole = run_simulation(tmp_path / "one", plan, workers=2)  # spawned worker processes, 1 thread each
    assert whole.written == 2 and whole.merged
    first = run_simulation(tmp_path / "shards", plan, shard=(1, 2))
    assert first.in_shard == 1 and not first.merged and not (tmp_path / "shards" / "brain.csv").exists()
    with pytest.raises(DataError, match="not finished"):
        merge_annotations(tmp_path / "shards")
    second = run_simulation(tmp_path / "shards", plan, shard=(0, 2))
    assert second.in_shard == 1 and second.merged
    # two independent renderings of the same plan, split differently (processes, shards): same bytes
    assert kspace_bytes(tmp_path / "one") == kspace_bytes(tmp_path / "shards")
    for name in ("brain.csv", "brain_file_list.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "shards" / name).read_text()


@pytest.mark.slow
def test_resume_keeps_complete_volumes_and_redoes_a_truncated_one(tmp_path):
    plan = SimulatedDatasetPlan.build(small_config(volumes=2), seed=8)
    run_simulation(tmp_path, plan)
    reference = kspace_bytes(tmp_path)
    kept, victim = plan.volumes
    data = raw_path(tmp_path, victim).read_bytes()
    raw_path(tmp_path, victim).write_bytes(data[: len(data) // 2])
    kept_mtime = raw_path(tmp_path, kept).stat().st_mtime_ns
    summary = run_simulation(tmp_path, plan)
    assert {o.stem: o.status for o in summary.outcomes} == {kept.stem: "kept", victim.stem: "written"}
    assert raw_path(tmp_path, kept).stat().st_mtime_ns == kept_mtime
    assert kspace_bytes(tmp_path) == reference and summary.merged
    # a volume whose fragment is missing (killed before the last write) is done again as well
    os.remove(fragment_path(tmp_path, kept))
    assert not volume_is_complete(tmp_path, kept) and volume_is_complete(tmp_path, victim)
    assert not list(tmp_path.rglob("*.tmp"))


def test_folder_with_another_plan_is_refused(tmp_path):
    write_plan(tmp_path, SimulatedDatasetPlan.build(small_config(volumes=1), seed=1))
    with pytest.raises(ConfigError, match="another config or seed"):
        run_simulation(tmp_path, SimulatedDatasetPlan.build(small_config(volumes=1), seed=2))
    assert read_plan(tmp_path).seed == 1 and not list(tmp_path.glob("*.h5"))


def test_folder_acquired_with_other_effects_is_refused(tmp_path):
    from dataclasses import replace

    from magphase.simulate.acquisition import sites_with_effects
    from magphase.simulate.kspace_effects import AcquisitionEffects

    plan = SimulatedDatasetPlan.build(small_config(volumes=1), seed=1)
    plan.sites = sites_with_effects(plan.sites, AcquisitionEffects())
    write_plan(tmp_path, plan)
    for effects in (AcquisitionEffects.off(), replace(AcquisitionEffects(), motion_fraction=0.5)):
        other = SimulatedDatasetPlan.build(small_config(volumes=1), seed=1)
        other.sites = sites_with_effects(other.sites, effects)
        assert other.plan_hash() != plan.plan_hash()
        with pytest.raises(ConfigError, match="another config or seed"):
            write_plan(tmp_path, other)
    assert read_plan(tmp_path).plan_hash() == plan.plan_hash()  # round trip through plan.json


# -------------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_dry_run_run_merge_and_preview(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text("seed: 9\nsimulate:\n  matrix: [48, 48]\n  n_slices: 3\n  coils: {4: 1.0}\n")
    runner = CliRunner()
    out = tmp_path / "data"
    dry = ["simulate", "--out", str(out), "--volumes", "30", "--config", str(config), "--dry-run"]
    result = runner.invoke(app, dry)
    assert result.exit_code == 0, result.output
    assert "AXFLAIR" in result.output and "30 of 30 volumes" in result.output and not out.exists()
    args = ["simulate", "--out", str(out), "--volumes", "2", "--config", str(config)]
    result = runner.invoke(app, [*args, "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    assert "1 volumes written" in result.output and "not merged yet" in result.output
    result = runner.invoke(app, [*args, "--shard", "0/2", "--preview", str(tmp_path / "preview.png")])
    assert result.exit_code == 0, result.output
    assert (out / "brain.csv").is_file() and (tmp_path / "preview.png").stat().st_size > 10_000
    result = runner.invoke(app, ["simulate", "--merge", str(out)])
    assert result.exit_code == 0 and "merged annotations of 2 volumes" in result.output
    result = runner.invoke(app, [*args, "--shard", "3/2"])
    assert result.exit_code != 0
