"""Tiny stores for the evaluation tests: real / synthetic / external patch stores and latent stores.

Patches are small complex images (``2 x S x S``, S = 16 by default) so a tiny classifier learns in a few
dozen steps: normal = smooth magnitude with a smooth phase ramp, abnormal = the same plus a bright blob.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magphase.config.evaluation import ClassifierConfig, EvaluationConfig
from magphase.config.training import TrainSettings
from magphase.data.store import StoreWriter
from magphase.mri.complex import complex_to_channels

TINY_NET = ClassifierConfig(widths=(8, 16), blocks=(1, 1), se_reduction=4)


def tiny_settings(steps: int = 30, batch: int = 32) -> TrainSettings:
    return TrainSettings(
        steps=steps,
        batch_size=batch,
        lr=3e-3,
        warmup_steps=0,
        ema_decay=0.9,
        checkpoint_every=steps,
        log_every=steps,
        amp="none",
        device="cpu",
    )


def tiny_eval_config(**downstream) -> EvaluationConfig:
    cfg = EvaluationConfig(classifier=TINY_NET, eval_batch_size=64)
    cfg.realfake = cfg.realfake.model_copy(update={"train": tiny_settings(), "runs": 2, "n_test_sets": 2})
    dcfg = {"train": tiny_settings(), "runs": 1, **downstream}
    cfg.downstream = cfg.downstream.model_copy(update=dcfg)
    return cfg


def complex_patch(rng: np.random.Generator, abnormal: bool, size: int) -> np.ndarray:
    """``2 x size x size`` float32: smooth magnitude, a smooth phase ramp, a bright blob if abnormal."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    mag = 0.4 + 0.2 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 1.5) + rng.uniform()))
    mag = mag + 0.05 * rng.standard_normal((size, size))
    if abnormal:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        mag = mag + 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
    phase = 0.3 + 0.4 * (xx - 0.5) + 0.05 * rng.standard_normal((size, size))
    return complex_to_channels((mag * np.exp(1j * phase)).astype(np.complex64))


def write_patch_store(
    path: Path,
    rng: np.random.Generator,
    *,
    sequences=("AXFLAIR", "AXT1"),
    volumes_per_class: dict[str, int] | None = None,
    patches_per_volume: int = 4,
    size: int = 16,
    synthetic: bool = False,
    external: bool = False,
) -> Path:
    """A patch store: per sequence and volume class, volumes split 60/20/20 (or all 'external')."""
    volumes_per_class = volumes_per_class or {"normal": 5, "abnormal": 5}
    rows, arrays = [], []
    pid = 0
    for seq in sequences:
        for vclass, n_vol in volumes_per_class.items():
            for v in range(n_vol):
                split = "train" if v < 0.6 * n_vol else "val" if v < 0.8 * n_vol else "test"
                if external:
                    split = "external"
                if synthetic:
                    split = "train"
                volume = f"{'syn' if synthetic else 'ext' if external else 'vol'}_{seq}_{vclass}_{v}"
                for k in range(patches_per_volume):
                    # abnormal volumes also hold normal patches (box-free regions), except external ones
                    keep_class = external or vclass == "normal" or k < patches_per_volume - 1
                    label = vclass if keep_class else "normal"
                    arrays.append(complex_patch(rng, label == "abnormal", size))
                    row = {
                        "patch_id": pid,
                        "volume": volume if not synthetic else f"syn{pid}",
                        "sequence": seq,
                        "label": label,
                        "split": split,
                        "slice": k,
                        "row": 0,
                        "col": 0,
                        "box_overlap": 0.0,
                    }
                    if synthetic:
                        row["synthetic"] = True
                    rows.append(row)
                    pid += 1
    with StoreWriter(path, {"patches": (2, size, size)}, kind="synthetic" if synthetic else "patches") as w:
        w.append(rows, patches=np.stack(arrays))
    return path


def write_latent_store(
    path: Path,
    rng: np.random.Generator,
    counts: dict[str, dict[str, int]],
    *,
    offset: float = 0.0,
    synthetic: bool = False,
    size: int = 8,
) -> Path:
    """A latent store: ``counts[sequence][split]`` items of N(offset on channel 0, 1) latents.

    Real stores get ``mu`` and ``logvar`` (sigma = 0.05); synthetic stores one array ``z``.
    """
    rows, mus = [], []
    pid = 0
    for seq, per_split in counts.items():
        for split, n in per_split.items():
            for _ in range(n):
                mu = rng.standard_normal((2, size, size)).astype(np.float32)
                mu[0] += offset
                mus.append(mu)
                rows.append(
                    {
                        "patch_id": pid,
                        "volume": f"v{pid // 4}",
                        "sequence": seq,
                        "label": "unlabeled",
                        "split": split,
                        "slice": 0,
                        "row": 0,
                        "col": 0,
                        "box_overlap": 0.0,
                    }
                )
                pid += 1
    mu = np.stack(mus)
    if synthetic:
        with StoreWriter(path, {"z": (2, size, size)}, kind="synthetic") as w:
            w.append(rows, z=mu)
    else:
        with StoreWriter(path, {"mu": (2, size, size), "logvar": (2, size, size)}, kind="latents") as w:
            w.append(rows, mu=mu, logvar=np.full_like(mu, 2 * np.log(0.05)))
    return path
