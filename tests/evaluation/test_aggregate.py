"""External-test aggregation: volume score = mean of the top 5 % patch probabilities (paper 2.4.2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magphase.errors import DataError
from magphase.evaluation.aggregate import external_auroc, top_fraction_count, top_fraction_mean, volume_scores
from magphase.evaluation.metrics import safe_auroc


@pytest.mark.parametrize(
    ("n", "k"), [(1, 1), (10, 1), (20, 1), (21, 2), (40, 2), (60, 3), (64, 4), (100, 5), (101, 6)]
)
def test_top_count_is_ceil_of_five_percent_and_at_least_one(n, k):
    assert top_fraction_count(n, 0.05) == k


def test_forty_patches_score_is_mean_of_top_two():
    p = np.linspace(0.0, 0.5, 40)
    p[7], p[30] = 0.9, 0.7
    assert top_fraction_mean(p) == pytest.approx((0.9 + 0.7) / 2)
    assert top_fraction_mean(np.array([0.2])) == pytest.approx(0.2)
    assert top_fraction_mean(p, 1.0) == pytest.approx(p.mean())


def test_volume_scores_table_by_hand():
    manifest = pd.DataFrame(
        {
            "volume": ["b"] * 40 + ["a"] * 8,
            "label": ["abnormal"] * 40 + ["normal"] * 8,
        }
    )
    p = np.concatenate([np.full(40, 0.1), np.full(8, 0.3)])
    p[[3, 17]] = [0.8, 0.6]
    table = volume_scores(p, manifest)
    assert list(table["volume"]) == ["a", "b"]
    assert list(table["n_top"]) == [1, 2]
    assert table.set_index("volume").loc["b", "score"] == pytest.approx(0.7)
    assert table.set_index("volume").loc["a", "score"] == pytest.approx(0.3)
    assert list(table["target"]) == [0, 1]


def test_external_auroc_uses_volume_scores_not_patch_means():
    # abnormal volumes: mostly normal-looking patches and one suspicious patch (a small lesion)
    rng = np.random.default_rng(0)
    vols, labels, probs = [], [], []
    for v in range(6):
        abnormal = v % 2 == 1
        p = rng.uniform(0.0, 0.3, 40)
        if abnormal:
            p[:2] = 0.95  # the lesion patches
        else:
            p += 0.1  # normal volumes look slightly more suspicious on average
        vols += [f"v{v}"] * 40
        labels += ["abnormal" if abnormal else "normal"] * 40
        probs.append(p)
    manifest = pd.DataFrame({"volume": vols, "label": labels})
    p = np.concatenate(probs)
    auc, table = external_auroc(p, manifest)
    assert auc == pytest.approx(1.0)
    assert len(table) == 6
    # averaging every patch would rank them the other way round
    mean_scores = pd.DataFrame({"v": vols, "p": p, "t": np.array(labels) == "abnormal"}).groupby("v").mean()
    assert safe_auroc(mean_scores["t"].to_numpy(), mean_scores["p"].to_numpy()) < 0.5


def test_mixed_labels_in_a_volume_or_unknown_labels_are_data_errors():
    manifest = pd.DataFrame({"volume": ["a", "a"], "label": ["normal", "abnormal"]})
    with pytest.raises(DataError, match="mixes"):
        volume_scores(np.array([0.1, 0.2]), manifest)
    manifest = pd.DataFrame({"volume": ["a"], "label": ["unlabeled"]})
    with pytest.raises(DataError, match="label"):
        volume_scores(np.array([0.1]), manifest)
    with pytest.raises(DataError, match="probabilities"):
        volume_scores(np.array([0.1, 0.2]), manifest)


def test_safe_auroc_single_class_is_nan():
    assert np.isnan(safe_auroc(np.zeros(4), np.arange(4.0)))
    assert safe_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
