"""Small PhaseGen stand-ins shared by the phase-diffusion and PhaseGen-stage tests: a tiny complex
U-Net, blob patches with a magnitude-dependent phase, a patch store of them."""

import numpy as np
import torch
from torch.utils.data import Dataset

from magphase.data.store import StoreWriter

TINY_COMPLEX_UNET = dict(
    base_channels=4, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, time_features=8, groups=2
)


def blobs(n, size, rng):
    """Patches whose phase is a fixed function of the magnitude: phi = 3 m."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, 2, size, size), np.float32)
    for i in range(n):
        m = np.zeros((size, size))
        for _ in range(2):
            cy, cx = rng.uniform(0.25, 0.75, 2)
            s = rng.uniform(0.1, 0.25)
            m += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        m /= m.max()
        out[i, 0], out[i, 1] = m * np.cos(3 * m), m * np.sin(3 * m)
    return out


class PatchesDataset(Dataset):
    def __init__(self, x):
        self.x = torch.from_numpy(x)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def phase_coherence_of(generated, real):
    """Magnitude-weighted agreement of two phases (1: equal, ~0: unrelated)."""
    w = real.abs() ** 2
    return ((w * torch.exp(1j * (generated.angle() - real.angle()))).sum((1, 2)).abs() / w.sum((1, 2))).mean()


def write_patch_store(path, n=6, rng=None):
    rng = rng or np.random.default_rng(0)
    x = np.zeros((n, 2, 96, 96), np.float32)
    x[:, :, 8:88, 8:88] = rng.normal(size=(n, 2, 80, 80))
    rows = [
        dict(
            patch_id=f"p{i}",
            volume=f"v{i // 2}",
            sequence=("AXT1", "AXFLAIR")[i % 2],
            label=("normal", "abnormal")[i % 2],
            split=("train", "train", "val")[i % 3],
            slice=i,
            row=1,
            col=2,
            box_overlap=0.0,
        )
        for i in range(n)
    ]
    with StoreWriter(path, {"patches": (2, 96, 96)}) as w:
        w.append(rows, patches=x)
    return path
