"""Figs. 4-5 drawn from tiny stand-in models (a real autoencoder is not needed to test the drawing)."""

import numpy as np
import torch
from torch import nn

from magphase.data.store import StoreWriter
from magphase.evaluation.metrics import class_effect
from magphase.stages.sample import figure4_from_models, figure5_from_models, real_examples


class SmoothDecoder(nn.Module):
    """Stand-in ``decode(z, seq)``: magnitude from channel 0, phase from channel 1 (bilinear to 96 x 96)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def decode(self, z, seq):
        up = nn.functional.interpolate(z, size=(96, 96), mode="bilinear", align_corners=False)
        mag = torch.sigmoid(up[:, 0]) * (1 + 0.1 * seq[:, None, None])
        phase = np.pi * torch.tanh(up[:, 1])
        return torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], 1) + self.dummy


def _patch_store(path, rng):
    rows, patches = [], []
    for i, seq in enumerate(["AXFLAIR", "AXT1", "AXT1POST", "AXT1PRE", "AXT2"] * 3):
        rows.append(dict(patch_id=i, volume=f"v{i}", sequence=seq, label="normal", split="test"))
        yy, xx = np.mgrid[:96, :96] / 96
        z = (0.3 + 0.6 * np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 8)) * np.exp(
            1j * 6 * (xx + rng.random())
        )
        patches.append(np.stack([z.real, z.imag]))
    with StoreWriter(path, {"patches": (2, 96, 96)}) as w:
        w.append(rows, patches=np.asarray(patches, np.float32))
    return path


def test_figures_4_and_5(tmp_path, make_unet, rng):
    store = _patch_store(tmp_path / "patches", rng)
    assert real_examples(store, "AXT1", 2, seed=1).shape == (2, 2, 96, 96)
    dec = SmoothDecoder()
    f4 = figure4_from_models(make_unet(), dec, store, tmp_path / "fig4.png", k=3, steps=2)
    stage2 = make_unet(class_conditioning=True)
    with torch.no_grad():
        stage2.condition.class_embedding.weight.normal_()
    f5 = figure5_from_models(stage2, dec, tmp_path / "fig5.png", k=3, steps=2)
    for f in (f4, f5):
        assert f.is_file() and f.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.png"))


def test_class_effect_measures_paired_difference(rng):
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    assert class_effect(x, x) == 0.0
    y = x.copy()
    y[:, :, :4] = 0.0  # half the pixels changed to zero: difference = half the magnitude mass
    expected = np.hypot(x[:, 0, :4], x[:, 1, :4]).sum() / np.hypot(x[:, 0], x[:, 1]).sum()
    assert np.isclose(class_effect(x, y), expected, rtol=1e-5)
