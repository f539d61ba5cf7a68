"""Patch-to-volume aggregation for the external test set (paper 2.1.4 and 2.4.2) and AUROC helpers.

The external set carries labels per VOLUME (healthy / metastasis), while the classifier scores patches
(the four centre patches of every kept slice). A volume's score is the mean of its top 5 % patch
probabilities, at least one patch: it follows the most suspicious tissue without being dominated by a
single outlier patch, and without averaging a small lesion away over mostly normal slices.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from magphase.errors import DataError
from magphase.evaluation.metrics import safe_auroc

log = logging.getLogger(__name__)

#: Patch label -> binary target of the downstream task.
POSITIVE_LABEL = "abnormal"
NEGATIVE_LABEL = "normal"


def top_fraction_count(n: int, top_fraction: float = 0.05) -> int:
    """How many of ``n`` patch probabilities enter a volume's score: ``ceil(n * top_fraction)``, >= 1.

    A tiny tolerance keeps exact products exact (``0.05 * 60`` is ``3.0000000000000004`` in floating point
    and must give 3, not 4).
    """
    if n <= 0:
        raise ValueError("a volume needs at least one patch")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    return max(1, min(n, math.ceil(n * top_fraction - 1e-9)))


def top_fraction_mean(probabilities: np.ndarray, top_fraction: float = 0.05) -> float:
    """Mean of the largest ``top_fraction_count(len(p))`` values of ``probabilities`` (1-D)."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    k = top_fraction_count(p.size, top_fraction)
    return float(np.sort(p)[-k:].mean())


def binary_targets(labels: pd.Series | np.ndarray, source: str = "manifest") -> np.ndarray:
    """``normal`` -> 0, ``abnormal`` -> 1 (float32); anything else is a :class:`DataError`."""
    arr = np.asarray(labels, dtype=object)
    bad = ~np.isin(arr, [POSITIVE_LABEL, NEGATIVE_LABEL])
    if bad.any():
        raise DataError(source, "label", f"expected normal/abnormal, found {arr[bad][0]!r}")
    return (arr == POSITIVE_LABEL).astype(np.float32)


def volume_scores(
    probabilities: np.ndarray,
    manifest: pd.DataFrame,
    top_fraction: float = 0.05,
    source: str = "external store",
) -> pd.DataFrame:
    """Aggregate patch probabilities to one score per volume.

    Args:
        probabilities: ``(N,)`` abnormality probability per manifest row.
        manifest: ``N`` rows with ``volume`` and ``label`` (normal/abnormal, the volume's label repeated on
            each of its patches).
        top_fraction: share of a volume's highest probabilities averaged (paper: 0.05).
    Returns:
        DataFrame sorted by volume: ``volume, label, target, n_patches, n_top, score``.
    Raises:
        DataError: lengths differ, a label is not normal/abnormal, or a volume has mixed labels.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if p.size != len(manifest):
        raise DataError(source, "manifest", f"{len(manifest)} rows but {p.size} probabilities")
    targets = binary_targets(manifest["label"], source)
    frame = pd.DataFrame({"volume": manifest["volume"].to_numpy(), "target": targets, "p": p})
    rows = []
    for volume, group in frame.groupby("volume", sort=True):
        t = group["target"].unique()
        if t.size != 1:
            raise DataError(source, "label", f"volume {volume!r} mixes normal and abnormal patches")
        k = top_fraction_count(len(group), top_fraction)
        rows.append(
            {
                "volume": volume,
                "label": POSITIVE_LABEL if t[0] == 1 else NEGATIVE_LABEL,
                "target": int(t[0]),
                "n_patches": len(group),
                "n_top": k,
                "score": top_fraction_mean(group["p"].to_numpy(), top_fraction),
            }
        )
    return pd.DataFrame(rows, columns=["volume", "label", "target", "n_patches", "n_top", "score"])


def external_auroc(
    probabilities: np.ndarray,
    manifest: pd.DataFrame,
    top_fraction: float = 0.05,
    source: str = "external store",
) -> tuple[float, pd.DataFrame]:
    """Volume-level AUROC of the external test set and the per-volume table (:func:`volume_scores`)."""
    table = volume_scores(probabilities, manifest, top_fraction, source)
    return safe_auroc(table["target"].to_numpy(), table["score"].to_numpy()), table


__all__ = [
    "binary_targets",
    "external_auroc",
    "top_fraction_count",
    "top_fraction_mean",
    "volume_scores",
]
