"""Torch datasets over the stores: latent items, class tokens, balancing weights, bad stores."""

import numpy as np
import pytest
import torch

from magphase.conventions import CLASS_TOKEN_INDEX, SEQUENCE_INDEX, UNKNOWN_CLASS
from magphase.data.datasets import LatentFlowDataset, class_tokens, stage2_sample_weights
from magphase.data.store import StoreWriter
from magphase.errors import DataError

SHAPE = (2, 8, 8)


def test_class_tokens_and_unknown_sequences():
    seqs = np.array(["AXFLAIR", "AXT1", "AXT2", "AXT1PRE", "AXT1POST"])
    labels = np.array(["normal", "abnormal", "abnormal", "normal", "unlabeled"])
    tok = class_tokens(seqs, labels)
    expected = [CLASS_TOKEN_INDEX[x] for x in ("normal", "abnormal", "unknown", "unknown", "unknown")]
    np.testing.assert_array_equal(tok, expected)


def test_dataset_items_and_balanced_weights(latent_store):
    ds = LatentFlowDataset(latent_store, split="train")
    item = ds[0]
    assert item["mu"].shape == SHAPE and item["mu"].dtype == torch.float32
    assert item["sequence"].dtype == torch.int64 and item["class_token"].dtype == torch.int64
    w = stage2_sample_weights(ds)
    assert np.isclose(w.sum(), 1)
    for seq in np.unique(ds.sequences):  # every sequence equally often
        assert np.isclose(w[ds.sequences == seq].sum(), 1 / 5)
    axt1 = ds.sequences == SEQUENCE_INDEX["AXT1"]  # 6 normal vs 12 abnormal in the fixture
    mass = {c: w[axt1 & (ds.class_tokens == CLASS_TOKEN_INDEX[c])].sum() for c in ("normal", "abnormal")}
    assert np.isclose(mass["normal"], mass["abnormal"])
    assert (ds.class_tokens[ds.sequences == SEQUENCE_INDEX["AXT2"]] == UNKNOWN_CLASS).all()


def test_dataset_rejects_bad_stores(tmp_path, latent_store):
    with StoreWriter(tmp_path / "p", {"patches": (2, 4, 4)}) as w:
        w.append(
            [dict(patch_id=0, sequence="AXT1", label="normal", split="train")], patches=np.zeros((1, 2, 4, 4))
        )
    with pytest.raises(DataError, match="mu"):
        LatentFlowDataset(tmp_path / "p")
    with pytest.raises(DataError, match="split"):
        LatentFlowDataset(latent_store, split="test")
    with StoreWriter(tmp_path / "q", {"mu": SHAPE, "logvar": SHAPE}) as w:
        w.append(
            [dict(patch_id=0, sequence="T2STAR", label="normal", split="train")],
            mu=np.zeros((1, *SHAPE)),
            logvar=np.zeros((1, *SHAPE)),
        )
    with pytest.raises(DataError, match="sequence"):
        LatentFlowDataset(tmp_path / "q")
