"""Volume-level bootstrap intervals of AUROC (magphase.evaluation.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from magphase.evaluation.bootstrap import (
    auroc_replicates,
    bootstrap_auroc,
    difference_interval,
    interval,
    volume_counts,
)
from magphase.evaluation.metrics import safe_auroc, weighted_aurocs


def _volumes(n_volumes: int, patches: int, rng: np.random.Generator, effect: float = 1.0):
    """Targets per volume (half abnormal), a shared volume offset and patch noise in the scores."""
    target_v = np.arange(n_volumes) % 2
    offset_v = rng.standard_normal(n_volumes)
    groups = np.repeat([f"v{i}" for i in range(n_volumes)], patches)
    targets = np.repeat(target_v, patches)
    scores = effect * targets + np.repeat(offset_v, patches) + 0.3 * rng.standard_normal(targets.size)
    return targets, scores, groups


def test_weighted_auroc_equals_the_auroc_of_repeated_items():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 40)
    s = rng.standard_normal(40)
    w = rng.integers(0, 4, 40).astype(float)
    rep = np.repeat(np.arange(40), w.astype(int))
    assert safe_auroc(t, s, sample_weight=w) == pytest.approx(safe_auroc(t[rep], s[rep]))
    assert np.isnan(safe_auroc(t, s, sample_weight=(t == 1).astype(float), warn=False))  # one class drawn


def test_vectorised_weighted_auroc_equals_sklearn_row_by_row():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 2, 60)
    s = np.round(rng.standard_normal(60), 1)  # rounded: many ties
    w = rng.integers(0, 3, (25, 60)).astype(float)
    w[0] = 1.0
    got = weighted_aurocs(t, s, w)
    want = [safe_auroc(t, s, sample_weight=row, warn=False) for row in w]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(safe_auroc(t, s))
    assert np.isnan(weighted_aurocs(t, s, (t == 0).astype(float))[0])


def test_volume_counts_resample_whole_volumes_reproducibly():
    groups = np.repeat(["a", "b", "c", "d"], [3, 1, 2, 5])
    w, volumes = volume_counts(groups, 200, seed=4)
    assert list(volumes) == ["a", "b", "c", "d"] and w.shape == (200, 11)
    for g in volumes:  # every patch of a volume carries the volume's draw count
        cols = w[:, groups == g]
        assert (cols == cols[:, :1]).all()
    per_volume = np.stack([w[:, groups == g][:, 0] for g in volumes], axis=1)
    assert (per_volume.sum(axis=1) == 4).all()  # 4 volumes drawn per replicate
    np.testing.assert_array_equal(w, volume_counts(groups, 200, seed=4)[0])
    assert not np.array_equal(w, volume_counts(groups, 200, seed=5)[0])


def test_one_patch_per_volume_matches_the_hanley_mcneil_standard_error():
    # With one item per volume the cluster bootstrap is the ordinary bootstrap; its sd must agree with
    # the analytic standard error of Hanley & McNeil (1982).
    rng = np.random.default_rng(1)
    n = 200
    t = np.arange(n) % 2
    s = t * 1.0 + rng.standard_normal(n)
    iv = bootstrap_auroc(t, s, np.arange(n), n_boot=2000, seed=0)
    a = safe_auroc(t, s)
    n1 = n0 = n // 2
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert iv.sd == pytest.approx(se, rel=0.15)
    assert iv.lo < a < iv.hi and iv.n_valid == 2000


def test_clustered_patches_widen_the_interval_and_more_volumes_narrow_it():
    rng = np.random.default_rng(2)
    t, s, g = _volumes(40, 10, rng)
    clustered = bootstrap_auroc(t, s, g, n_boot=800, seed=0)
    naive = bootstrap_auroc(t, s, np.arange(t.size), n_boot=800, seed=0)
    assert clustered.sd > 1.5 * naive.sd  # patches of a volume are not independent cases
    t4, s4, g4 = _volumes(160, 10, rng)
    assert bootstrap_auroc(t4, s4, g4, n_boot=800, seed=0).sd < 0.7 * clustered.sd


def test_several_runs_average_and_paired_differences():
    rng = np.random.default_rng(3)
    t, s, g = _volumes(60, 5, rng)
    runs = np.stack([s + 0.2 * rng.standard_normal(s.size) for _ in range(3)])
    est, reps = auroc_replicates(t, runs, g, n_boot=300, seed=1)
    assert est == pytest.approx(np.mean([safe_auroc(t, r) for r in runs]))
    # the same configuration against itself: a zero difference that cannot be told apart
    same = difference_interval((est, reps), (est, reps))
    assert same.estimate == 0 and same.lo == 0 and same.hi == 0 and not same.excludes_zero
    # a classifier that sees the target much better is distinguishable, pairing keeps it tight
    better = auroc_replicates(t, runs + 2.0 * t, g, n_boot=300, seed=1)
    d = difference_interval(better, (est, reps))
    assert d.estimate > 0 and d.excludes_zero
    # noise only: not distinguishable
    other = auroc_replicates(t, runs + 0.05 * rng.standard_normal(runs.shape), g, n_boot=300, seed=1)
    assert not difference_interval(other, (est, reps)).excludes_zero


def test_interval_degenerate_inputs():
    assert np.isnan(interval(0.7, np.array([np.nan, np.nan])).lo)
    with pytest.raises(ValueError, match="level"):
        interval(0.7, np.zeros(10), level=1.5)
    with pytest.raises(ValueError, match="targets"):
        auroc_replicates(np.zeros(3), np.zeros(4), np.zeros(3))
