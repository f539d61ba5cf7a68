"""Stage ``sample``: synthetic latent and patch stores from the flow models, and Figs. 4-5.

The stage that samples draws the figures that need samples: Fig. 4 (stage-1 samples beside real
patches, per sequence) and Fig. 5 (stage-2 normal vs abnormal from the same noise, so a pair differs
only by the class condition). The report only copies them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from magphase.conventions import LABELLED_SEQUENCES, SEQUENCES
from magphase.data.store import Store
from magphase.evaluation.metrics import class_effect
from magphase.generative.sampling import SampleGroup, decode_samples, initial_noise, sample_latents
from magphase.viz.figures_flow import figure4, figure5

log = logging.getLogger(__name__)


def real_examples(
    store: str | Path | Store,
    sequence: str,
    k: int,
    *,
    split: str | None = "test",
    seed: int = 0,
    label: str | None = None,
) -> np.ndarray:
    """``k`` random real patches of ``sequence`` (``patches`` array), from ``split`` when it has enough."""
    store = store if isinstance(store, Store) else Store(store)
    idx = store.select(sequence=sequence, split=split, label=label)
    if idx.size < k:
        idx = store.select(sequence=sequence, label=label)
    rng = np.random.default_rng([seed, 0xF16])
    pick = np.sort(rng.choice(idx, size=min(k, idx.size), replace=False)) if idx.size else idx
    return store.read("patches", pick)


def _decoded_samples(
    flow: nn.Module,
    autoencoder: nn.Module,
    stage: int,
    group: SampleGroup,
    *,
    guidance: float,
    steps: int,
    seed: int,
    noise: torch.Tensor | None = None,
) -> np.ndarray:
    z = sample_latents(flow, stage=stage, group=group, guidance=guidance, steps=steps, seed=seed, noise=noise)
    return decode_samples(flow, autoencoder, z, group, stage=stage, seed=seed).numpy()


def figure4_from_models(
    flow_stage1: nn.Module,
    autoencoder: nn.Module,
    real_store: str | Path | Store,
    out_png: str | Path,
    *,
    sequences: Sequence[str] = SEQUENCES,
    k: int = 4,
    guidance: float = 1.0,
    steps: int = 25,
    seed: int = 0,
) -> Path:
    """Sample ``k`` stage-1 patches per sequence (w = ``guidance``) and draw them beside ``k`` real ones."""
    synthetic = {
        s: _decoded_samples(
            flow_stage1, autoencoder, 1, SampleGroup(s, None, k), guidance=guidance, steps=steps, seed=seed
        )
        for s in sequences
    }
    real = {s: real_examples(real_store, s, k, seed=seed) for s in sequences}
    return figure4(real, synthetic, out_png, note=f"w = {guidance:g}, Heun K = {steps}")


def figure5_from_models(
    flow_stage2: nn.Module,
    autoencoder: nn.Module,
    out_png: str | Path,
    *,
    sequences: Sequence[str] = LABELLED_SEQUENCES,
    k: int = 4,
    guidance: float = 2.0,
    steps: int = 25,
    seed: int = 0,
) -> Path:
    """Sample ``k`` normal and ``k`` abnormal stage-2 patches per sequence from the same noise."""
    normal, abnormal = {}, {}
    shape = (flow_stage2.in_channels, flow_stage2.input_size, flow_stage2.input_size)
    for s in sequences:
        noise = initial_noise(SampleGroup(s, "normal", k), 2, seed, 0, k, shape)
        for label, target in (("normal", normal), ("abnormal", abnormal)):
            target[s] = _decoded_samples(
                flow_stage2,
                autoencoder,
                2,
                SampleGroup(s, label, k),
                guidance=guidance,
                steps=steps,
                seed=seed,
                noise=noise,
            )
    effect = ", ".join(f"{s} {class_effect(normal[s], abnormal[s]):.2f}" for s in sequences)
    note = f"w = {guidance:g}, Heun K = {steps}, paired noise; class effect {effect}"
    return figure5(normal, abnormal, out_png, note=note)
