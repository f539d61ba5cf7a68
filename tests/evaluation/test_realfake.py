"""Real vs synthetic latent classification (paper 2.4.1, Table 4) and stage-1 checkpoint selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import (
    tiny_eval_config,
    write_latent_store,
)

import magphase.evaluation.classifier_train as classifier_train_mod
from magphase.data.store import Store
from magphase.errors import ConfigError, DataError
from magphase.evaluation.paper import PAPER_TABLE4
from magphase.evaluation.realfake import (
    latent_arrays,
    matched_synthetic_splits,
    real_split_counts,
    realfake_required_counts,
    run_realfake,
    select_stage1_checkpoint,
)

COUNTS = {"AXT1": {"train": 96, "val": 32, "test": 48}}


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(3)
    real = write_latent_store(tmp_path / "real", rng, COUNTS)
    need = realfake_required_counts(real, n_test_sets=2)
    assert need == {"AXT1": 96 + 32 + 2 * 48}
    far = write_latent_store(tmp_path / "far", rng, {"AXT1": {"x": need["AXT1"]}}, offset=1.5, synthetic=True)
    same = write_latent_store(tmp_path / "same", rng, {"AXT1": {"x": need["AXT1"]}}, synthetic=True)
    return real, far, same


def test_matched_splits_follow_real_counts_and_are_disjoint(stores):
    real, far, _ = stores
    split = matched_synthetic_splits(Store(real), Store(far), "AXT1", seed=0, n_test_sets=2)
    assert {k: len(v) for k, v in split.real.items()} == {"train": 96, "val": 32, "test": 48}
    assert len(split.synthetic["train"]) == 96 and len(split.synthetic["val"]) == 32
    assert [len(t) for t in split.synthetic_test] == [48, 48]
    every = np.concatenate([split.synthetic["train"], split.synthetic["val"], *split.synthetic_test])
    assert np.unique(every).size == every.size
    again = matched_synthetic_splits(Store(real), Store(far), "AXT1", seed=0, n_test_sets=2)
    assert np.array_equal(again.synthetic["train"], split.synthetic["train"])
    with pytest.raises(DataError, match="needs 320"):
        matched_synthetic_splits(Store(real), Store(far), "AXT1", seed=0, n_test_sets=4)
    with pytest.raises(ConfigError):
        matched_synthetic_splits(
            Store(real), Store(far), "AXT1", seed=0, test_stores=[Store(far)] * 3, n_test_sets=2
        )


def test_separable_synthetic_latents_give_auroc_near_one(stores, tmp_path):
    real, far, _ = stores
    cfg = tiny_eval_config()
    res = run_realfake(real, far, tmp_path / "out", cfg, seed=1, device="cpu")
    row = res.table.iloc[0]
    assert row["sequence"] == "AXT1" and row["n_evaluations"] == 4  # 2 runs x 2 test sets
    assert row["auroc_mean"] > 0.95
    assert row["paper_auroc_mean"] == PAPER_TABLE4["AXT1"][0]
    md = res.table4_md.read_text()
    assert "AXT1" in md and "0.640 ± 0.026" in md
    assert json.loads(res.summary_json.read_text())["n_test_sets"] == 2


def test_identical_distributions_give_auroc_near_half_and_resume(stores, tmp_path, monkeypatch):
    real, _, same = stores
    cfg = tiny_eval_config()
    res = run_realfake(real, same, tmp_path / "out", cfg, seed=1, device="cpu", real_latents="mean")
    assert abs(res.table.iloc[0]["auroc_mean"] - 0.5) < 0.12
    assert not (tmp_path / "out" / "runs" / "AXT1" / "run0" / "checkpoint.pt").exists()  # pruned
    assert (tmp_path / "out" / "runs" / "AXT1" / "run0" / "ema.safetensors").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded (sequence, run) was trained again")

    monkeypatch.setattr(classifier_train_mod, "train_classifier", no_training)
    again = run_realfake(real, same, tmp_path / "out", cfg, seed=1, device="cpu", real_latents="mean")
    assert again.table.iloc[0]["auroc_mean"] == res.table.iloc[0]["auroc_mean"]


def test_separate_test_store_is_cut_into_disjoint_sets(stores, tmp_path):
    real, far, _ = stores
    rng = np.random.default_rng(9)
    tests = write_latent_store(tmp_path / "tests", rng, {"AXT1": {"x": 96}}, offset=1.5, synthetic=True)
    split = matched_synthetic_splits(
        Store(real), Store(far), "AXT1", seed=0, test_stores=[Store(tests)], n_test_sets=2
    )
    a, b = split.synthetic_test
    assert len(a) == len(b) == 48 and not set(a) & set(b)


def test_stage1_selection_picks_the_least_distinguishable_candidate(stores, tmp_path):
    real, far, same = stores
    cfg = tiny_eval_config()
    sel = select_stage1_checkpoint(real, {"step500": far, "step1000": same}, tmp_path / "sel", cfg, seed=2)
    assert sel.best == "step1000"
    assert sel.scores["step500"] > 0.9 > sel.scores["step1000"]
    assert json.loads(sel.selection_json.read_text())["best"] == "step1000"


def test_store_layout_errors(stores, tmp_path):
    real, far, _ = stores
    assert latent_arrays(Store(real), synthetic=False) == ("mu", "logvar")
    assert latent_arrays(Store(far), synthetic=True) == ("z", None)
    with pytest.raises(DataError, match="mu"):
        latent_arrays(Store(far), synthetic=False)
    with pytest.raises(DataError, match="no real latents"):
        real_split_counts(Store(real), ["AXT2"])


def test_changed_recipe_recomputes_rows_from_scratch(stores, tmp_path, monkeypatch):
    real, far, _ = stores
    cfg = tiny_eval_config()
    cfg.realfake = cfg.realfake.model_copy(update={"runs": 1, "n_test_sets": 1})
    run_realfake(real, far, tmp_path / "out", cfg, seed=1, device="cpu")
    calls = []
    original = classifier_train_mod.train_classifier

    def counting(*args, **kwargs):
        calls.append(kwargs["resume"])
        return original(*args, **kwargs)

    monkeypatch.setattr(classifier_train_mod, "train_classifier", counting)
    cfg.mixup_alpha = 0.0
    res = run_realfake(real, far, tmp_path / "out", cfg, seed=1, device="cpu")
    assert calls == [False]  # retrained, not resumed from the old run folder
    assert len(res.table) == 1 and res.table.iloc[0]["n_evaluations"] == 1
