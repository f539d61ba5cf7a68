"""Volume-level bootstrap intervals of AUROC and of AUROC differences (the downstream report's error bars).

Patches of one volume are not independent test cases: they share the subject, the scan and, for an
abnormal volume, the lesion. The bootstrap therefore resamples VOLUMES with replacement (a cluster
bootstrap) and keeps every patch of a drawn volume, as often as the volume was drawn (the items are
weighted by that count; :func:`magphase.evaluation.metrics.weighted_aurocs` scores every replicate at
once). With several classifier runs
scored on the same test set, the statistic of one replicate is the mean AUROC over the runs: the interval
is then the test-set sampling uncertainty of the configuration's mean, and the run-to-run spread is
reported beside it.

Replicates are drawn from ``seed`` and the volume ids alone, so every configuration scored on the same
test set sees the same resamples: the difference of two configurations is a PAIRED bootstrap (the
replicate-wise difference), which is much tighter than comparing two separate intervals. Two
configurations are "not distinguishable" when the percentile interval of their difference contains 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from magphase.evaluation.metrics import safe_auroc, weighted_aurocs
from magphase.utils.seeds import derived_rng

_BOOTSTRAP_TAG = 0xB007


@dataclass(frozen=True)
class Interval:
    """A statistic with its bootstrap percentile interval.

    Attributes:
        estimate: the statistic on the original data.
        lo, hi: percentile bounds of the ``level`` interval (NaN without valid replicates).
        sd: standard deviation of the replicates (ddof = 1).
        n_valid: replicates where the statistic was defined (both classes drawn).
    """

    estimate: float
    lo: float
    hi: float
    sd: float
    n_valid: int

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0 (a difference that can be told apart)."""
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0 or self.hi < 0))


def volume_counts(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each item is drawn in each replicate of a volume resample.

    Args:
        groups: ``(N,)`` volume id of each item.
        n_boot: replicates.
        seed: resample seed (the same seed and volume set give the same replicates).
    Returns:
        ``(weights, volumes)``: ``n_boot x N`` float64 item weights (the draw count of the item's volume)
        and the sorted unique volume ids.
    """
    g = np.asarray(groups).ravel()
    volumes, inverse = np.unique(g.astype(str), return_inverse=True)
    rng = derived_rng(seed, _BOOTSTRAP_TAG, len(volumes))
    draws = rng.integers(0, len(volumes), size=(int(n_boot), len(volumes)))
    counts = np.zeros((int(n_boot), len(volumes)), np.float64)
    np.add.at(counts, (np.repeat(np.arange(int(n_boot)), len(volumes)), draws.ravel()), 1.0)
    return counts[:, inverse], volumes


def auroc_replicates(
    targets: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """The run-mean AUROC and its ``n_boot`` volume-bootstrap replicates (NaN where one class is missing).

    Args:
        targets: ``(N,)`` 0/1 targets.
        scores: ``(N,)`` scores of one classifier or ``(R, N)`` of ``R`` runs on the same items.
        groups: ``(N,)`` volume id of each item.
    """
    t = np.asarray(targets).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != t.size or np.asarray(groups).size != t.size:
        raise ValueError(f"{t.size} targets, scores {s.shape}, {np.asarray(groups).size} groups")
    estimate = float(np.mean([safe_auroc(t, run, warn=False) for run in s]))
    weights, _ = volume_counts(groups, n_boot, seed)
    reps = np.mean([weighted_aurocs(t, run, weights) for run in s], axis=0)
    return estimate, reps


def interval(estimate: float, replicates: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval of the finite ``replicates`` around ``estimate``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2 or not math.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan, math.nan, int(r.size))
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return Interval(float(estimate), float(lo), float(hi), float(r.std(ddof=1)), int(r.size))


def bootstrap_auroc(
    targets: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Volume-bootstrap interval of the (run-mean) AUROC; arguments as :func:`auroc_replicates`."""
    estimate, reps = auroc_replicates(targets, scores, groups, n_boot=n_boot, seed=seed)
    return interval(estimate, reps, level)


def difference_interval(
    a: tuple[float, np.ndarray], b: tuple[float, np.ndarray], level: float = 0.95
) -> Interval:
    """Paired interval of ``A - B`` from two :func:`auroc_replicates` results drawn with the same seed
    on the same items."""
    (ea, ra), (eb, rb) = a, b
    if ra.shape != rb.shape:
        raise ValueError(f"replicate counts differ: {ra.shape} vs {rb.shape}")
    return interval(ea - eb, ra - rb, level)


__all__ = [
    "Interval",
    "auroc_replicates",
    "bootstrap_auroc",
    "difference_interval",
    "interval",
    "volume_counts",
]
