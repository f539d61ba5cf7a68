"""Volume-level splits (70/15/15 labelled, 95/2.5/2.5 unlabeled) and the Table 1 summary."""

import numpy as np
import pandas as pd
import pytest

from magphase.data.splits import (
    assign_splits,
    proportional_sequence,
    split_counts,
    table1,
    table1_markdown,
)


def test_split_counts():
    assert split_counts(20, (0.7, 0.15, 0.15)) == (14, 3, 3)
    assert split_counts(100, (0.7, 0.15, 0.15)) == (70, 15, 15)
    assert split_counts(3, (0.7, 0.15, 0.15)) == (1, 1, 1)
    assert split_counts(40, (0.95, 0.025, 0.025)) == (38, 1, 1)
    assert split_counts(2, (0.7, 0.15, 0.15)) == (2, 0, 0)  # too few to fill every split
    assert split_counts(5, (0.7, 0.15, 0.15), min_per_split=0) == (3, 1, 1)  # largest remainder
    assert sum(split_counts(17, (0.95, 0.025, 0.025))) == 17
    with pytest.raises(ValueError):
        split_counts(10, (0.5, 0.5, 0.5))


def _volumes():
    rows = []
    for label, seqs, n in (
        ("abnormal", ("AXFLAIR", "AXT1"), 20),
        ("normal", ("AXFLAIR", "AXT1POST"), 40),
        ("unlabeled", ("AXT2",), 80),
    ):
        for seq in seqs:
            rows += [{"volume": f"{label}_{seq}_{i:03d}", "sequence": seq, "label": label} for i in range(n)]
    return pd.DataFrame(rows)


def test_assign_splits_is_stratified_and_deterministic():
    vols = _volumes()
    splits = assign_splits(vols, seed=3)
    assert set(splits) == set(vols["volume"])  # every volume exactly once
    vols["split"] = vols["volume"].map(splits)
    counts = vols.groupby(["label", "sequence", "split"]).size()
    assert counts[("abnormal", "AXFLAIR", "train")] == 14 and counts[("abnormal", "AXFLAIR", "test")] == 3
    assert counts[("normal", "AXT1POST", "val")] == 6
    assert counts[("unlabeled", "AXT2", "train")] == 76 and counts[("unlabeled", "AXT2", "val")] == 2
    # Independent of row order, dependent on the seed.
    shuffled = vols.sample(frac=1.0, random_state=1)[["volume", "sequence", "label"]]
    assert assign_splits(shuffled, seed=3) == splits
    assert assign_splits(vols, seed=4) != splits


@pytest.mark.parametrize("counts", [(14, 3, 3), (7, 2, 1), (1, 1, 1), (5, 0, 2), (0, 0, 0)])
def test_proportional_sequence_is_exact_and_spread(counts):
    seq = proportional_sequence(counts)
    assert [seq.count(i) for i in range(3)] == list(counts)
    n = sum(counts)
    for r in range(1, n + 1):  # every prefix within one item of its share
        for i in range(3):
            assert abs(seq[:r].count(i) - counts[i] * r / n) < 1.0 + 1e-9


def test_findings_are_spread_over_the_splits():
    # 20 abnormal volumes: 10 extra-axial masses, 10 lacunar infarcts (plus normal ones without a finding).
    rows = [
        {
            "volume": f"v{i:02d}",
            "sequence": "AXT1",
            "label": "abnormal",
            "finding": "mass" if i < 10 else "lacune",
        }
        for i in range(20)
    ] + [{"volume": f"n{i:02d}", "sequence": "AXT1", "label": "normal", "finding": ""} for i in range(20)]
    vols = pd.DataFrame(rows)
    for seed in range(20):
        splits = assign_splits(vols, seed=seed)
        vols["split"] = vols["volume"].map(splits)
        counts = vols.groupby(["label", "split"]).size()
        assert (counts["abnormal"].to_dict(), counts["normal"].to_dict()) == (
            {"train": 14, "val": 3, "test": 3},
            {"train": 14, "val": 3, "test": 3},
        )
        by_finding = vols[vols.label == "abnormal"].groupby(["split", "finding"]).size()
        for split, lo in (("train", 6), ("val", 1), ("test", 1)):
            assert by_finding[split].min() >= lo and len(by_finding[split]) == 2, (seed, split, by_finding)
    # Without the column (or with a single finding) the assignment is the plain shuffled one.
    plain = assign_splits(vols.drop(columns=["finding", "split"]), seed=5)
    one = assign_splits(vols.assign(finding="mass").drop(columns=["split"]), seed=5)
    assert plain == one


def test_assign_splits_rejects_duplicates():
    vols = pd.DataFrame([{"volume": "a", "sequence": "AXT1", "label": "normal"}] * 2)
    with pytest.raises(ValueError, match="twice"):
        assign_splits(vols, 0)


def test_table1_layout_and_totals():
    rng = np.random.default_rng(0)
    n = 500
    manifest = pd.DataFrame(
        {
            "label": rng.choice(["normal", "abnormal", "unlabeled"], n),
            "sequence": rng.choice(["AXFLAIR", "AXT1", "AXT2"], n),
            "split": rng.choice(["train", "val", "test"], n, p=[0.7, 0.15, 0.15]),
        }
    )
    t = table1(manifest)
    assert list(t.columns) == ["class", "sequence", "Train", "Validation", "Test", "Total"]
    assert list(t["class"].unique()) == ["Abnormal", "Normal", "Unlabeled", "Total"]
    body = t[~t["sequence"].isin(["Subtotal", ""])]
    assert body["Total"].sum() == n
    for _cls, g in t[t["class"] != "Total"].groupby("class"):
        sub = g[g["sequence"] == "Subtotal"].iloc[0]
        assert sub["Total"] == g[g["sequence"] != "Subtotal"]["Total"].sum()
    total = t[t["class"] == "Total"].iloc[0]
    assert total["Total"] == n
    assert total["Train"] == (manifest["split"] == "train").sum()
    assert (body["Train"] + body["Validation"] + body["Test"] == body["Total"]).all()
    md = table1_markdown(t)
    assert md.startswith("| Class | Sequence | Train | Validation | Test | Total |")
    assert f"**{n:,}**" in md and md.count("*subtotal*") == 3


def test_dominant_finding_of_a_volume():
    from pathlib import Path

    from magphase.data.prepare import VolumeTask, dominant_finding
    from magphase.io.annotations import Box, normalize_label

    abnormal = tuple(sorted(normalize_label(x) for x in ("Mass", "Lacunar infarct", "Extra-axial mass")))

    def box(label: str, s: int = 0) -> Box:
        return Box("file_brain_AXT1_201_1", s, 10, 10, 5, 5, label)

    boxes = (box("Lacunar infarct"), box("Mass", 1), box("lacunar infarct", 2), box("Normal variant", 3))
    task = VolumeTask(Path("file_brain_AXT1_201_1.h5"), "abnormal", boxes, abnormal)
    assert dominant_finding(task) == normalize_label("Lacunar infarct")  # 2 boxes beat 1; case-insensitive
    tie = VolumeTask(Path("x.h5"), "abnormal", (box("Mass"), box("Extra-axial mass")), abnormal)
    assert dominant_finding(tie) == normalize_label("Extra-axial mass")  # ties: alphabetical
    assert dominant_finding(VolumeTask(Path("y.h5"), "normal", (box("Normal variant"),), abnormal)) == ""
