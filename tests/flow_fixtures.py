"""Small shared stand-ins for the flow tests (tiny networks, tiny latent stores); the root conftest
registers the fixtures for every test folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magphase.data.store import StoreWriter
from magphase.models.unet import VelocityUNet

TINY_UNET = dict(
    base_channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(4,),
    num_heads=2,
    emb_dim=16,
    time_features=8,
    groups=4,
    input_size=8,
)


def tiny_unet(seed: int = 0, class_conditioning: bool = False, randomize: bool = True) -> VelocityUNet:
    """An 8 x 8 U-Net; ``randomize`` perturbs the zero-initialised layers so outputs depend on inputs."""
    torch.manual_seed(seed)
    model = VelocityUNet(**TINY_UNET, class_conditioning=class_conditioning)
    if randomize:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "class_embedding" not in name:
                    p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def write_latent_store(path, n_per_group: int = 6, size: int = 8, seed: int = 0, splits=("train",)):
    """Latent store with mu/logvar ``n x 2 x size x size``; every (sequence, label) pair present."""
    rng = np.random.default_rng(seed)
    groups = [
        ("AXFLAIR", "normal"),
        ("AXFLAIR", "abnormal"),
        ("AXT1", "normal"),
        ("AXT1", "abnormal"),
        ("AXT1", "abnormal"),
        ("AXT1POST", "normal"),
        ("AXT1POST", "unlabeled"),
        ("AXT1PRE", "normal"),
        ("AXT2", "abnormal"),
    ]
    rows, mus = [], []
    k = 0
    for seq, label in groups:
        for _ in range(n_per_group):
            for split in splits:
                rows.append(
                    dict(
                        patch_id=k,
                        volume=f"v{k // 4}",
                        sequence=seq,
                        label=label,
                        split=split,
                        slice=0,
                        row=0,
                        col=0,
                        box_overlap=0.0,
                    )
                )
                offset = 1.5 if label == "abnormal" else -1.5
                mus.append(offset + 0.1 * rng.standard_normal((2, size, size)))
                k += 1
    mu = np.stack(mus).astype(np.float32)
    logvar = np.full_like(mu, -4.0)
    with StoreWriter(path, {"mu": (2, size, size), "logvar": (2, size, size)}, kind="latents") as w:
        w.append(rows, mu=mu, logvar=logvar)
    return path


@pytest.fixture
def make_unet():
    """Factory ``make_unet(seed=0, class_conditioning=False, randomize=True)`` of tiny 8 x 8 U-Nets."""
    return tiny_unet


@pytest.fixture
def latent_store(tmp_path):
    """A tiny latent store (8 x 8 latents, train/val splits)."""
    return write_latent_store(tmp_path / "latents", splits=("train", "val"))
