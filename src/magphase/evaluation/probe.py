"""How much normal/abnormal information a stage-2 flow model has learned (a diagnostic, beyond the paper).

A class-conditional flow model is also a classifier: for a latent ``z`` of a labelled patch, the
flow-matching loss under the true class token should be lower than under the other one. The
probe draws ``repeats`` shared (noise, t) pairs per latent, evaluates the per-sample loss with
the ``normal`` and with the ``abnormal`` token (same sequence, same noise, same t) and scores each
latent by ``loss(normal) - loss(abnormal)`` summed over the repeats. Its AUROC against the true
labels says whether the class embedding carries abnormality:

- ~0.5 on validation: the model does not use the class in a way that generalises; Fig. 5 will
  show near-identical normal and abnormal samples whatever the guidance weight;
- high on train but ~0.5 on validation: the class embedding memorised training volumes;
- clearly above 0.5 on validation: guided abnormal samples carry lesion-like changes.

A model without a class embedding, or with the zero-initialised one stage 2 starts from, scores
every latent 0 (AUROC exactly 0.5).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from magphase.conventions import CLASS_TOKEN_INDEX, LABELLED_SEQUENCES
from magphase.data.datasets import LatentFlowDataset
from magphase.errors import ConfigError
from magphase.evaluation.metrics import safe_auroc
from magphase.generative.loss import per_sample_loss
from magphase.generative.path import sample_path

log = logging.getLogger(__name__)


@dataclass
class ClassProbeResult:
    """Probe outcome on one split; AUROCs are None where a group lacks either class."""

    split: str
    n: int
    n_abnormal: int
    auroc: float | None
    per_sequence: dict[str, float | None] = field(default_factory=dict)
    mean_gap_abnormal: float = 0.0  # mean (loss_normal - loss_abnormal) per repeat, abnormal latents
    mean_gap_normal: float = 0.0  # ... and normal latents (negative when the model uses the class)
    repeats: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    value = safe_auroc(y, score, warn=False)
    return None if np.isnan(value) else value


@torch.no_grad()
def class_probe_scores(
    model: nn.Module,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    sequence: torch.Tensor,
    repeats: int = 4,
    t_range: tuple[float, float] = (0.1, 0.9),
    batch_size: int = 128,
    seed: int = 0,
    posterior: bool = True,
) -> np.ndarray:
    """``(N,)`` scores ``sum_r [loss(normal) - loss(abnormal)]`` (positive = looks abnormal).

    ``model(x_t, t, sequence, label)`` is a stage-2 velocity network; ``mu``/``logvar`` the
    autoencoder posterior of each latent (a fresh draw per repeat when ``posterior``, else ``mu``:
    match the ``flow.latents`` the model was trained with), scaled by the model's ``latent_scale``
    as in training. ``t`` is uniform in ``t_range``: the ends carry little class information (pure
    noise, or an almost clean latent). The draws come batch by batch from one seeded generator, so
    scores repeat exactly for the same items and ``batch_size``.
    """
    if repeats < 1:
        raise ConfigError(f"class probe: repeats must be >= 1, got {repeats}")
    lo, hi = t_range
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"class probe: t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    scale = float(getattr(model, "latent_scale", 1.0))
    gen = torch.Generator().manual_seed(seed)
    normal, abnormal = CLASS_TOKEN_INDEX["normal"], CLASS_TOKEN_INDEX["abnormal"]
    scores = np.zeros(mu.shape[0], dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for _ in range(repeats):
            for b in range(0, mu.shape[0], batch_size):
                m, lv, seq = mu[b : b + batch_size], logvar[b : b + batch_size], sequence[b : b + batch_size]
                z = m + torch.exp(0.5 * lv) * torch.randn(m.shape, generator=gen) if posterior else m
                noise = torch.randn(z.shape, generator=gen)
                t = lo + (hi - lo) * torch.rand(z.shape[0], generator=gen)
                path = sample_path((z * scale).to(device), noise.to(device), t.to(device))
                seq = seq.to(device)
                losses = []
                for token in (normal, abnormal):
                    v = model(path.x_t, path.t, seq, torch.full_like(seq, token))
                    losses.append(per_sample_loss(v, path.target_velocity).cpu().double().numpy())
                scores[b : b + batch_size] += losses[0] - losses[1]
    finally:
        model.train(was_training)
    return scores


def class_probe(
    model: nn.Module,
    latents: LatentFlowDataset,
    repeats: int = 4,
    max_items: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> ClassProbeResult:
    """Probe ``model`` on the labelled items (normal/abnormal of AXFLAIR, AXT1, AXT1POST) of ``latents``.

    ``max_items`` caps the items (a seeded random subset) to bound
    the cost on large training splits. Remaining keyword arguments go to :func:`class_probe_scores`.
    """
    if max_items is not None and max_items < 1:
        raise ConfigError(f"class probe: max_items must be >= 1, got {max_items}")
    keep = np.flatnonzero(
        np.isin(latents.labels, ["normal", "abnormal"]) & np.isin(latents.sequence_names, LABELLED_SEQUENCES)
    )
    if max_items is not None and keep.size > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=max_items, replace=False))
    split = latents.split if latents.split is not None else "all"
    if keep.size == 0:
        return ClassProbeResult(split=split, n=0, n_abnormal=0, auroc=None, repeats=repeats)
    items = [latents[int(i)] for i in keep]
    mu = torch.stack([it["mu"] for it in items])
    logvar = torch.stack([it["logvar"] for it in items])
    sequence = torch.stack([it["sequence"] for it in items])
    y = latents.labels[keep] == "abnormal"
    scores = class_probe_scores(model, mu, logvar, sequence, repeats=repeats, seed=seed, **kwargs)
    seq_names = latents.sequence_names[keep]
    per_seq = {
        s: _auroc(y[seq_names == s], scores[seq_names == s])
        for s in LABELLED_SEQUENCES
        if (seq_names == s).any()
    }
    result = ClassProbeResult(
        split=split,
        n=int(keep.size),
        n_abnormal=int(y.sum()),
        auroc=_auroc(y, scores),
        per_sequence=per_seq,
        mean_gap_abnormal=float(scores[y].mean() / repeats) if y.any() else 0.0,
        mean_gap_normal=float(scores[~y].mean() / repeats) if (~y).any() else 0.0,
        repeats=repeats,
    )
    log.info("stage-2 class probe on %s: %d latents, AUROC %s", split, result.n, result.auroc)
    return result


__all__ = ["ClassProbeResult", "class_probe", "class_probe_scores"]
