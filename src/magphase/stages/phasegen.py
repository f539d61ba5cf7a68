"""Stage ``phasegen``: train PhaseGen, give the test split's magnitudes a generated phase, evaluate, draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from magphase.data.store import Store
from magphase.generative.phasegen import sample_phase, to_complex
from magphase.viz.figures_phasegen import plot_phasegen


def pick_patches(store: Store, k: int, split: str | None = "test", seed: int = 0) -> np.ndarray:
    """``k`` store indices spread over the sequences (round robin, random within a sequence)."""
    idx = store.select(split=split) if split is not None else np.arange(len(store))
    if idx.size == 0:
        raise ValueError(f"{store.path}: no patches in split {split!r}")
    rng = np.random.default_rng([seed, 0x96])
    seqs = store.manifest["sequence"].astype(str).to_numpy()[idx]
    pools = {s: list(rng.permutation(idx[seqs == s])) for s in sorted(set(seqs))}
    out: list[int] = []
    while len(out) < min(k, idx.size):
        for s in pools:
            if pools[s] and len(out) < k:
                out.append(int(pools[s].pop()))
    return np.array(out, dtype=np.int64)


def phasegen_figure(
    model: nn.Module,
    store: str | Path | Store,
    out_png: str | Path,
    *,
    k: int = 6,
    draws: int = 2,
    split: str | None = "test",
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    amp: str = "none",
) -> Path:
    """Draw ``draws`` PhaseGen phases for ``k`` real patches of ``store``; plot them beside the real phase."""
    store = store if isinstance(store, Store) else Store(store)
    idx = pick_patches(store, k, split, seed)
    real = store.read("patches", idx)
    mag = to_complex(torch.from_numpy(real)).abs()[:, 0]
    rows = []
    for d in range(draws):
        z = sample_phase(model, mag, sampler=sampler, steps=steps, seed=seed + d, amp=amp)
        rows.append((f"PhaseGen #{d + 1}", torch.stack([z.real, z.imag], dim=1).numpy()))
    seqs = store.manifest["sequence"].astype(str).to_numpy()[idx]
    label = f"{sampler}, K = {steps}" if sampler == "ddim" else "ddpm"
    return plot_phasegen(
        real, rows, out_png, column_titles=list(seqs), title=f"PhaseGen phases for real magnitudes ({label})"
    )
