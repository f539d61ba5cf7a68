"""Volume-level splits (70/15/15 labelled, 95/2.5/2.5 unlabeled) and the Table 1 summary."""

import numpy as np
import pandas as pd
import pytest

from magphase.data.splits import assign_splits, split_counts, table1, table1_markdown


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
