"""Deterministic global-batch sampling, sharded over ranks, uniform or weighted.

The sampler fixes the GLOBAL batch of every step from ``(seed, step)`` alone, independently of the number
of ranks; rank ``r`` of ``W`` takes the items ``r::W`` of it. Consequences:

- A DDP run of ``W`` ranks sees exactly the items of the single-process run with the same global batch,
  and because each rank's loss is a mean over its ``B / W`` items and DDP averages gradients, the update
  equals the single-process one (up to float summation order).
- Resuming at step ``k`` needs no sampler state: the stream restarts at ``k`` (even on another ``W``).

Uniform mode (a ``DistributedSampler`` equivalent): an endless stream of per-epoch permutations,
``perm(epoch 0) ++ perm(epoch 1) ++ ...``, each seeded by ``(seed, epoch)``, cut into consecutive global
batches; no item is dropped and batches may straddle an epoch boundary (so datasets smaller than the batch
work too). Weighted mode: items drawn with replacement with probability ``w_i / sum(w)``, in blocks of
``ceil(N / B)`` steps seeded by ``(seed, block)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from magphase.utils.seeds import derived_rng

_UNIFORM_TAG = 0x55
_WEIGHTED_TAG = 0x57


def validate_weights(weights: np.ndarray | torch.Tensor | list[float], num_items: int) -> np.ndarray:
    """Check per-item sampling weights and return them normalised to probabilities (float64, sum 1).

    Raises:
        ValueError: wrong length or rank, negative / non-finite entries, or all zero.
    """
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != num_items:
        raise ValueError(
            f"sample_weights must have shape ({num_items},) (one per dataset item), got {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weights must be finite and >= 0")
    total = w.sum()
    if total <= 0:
        raise ValueError("sample_weights sum to zero: nothing can be drawn")
    return w / total


class GlobalBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batch sampler yielding this rank's share of the global batch of steps ``start_step .. total_steps-1``.

    Args:
        num_items: dataset length N.
        global_batch: items per step over all ranks B (a multiple of ``world_size``).
        seed: the run's seed.
        total_steps: one past the last step to yield.
        start_step: first step to yield (a resumed run starts at its checkpoint's step).
        rank, world_size: this process and the number of processes.
        weights: optional per-item weights (length N) for sampling with replacement.
    """

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        *,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: np.ndarray | torch.Tensor | list[float] | None = None,
    ):
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if global_batch % world_size != 0:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.num_items = int(num_items)
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.probabilities = None if weights is None else validate_weights(weights, self.num_items)
        self.block_steps = max(1, math.ceil(self.num_items / self.global_batch))
        self._cache: dict[int, np.ndarray] = {}

    @property
    def weighted(self) -> bool:
        return self.probabilities is not None

    def _chunk(self, key: int) -> np.ndarray:
        """Epoch permutation (uniform) or block of draws (weighted), memoised for the two latest keys."""
        if key not in self._cache:
            if self.probabilities is None:
                rng = derived_rng(self.seed, _UNIFORM_TAG, key)
                chunk = rng.permutation(self.num_items)
            else:
                rng = derived_rng(self.seed, _WEIGHTED_TAG, key)
                chunk = rng.choice(
                    self.num_items, size=self.block_steps * self.global_batch, p=self.probabilities
                )
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[key] = chunk.astype(np.int64)
        return self._cache[key]

    def global_batch_indices(self, step: int) -> np.ndarray:
        """The B dataset indices of global step ``step`` (identical on every rank and world size)."""
        if self.probabilities is None:
            positions = np.arange(step * self.global_batch, (step + 1) * self.global_batch, dtype=np.int64)
            epochs = positions // self.num_items
            out = np.empty(self.global_batch, dtype=np.int64)
            for epoch in np.unique(epochs):
                sel = epochs == epoch
                out[sel] = self._chunk(int(epoch))[positions[sel] % self.num_items]
            return out
        block, offset = divmod(step, self.block_steps)
        chunk = self._chunk(block)
        return chunk[offset * self.global_batch : (offset + 1) * self.global_batch]

    def rank_indices(self, step: int) -> list[int]:
        """This rank's ``B / W`` indices of step ``step``: the global batch's items ``rank::world_size``."""
        return self.global_batch_indices(step)[self.rank :: self.world_size].tolist()

    def epoch_of(self, step: int) -> float:
        """Items drawn before ``step``, in dataset lengths (fractional epoch)."""
        return step * self.global_batch / self.num_items

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            yield self.rank_indices(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


__all__ = ["GlobalBatchSampler", "validate_weights"]
