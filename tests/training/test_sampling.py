"""The global-batch sampler: epoch coverage, rank sharding, resume, weighted frequencies."""

from __future__ import annotations

import numpy as np
import pytest

from magphase.training.sampling import GlobalBatchSampler


def test_uniform_epochs_cover_every_item_once() -> None:
    s = GlobalBatchSampler(12, 4, seed=3, total_steps=9)
    batches = [s.global_batch_indices(k) for k in range(9)]
    for epoch in range(3):
        items = np.concatenate(batches[3 * epoch : 3 * epoch + 3])
        assert sorted(items.tolist()) == list(range(12))
    assert not np.array_equal(np.concatenate(batches[:3]), np.concatenate(batches[3:6]))  # reshuffled


def test_batches_straddle_epochs_when_dataset_is_small() -> None:
    s = GlobalBatchSampler(3, 8, seed=0, total_steps=3)
    stream = np.concatenate([s.global_batch_indices(k) for k in range(3)])  # 24 draws = 8 epochs
    for e in range(8):
        assert sorted(stream[3 * e : 3 * e + 3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("weighted", [False, True])
def test_ranks_partition_the_global_batch_and_resume_restarts_the_stream(weighted: bool) -> None:
    weights = np.arange(1, 21, dtype=float) if weighted else None
    single = GlobalBatchSampler(20, 6, seed=9, total_steps=12, weights=weights)
    ranks = [
        GlobalBatchSampler(20, 6, seed=9, total_steps=12, rank=r, world_size=3, weights=weights)
        for r in range(3)
    ]
    for step, per_rank in enumerate(zip(*(list(r) for r in ranks), strict=True)):
        glob = single.global_batch_indices(step)
        assert [len(b) for b in per_rank] == [2, 2, 2]
        for r, b in enumerate(per_rank):
            assert b == glob[r::3].tolist()
    resumed = GlobalBatchSampler(20, 6, seed=9, total_steps=12, start_step=7, weights=weights)
    assert list(resumed) == list(single)[7:]
    assert len(resumed) == 5


def test_seed_changes_order() -> None:
    a = GlobalBatchSampler(50, 10, seed=1, total_steps=5)
    b = GlobalBatchSampler(50, 10, seed=2, total_steps=5)
    assert list(a) != list(b)
    assert list(a) == list(GlobalBatchSampler(50, 10, seed=1, total_steps=5))


def test_weighted_frequencies_follow_weights() -> None:
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    s = GlobalBatchSampler(5, 50, seed=4, total_steps=400, weights=weights)
    draws = np.concatenate(list(s))
    freq = np.bincount(draws, minlength=5) / draws.size
    assert freq[4] == 0.0  # zero weight is never drawn
    np.testing.assert_allclose(freq[:4], weights[:4] / weights.sum(), atol=0.01)  # 20k draws: sd ~ 0.003


def test_invalid_weights_raise() -> None:
    for bad in (
        np.ones(4),
        np.array([1.0, -1.0, 1.0, 1.0, 1.0]),
        np.zeros(5),
        np.array([1, np.nan, 1, 1, 1]),
    ):
        with pytest.raises(ValueError, match="sample_weights"):
            GlobalBatchSampler(5, 2, seed=0, total_steps=1, weights=bad)
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchSampler(5, 3, seed=0, total_steps=1, world_size=2)
