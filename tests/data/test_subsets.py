"""Hierarchical volume-level subsets, substitution and additive compositions (paper 2.4.2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from magphase.data.subsets import (
    additive_sets,
    fraction_count,
    nested_volume_subsets,
    stratum_counts,
    substitution_sets,
    volume_table,
)
from magphase.errors import DataError

FRACTIONS = [round(0.1 * k, 1) for k in range(11)]


def real_manifest(seed: int = 0) -> pd.DataFrame:
    """2 sequences x (20 normal + 10 abnormal volumes); 3-7 patches each; abnormal volumes mix labels."""
    rng = np.random.default_rng(seed)
    rows = []
    pid = 0
    for seq in ("AXFLAIR", "AXT1"):
        for vclass, n in (("normal", 20), ("abnormal", 10)):
            for v in range(n):
                n_patches = int(rng.integers(3, 8))
                for k in range(n_patches):
                    label = "abnormal" if (vclass == "abnormal" and k < n_patches - 2) else "normal"
                    volume = f"{seq}_{vclass}_{v}"
                    rows.append({"patch_id": pid, "volume": volume, "sequence": seq, "label": label})
                    pid += 1
    return pd.DataFrame(rows)


def synthetic_manifest(real: pd.DataFrame, factor: float = 1.0) -> pd.DataFrame:
    counts = stratum_counts(real)
    rows = []
    pid = 0
    for (label, seq), n in counts.items():
        for _ in range(int(np.ceil(factor * n))):
            rows.append({"patch_id": f"s{pid}", "volume": f"s{pid}", "sequence": seq, "label": label})
            pid += 1
    return pd.DataFrame(rows)


def test_fraction_count_is_monotone_rounds_half_up_and_keeps_one():
    assert fraction_count(0.0, 10) == 0
    assert fraction_count(0.1, 10) == 1
    assert fraction_count(0.25, 10) == 3  # 2.5 rounds up
    assert fraction_count(0.01, 10) == 1  # never empty above 0
    assert fraction_count(1.0, 7) == 7
    counts = [fraction_count(f, 13) for f in np.linspace(0, 1, 101)]
    assert counts == sorted(counts)
    with pytest.raises(ValueError):
        fraction_count(1.2, 5)


def test_smaller_fractions_are_inside_larger_ones_at_volume_level():
    m = real_manifest()
    subsets = nested_volume_subsets(m, FRACTIONS, seed=3)
    for small, large in zip(FRACTIONS, FRACTIONS[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[large])
    assert len(subsets[0.0]) == 0
    assert np.array_equal(subsets[1.0], np.arange(len(m)))
    n_items = m.groupby("volume").size()
    for pos in subsets.values():
        kept = m.iloc[pos]
        # whole volumes only: every kept volume has all its patches
        sizes = kept.groupby("volume").size()
        assert (sizes == n_items[sizes.index]).all()


def test_fractions_are_respected_per_stratum():
    m = real_manifest()
    vols = volume_table(m)
    subsets = nested_volume_subsets(m, FRACTIONS, seed=3)
    for f in FRACTIONS:
        kept_vols = volume_table(m.iloc[subsets[f]]) if len(subsets[f]) else vols.iloc[:0]
        for (seq, vclass), group in vols.groupby(["sequence", "volume_class"]):
            n_kept = ((kept_vols["sequence"] == seq) & (kept_vols["volume_class"] == vclass)).sum()
            assert n_kept == fraction_count(f, len(group))
    # 30 % of 60 volumes = 18 (20 normal -> 6, 10 abnormal -> 3, per sequence)
    assert volume_table(m.iloc[subsets[0.3]]).shape[0] == 18


def test_subsets_depend_on_seed_not_on_row_order():
    m = real_manifest()
    a = nested_volume_subsets(m, [0.5], seed=1)[0.5]
    shuffled = m.sample(frac=1.0, random_state=0).reset_index(drop=True)
    b = nested_volume_subsets(shuffled, [0.5], seed=1)[0.5]
    assert set(m.iloc[a]["patch_id"]) == set(shuffled.iloc[b]["patch_id"])
    c = nested_volume_subsets(m, [0.5], seed=2)[0.5]
    assert set(a) != set(c)


def test_substitution_keeps_total_size_and_class_sequence_mix():
    real = real_manifest()
    syn = synthetic_manifest(real)
    full = stratum_counts(real)
    sets = substitution_sets(real, syn, FRACTIONS, seed=4)
    for comp in sets.values():
        assert comp.size == len(real)
        merged = dict(stratum_counts(real, comp.real)) if len(comp.real) else {}
        for key, n in (stratum_counts(syn, comp.synthetic) if len(comp.synthetic) else {}).items():
            merged[key] = merged.get(key, 0) + n
        assert merged == full
    assert len(sets[1.0].synthetic) == 0
    assert len(sets[0.0].real) == 0 and len(sets[0.0].synthetic) == len(real)
    # synthetic sets are nested too: less real data -> a superset of synthetic items
    for small, large in zip(FRACTIONS, FRACTIONS[1:], strict=False):
        assert set(sets[large].synthetic) <= set(sets[small].synthetic)
        assert set(sets[small].real) <= set(sets[large].real)


def test_real_only_condition_adds_nothing():
    real = real_manifest()
    sets = substitution_sets(real, None, [0.5, 1.0], seed=4, replace=False)
    assert len(sets[0.5].synthetic) == 0 and 0 < len(sets[0.5].real) < len(real)


def test_additive_sizes_follow_fraction_of_each_stratum_and_nest():
    real = real_manifest()
    syn = synthetic_manifest(real)
    fracs = FRACTIONS[1:]
    sets = additive_sets(real, syn, fracs, seed=5)
    full = stratum_counts(real)
    for a, comp in sets.items():
        assert len(comp.real) == len(real)
        assert stratum_counts(syn, comp.synthetic) == {k: fraction_count(a, n) for k, n in full.items()}
    assert len(sets[1.0].synthetic) == len(real)
    for small, large in zip(fracs, fracs[1:], strict=False):
        assert set(sets[small].synthetic) <= set(sets[large].synthetic)


def test_too_few_synthetic_items_is_a_data_error_naming_the_stratum():
    real = real_manifest()
    syn = synthetic_manifest(real, factor=0.5)
    with pytest.raises(DataError, match="needs .* items of"):
        substitution_sets(real, syn, [0.0], seed=1)


def test_volume_with_two_sequences_is_rejected():
    m = real_manifest()
    m.loc[0, "sequence"] = "AXT2"
    with pytest.raises(DataError, match="several sequences"):
        volume_table(m)
