"""Volume-level train/val/test splits (paper 2.1.3) and the Table 1 summary of a patch manifest.

Volumes, never patches, are assigned: every patch of a volume lands in its volume's split, so no
anatomy is shared between splits. Labelled volumes (normal, abnormal) are split 70/15/15 within
each (class, sequence) stratum; unlabeled volumes 95/2.5/2.5 (they only serve the autoencoder and
stage-1 monitoring). Within a stratum the volumes are sorted by name and shuffled by a generator
seeded from ``(seed, class, sequence)``, so the assignment depends only on the seed and the set
of volumes, never on processing order.

Optionally (``finding`` column) a stratum's volumes are also spread by finding type: the volumes are
grouped by finding (groups and members in seeded random order) and dealt out in proportion to the
split sizes, so every finding type lands in the splits roughly 70/15/15. Without it a small dataset
can put, say, every extra-axial mass in the training set and only lacunar infarcts in the test set,
and a downstream classifier then scores below chance on the test split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from magphase.conventions import LABELS, SEQUENCES, SPLITS
from magphase.utils.seeds import derived_rng

#: Column titles of Table 1 for each split name.
SPLIT_TITLES: dict[str, str] = {"train": "Train", "val": "Validation", "test": "Test"}


def _stable_int(*parts: object) -> int:
    """A 63-bit integer from the parts' text (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def split_counts(n: int, fractions: Sequence[float], min_per_split: int = 1) -> tuple[int, int, int]:
    """Volumes per split for a stratum of ``n`` volumes.

    Largest-remainder rounding of ``n * fractions``; then, when ``n >= 3 * min_per_split``, every
    split with a non-zero fraction gets at least ``min_per_split`` volumes (taken from the largest
    split), so small datasets still fill every cell of Table 1.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    exact = n * f
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= 3 * min_per_split:
        for i in range(3):
            while f[i] > 0 and counts[i] < min_per_split:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def proportional_sequence(counts: Sequence[int]) -> list[int]:
    """Split indices ``0..len(counts)-1`` in an order that keeps every prefix proportional to ``counts``.

    Position ``r`` goes to the split furthest below its share ``counts[i] * (r + 1) / n`` (ties to
    the lower index); split ``i`` appears exactly ``counts[i]`` times.
    """
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum())
    taken = np.zeros_like(c)
    out: list[int] = []
    for r in range(n):
        deficit = c * (r + 1) / max(n, 1) - taken
        deficit[taken >= c] = -np.inf
        i = int(np.argmax(deficit))
        taken[i] += 1
        out.append(i)
    return out


def assign_splits(
    volumes: pd.DataFrame,
    seed: int,
    labelled_fractions: Sequence[float] = (0.70, 0.15, 0.15),
    unlabeled_fractions: Sequence[float] = (0.95, 0.025, 0.025),
    min_per_split: int = 1,
) -> dict[str, str]:
    """Assign every volume to ``train``, ``val`` or ``test``.

    Args:
        volumes: one row per volume with columns ``volume`` (unique name), ``sequence`` and
            ``label`` (the volume's class: normal, abnormal or unlabeled); optional ``finding``
            (e.g. the dominant abnormal box label; '' for none): strata with two or more findings
            are dealt out by finding (module docstring).
        seed: the run seed.
    Returns:
        volume name -> split name.
    """
    if volumes["volume"].duplicated().any():
        dup = volumes.loc[volumes["volume"].duplicated(), "volume"].iloc[0]
        raise ValueError(f"volume {dup!r} listed twice")
    out: dict[str, str] = {}
    for (label, sequence), group in volumes.groupby(["label", "sequence"], sort=True):
        names = sorted(group["volume"])
        fractions = unlabeled_fractions if label == "unlabeled" else labelled_fractions
        counts = split_counts(len(names), fractions, min_per_split)
        rng = derived_rng(seed, _stable_int(label, sequence))
        order = rng.permutation(len(names))
        finding_of = (
            dict(zip(group["volume"], group["finding"].fillna(""), strict=True)) if "finding" in group else {}
        )
        findings = sorted({finding_of[v] for v in names}) if finding_of else []
        if len(findings) > 1:
            # Finding groups in random order, members in the random order above; dealt proportionally.
            group_rank = {f: k for k, f in enumerate(rng.permutation(findings))}
            order = np.array(sorted(order, key=lambda i: group_rank[finding_of[names[i]]]), dtype=np.int64)
            pattern = proportional_sequence(counts)
        else:
            pattern = [0] * counts[0] + [1] * counts[1] + [2] * counts[2]
        for i, k in zip(order, pattern, strict=True):
            out[names[i]] = SPLITS[k]
    return out


def table1(manifest: pd.DataFrame, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """Patch counts by class x sequence x split, with per-class subtotals and a grand total.

    Layout of the paper's Table 1: for each class (Abnormal, Normal, Unlabeled) one row per
    sequence that has patches, then a subtotal row (``sequence == "Subtotal"``); a final
    ``Total`` row. Columns: ``class, sequence, Train, Validation, Test, Total``.
    """
    cols = [SPLIT_TITLES.get(s, s.title()) for s in splits]
    counts = (
        manifest.groupby(["label", "sequence", "split"]).size().unstack("split", fill_value=0)
        if len(manifest)
        else pd.DataFrame()
    )
    rows: list[dict[str, object]] = []

    def _row(cls: str, seq: str, values: Mapping[str, int]) -> dict[str, object]:
        row: dict[str, object] = {"class": cls, "sequence": seq}
        row.update({c: int(values.get(s, 0)) for s, c in zip(splits, cols, strict=True)})
        row["Total"] = int(sum(values.get(s, 0) for s in splits))
        return row

    grand = dict.fromkeys(splits, 0)
    # The paper lists Abnormal first, then Normal, then Unlabeled.
    for label in ("abnormal", "normal", "unlabeled", *sorted(set(manifest.get("label", [])) - set(LABELS))):
        sub = dict.fromkeys(splits, 0)
        seqs = [*SEQUENCES, *sorted(set(manifest.get("sequence", [])) - set(SEQUENCES))]
        any_row = False
        for seq in seqs:
            if (label, seq) not in counts.index:
                continue
            vals = {s: int(counts.loc[(label, seq)].get(s, 0)) for s in splits}
            if sum(vals.values()) == 0:
                continue
            rows.append(_row(label.title(), seq, vals))
            any_row = True
            for s in splits:
                sub[s] += vals[s]
                grand[s] += vals[s]
        if any_row:
            rows.append(_row(label.title(), "Subtotal", sub))
    rows.append(_row("Total", "", grand))
    return pd.DataFrame(rows, columns=["class", "sequence", *cols, "Total"])


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as a Markdown table, thousands separated, subtotal/total rows in bold."""
    num_cols = [c for c in table.columns if c not in ("class", "sequence")]
    lines = [
        "| Class | Sequence | " + " | ".join(num_cols) + " |",
        "|---|---|" + "---:|" * len(num_cols),
    ]
    last_class = None
    for _, r in table.iterrows():
        cells = [f"{int(r[c]):,}" for c in num_cols]
        if r["class"] == "Total":
            cls, seq, cells = "**Total**", "", [f"**{v}**" for v in cells]
        elif r["sequence"] == "Subtotal":
            cls, seq, cells = "", "*subtotal*", [f"**{v}**" for v in cells]
        else:
            cls, seq = (r["class"] if r["class"] != last_class else ""), r["sequence"]
        last_class = r["class"]
        lines.append(f"| {cls} | {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
