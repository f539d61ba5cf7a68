"""The stage-2 class probe: an oracle that knows the class scores perfectly, a class-blind model at chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flow_fixtures import tiny_unet, write_latent_store
from magphase.conventions import CLASS_TOKEN_INDEX
from magphase.data.datasets import LatentFlowDataset
from magphase.errors import ConfigError
from magphase.evaluation.probe import class_probe, class_probe_scores


class PointMassOracle(nn.Module):
    """Exact velocity of a flow whose data is a point mass at +1.5 (abnormal) or -1.5 (otherwise).

    With ``x_t = (1 - t) eps + t m`` the target ``m - eps`` equals ``(m - x_t) / (1 - t)``.
    """

    latent_scale = 1.0

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, sequence, label):
        m = torch.where(label == CLASS_TOKEN_INDEX["abnormal"], 1.5, -1.5).to(x.dtype)[:, None, None, None]
        return (m - x) / (1 - t)[:, None, None, None]


def test_oracle_separates_the_classes_perfectly(tmp_path):
    store = write_latent_store(tmp_path / "latents", splits=("train", "val"))
    result = class_probe(PointMassOracle(), LatentFlowDataset(store, split="val"), repeats=2)
    # Labelled items only: AXFLAIR and AXT1 normal/abnormal, AXT1POST normal (unlabeled and
    # AXT1PRE / AXT2 items are left out).
    assert result.split == "val" and result.n == 6 * 6 and result.n_abnormal == 18
    assert result.auroc == pytest.approx(1.0)
    assert result.per_sequence["AXFLAIR"] == pytest.approx(1.0)
    assert result.per_sequence["AXT1POST"] is None  # only normal items there
    assert result.mean_gap_abnormal > 0 > result.mean_gap_normal


def test_class_blind_model_scores_zero(tmp_path):
    store = write_latent_store(tmp_path / "latents")
    model = tiny_unet(class_conditioning=True)  # zero-initialised class embedding: ignores the class
    result = class_probe(model, LatentFlowDataset(store), repeats=2)
    assert result.auroc == pytest.approx(0.5)
    assert result.mean_gap_abnormal == 0.0 and result.mean_gap_normal == 0.0


def test_scores_are_seeded_and_the_item_cap_holds(tmp_path):
    store = write_latent_store(tmp_path / "latents", n_per_group=10)
    ds = LatentFlowDataset(store)
    model = tiny_unet(class_conditioning=True)
    with torch.no_grad():
        model.condition.class_embedding.weight.normal_()
    mu = torch.stack([ds[i]["mu"] for i in range(8)])
    lv = torch.stack([ds[i]["logvar"] for i in range(8)])
    seq = torch.stack([ds[i]["sequence"] for i in range(8)])
    a = class_probe_scores(model, mu, lv, seq, repeats=2, seed=3, batch_size=3)
    np.testing.assert_array_equal(a, class_probe_scores(model, mu, lv, seq, repeats=2, seed=3, batch_size=3))
    assert not np.allclose(a, class_probe_scores(model, mu, lv, seq, repeats=2, seed=4, batch_size=3))
    model.train()
    capped = class_probe(model, ds, repeats=1, max_items=12)
    assert capped.n == 12 and 0 < capped.n_abnormal < 12
    assert model.training is True  # the probe evaluates in eval mode and restores the mode it found
    with pytest.raises(ConfigError, match="max_items"):
        class_probe(model, ds, max_items=0)
    # Posterior means (a model trained on flow.latents=mean): no draw, the scores still seeded.
    m1 = class_probe_scores(model, mu, lv, seq, repeats=1, seed=3, posterior=False)
    np.testing.assert_array_equal(
        m1, class_probe_scores(model, mu, lv, seq, repeats=1, seed=3, posterior=False)
    )


@pytest.mark.parametrize("kwargs", [dict(repeats=0), dict(t_range=(0.5, 0.2)), dict(t_range=(-0.1, 0.5))])
def test_bad_settings_raise(kwargs):
    x = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ConfigError):
        class_probe_scores(PointMassOracle(), x, x, torch.zeros(2, dtype=torch.long), **kwargs)
