"""Hierarchical (nested) training subsets for the downstream experiments (paper 2.4.2).

Real data is reduced at the VOLUME level: a real fraction ``f`` keeps ``f`` of the training volumes with
every patch they hold. Volumes are stratified by (sequence, volume class) so each stratum keeps its share;
within a stratum the volumes are ordered once by a seeded permutation and a fraction keeps a PREFIX of
that order. A prefix of a longer prefix is inside it, so every smaller fraction is a subset of every
larger one ("a subset containing 10 % is sampled first; each larger fraction adds new samples").

Synthetic data has no volumes: each generated item is its own unit. Synthetic items are ordered once per
(label, sequence) stratum by a seeded permutation, and a request for ``k`` items of a stratum takes the
first ``k``. Larger requests therefore contain smaller ones, across fractions and across experiments.

- Substitution (real fraction ``f``): real prefix at ``f``; per (label, sequence) the removed real PATCHES
  are replaced by as many synthetic items of the same label and sequence, so the total size and the class
  and sequence mix stay those of the full real training set.
- Additive (synthetic fraction ``a``): the full real set plus, per (label, sequence), ``round(a * n)``
  synthetic items where ``n`` is that stratum's real training size.

All functions take manifests (pandas DataFrames, one row per item) and return POSITIONS (0-based row
numbers) into them; the caller maps positions to store rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from magphase.errors import DataError
from magphase.utils.seeds import derived_rng

#: Columns stratifying real volumes (``volume_class``: abnormal if any patch of the volume is abnormal).
VOLUME_STRATA: tuple[str, ...] = ("sequence", "volume_class")
#: Columns stratifying items for matched replacement.
ITEM_STRATA: tuple[str, ...] = ("label", "sequence")


def _stable_int(*parts: object) -> int:
    """A 63-bit integer from the parts' text (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def fraction_count(fraction: float, n: int) -> int:
    """Units kept of ``n`` at ``fraction``: round half up, and at least one when ``fraction > 0``.

    Monotone in ``fraction`` (so prefixes nest). The floor of one keeps every stratum present at small
    fractions (a classifier needs both classes of every sequence); it can make the smallest fractions
    slightly larger than nominal on tiny datasets, which the results record as actual counts.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if n <= 0 or fraction == 0.0:
        return 0
    return max(1, min(n, int(np.floor(fraction * n + 0.5 + 1e-9))))


def volume_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per volume: ``volume, sequence, volume_class, n_items``.

    ``volume_class`` is ``abnormal`` when any item of the volume is labelled abnormal, else the
    volume's (single) other label.

    Raises:
        DataError: a volume spans several sequences, or the manifest lacks a needed column.
    """
    for col in ("volume", "sequence", "label"):
        if col not in manifest.columns:
            raise DataError("manifest", col, "column missing")
    grouped = manifest.groupby("volume", sort=True)
    n_seq = grouped["sequence"].nunique()
    if (n_seq > 1).any():
        bad = n_seq[n_seq > 1].index[0]
        raise DataError("manifest", "sequence", f"volume {bad!r} has items of several sequences")
    table = pd.DataFrame(
        {
            "sequence": grouped["sequence"].first(),
            "volume_class": grouped["label"].agg(
                lambda s: "abnormal" if (s == "abnormal").any() else str(s.iloc[0])
            ),
            "n_items": grouped.size(),
        }
    )
    return table.reset_index()


