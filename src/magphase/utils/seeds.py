"""The one seed derivation: independent random streams from a tuple of integers.

Every random choice in magphase takes its seed from the config; a stage that needs several
independent streams (per rank, per volume, per sample group) derives them here, so the same config
and seed give the same output whatever the batching or the number of processes.
"""

from __future__ import annotations

import numpy as np


def _sequence(parts: tuple[int, ...]) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(p) for p in parts])


def derive_seed(*parts: int, bits: int = 63) -> int:
    """A seed derived from integers (e.g. ``(seed, rank)``): independent streams per tuple.

    Args:
        parts: the base seed first, then stream keys (non-negative integers; SeedSequence refuses
            negative ones, so a caller with a possibly negative seed folds it first).
        bits: 63 (default, fits torch and numpy generators) or 32.
    """
    if not parts:
        raise ValueError("derive_seed needs at least the base seed")
    if bits == 32:
        return int(_sequence(parts).generate_state(1)[0])
    if bits != 63:
        raise ValueError(f"bits must be 32 or 63, got {bits}")
    hi, lo = (int(v) for v in _sequence(parts).generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & (2**63 - 1)


def derived_rng(*parts: int) -> np.random.Generator:
    """A numpy generator on the stream of ``parts`` (the same tuple always gives the same stream)."""
    return np.random.default_rng(_sequence(parts))


def offset_seed(seed: int, offset: int) -> int:
    """``seed * 1000 + offset``: the seeds of the synthetic sample stores (one offset per store kind,
    see :mod:`magphase.stages.sample`). Kept as arithmetic, not :func:`derive_seed`, so that stores
    written before stay valid: their recipe records this seed."""
    return int(seed) * 1000 + int(offset)


__all__ = ["derive_seed", "derived_rng", "offset_seed"]