def volume_order(manifest: pd.DataFrame, seed: int) -> dict[tuple[str, ...], list[str]]:
    """Inclusion order of the volumes of each (sequence, volume_class) stratum (seeded, order-free).

    Volumes are sorted by name before the permutation, so the order depends only on the seed and the set
    of volumes, never on the manifest's row order.
    """
    vols = volume_table(manifest)
    order: dict[tuple[str, ...], list[str]] = {}
    for key, group in vols.groupby(list(VOLUME_STRATA), sort=True):
        key = tuple(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        names = sorted(group["volume"])
        perm = derived_rng(seed, _stable_int("volumes", *key)).permutation(len(names))
        order[key] = [names[i] for i in perm]
    return order


def nested_volume_subsets(
    manifest: pd.DataFrame, fractions: Iterable[float], seed: int
) -> dict[float, np.ndarray]:
    """Item positions kept at each real fraction (volume level, nested, stratified).

    Args:
        manifest: the real training items (one row per patch) with ``volume, sequence, label``.
        fractions: values in [0, 1].
        seed: subset seed (the same seed gives the same subsets).
    Returns:
        ``{fraction: sorted int64 positions into manifest}``; for ``f1 <= f2`` the positions of ``f1`` are
        a subset of those of ``f2``, and a volume's items are all in or all out.
    """
    order = volume_order(manifest, seed)
    volume_of = manifest["volume"].to_numpy()
    out: dict[float, np.ndarray] = {}
    for f in fractions:
        kept: list[str] = []
        for names in order.values():
            kept.extend(names[: fraction_count(float(f), len(names))])
        out[float(f)] = np.flatnonzero(np.isin(volume_of, np.asarray(kept, dtype=object)))
    return out


def stratum_counts(manifest: pd.DataFrame, positions: np.ndarray | None = None) -> dict[tuple[str, str], int]:
    """Items per (label, sequence) among ``positions`` (all rows when None)."""
    frame = manifest if positions is None else manifest.iloc[np.asarray(positions, dtype=np.int64)]
    counts = frame.groupby(list(ITEM_STRATA), sort=True).size()
    return {(str(k[0]), str(k[1])): int(v) for k, v in counts.items()}


def item_order(manifest: pd.DataFrame, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """Seeded inclusion order of the items (positions) of each (label, sequence) stratum.

    Items are first sorted by ``patch_id`` (falling back to row position), so the order depends only on
    the seed and the set of items.
    """
    key_col = manifest["patch_id"].astype(str).to_numpy() if "patch_id" in manifest.columns else None
    out: dict[tuple[str, str], np.ndarray] = {}
    for key, pos in manifest.groupby(list(ITEM_STRATA), sort=True).indices.items():
        key = (str(key[0]), str(key[1]))
        pos = np.asarray(pos, dtype=np.int64)  # positional row numbers
        if key_col is not None:
            pos = pos[np.argsort(key_col[pos], kind="stable")]
        perm = derived_rng(seed, _stable_int("items", *key)).permutation(len(pos))
        out[key] = pos[perm]
    return out


def take_matched(
    order: Mapping[tuple[str, str], np.ndarray],
    counts: Mapping[tuple[str, str], int],
    source: str = "synthetic store",
) -> np.ndarray:
    """The first ``counts[stratum]`` items of each stratum's order (sorted positions).

    Raises:
        DataError: a stratum has fewer items than requested (names the stratum and both numbers).
    """
    taken: list[np.ndarray] = []
    for key, k in sorted(counts.items()):
        if k <= 0:
            continue
        available = order.get(key, np.zeros(0, np.int64))
        if len(available) < k:
            raise DataError(
                source,
                "label/sequence",
                f"needs {k} items of {key[0]} {key[1]}, has {len(available)}",
            )
        taken.append(np.asarray(available[:k], dtype=np.int64))
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, np.int64)


@dataclass(frozen=True)
class Composition:
    """One training set: positions into the real and the synthetic manifests."""

    real: np.ndarray
    synthetic: np.ndarray

    @property
    def size(self) -> int:
        return int(len(self.real) + len(self.synthetic))


def substitution_sets(
    real: pd.DataFrame,
    synthetic: pd.DataFrame | None,
    real_fractions: Sequence[float],
    seed: int,
    *,
    replace: bool = True,
) -> dict[float, Composition]:
    """Substitution experiment training sets, one per real fraction.

    Args:
        real: real training items (``volume, sequence, label``, optionally ``patch_id``).
        synthetic: synthetic pool (``sequence, label``); required when ``replace``.
        real_fractions: fractions of real VOLUMES kept.
        seed: subset seed.
        replace: True: real + synthetic condition (removed patches replaced per (label, sequence));
            False: real-only condition (no synthetic items).
    Returns:
        ``{fraction: Composition}``; with ``replace`` every composition has the size and the
        (label, sequence) counts of the full real set.
    """
    real_subsets = nested_volume_subsets(real, real_fractions, seed)
    full = stratum_counts(real)
    order = item_order(synthetic, seed) if (replace and synthetic is not None) else None
    if replace and order is None:
        raise ValueError("substitution with replacement needs a synthetic manifest")
    out: dict[float, Composition] = {}
    for f, real_pos in real_subsets.items():
        syn = np.zeros(0, np.int64)
        if order is not None:
            kept = stratum_counts(real, real_pos)
            removed = {key: n - kept.get(key, 0) for key, n in full.items()}
            syn = take_matched(order, removed)
        out[f] = Composition(real=real_pos, synthetic=syn)
    return out


def additive_sets(
    real: pd.DataFrame, synthetic: pd.DataFrame, synthetic_fractions: Sequence[float], seed: int
) -> dict[float, Composition]:
    """Additive experiment training sets: all real items plus ``round(a * n)`` synthetic per stratum.

    ``n`` is the stratum's (label, sequence) count in the real set, so the synthetic share follows the
    real class and sequence mix; synthetic sets are nested in ``a``.
    """
    full = stratum_counts(real)
    order = item_order(synthetic, seed)
    all_real = np.arange(len(real), dtype=np.int64)
    out: dict[float, Composition] = {}
    for a in synthetic_fractions:
        counts = {key: fraction_count(float(a), n) for key, n in full.items()}
        out[float(a)] = Composition(real=all_real, synthetic=take_matched(order, counts))
    return out


__all__ = [
    "ITEM_STRATA",
    "VOLUME_STRATA",
    "Composition",
    "additive_sets",
    "fraction_count",
    "item_order",
    "nested_volume_subsets",
    "stratum_counts",
    "substitution_sets",
    "take_matched",
    "volume_order",
    "volume_table",
]
