"""Downstream normal-vs-abnormal experiments (paper 2.4.2, Figs. 6-8) on tiny stores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from eval_fixtures import (
    tiny_eval_config,
    write_patch_store,
)

import magphase.evaluation.classifier_train as classifier_train_mod
import magphase.evaluation.downstream as downstream_mod
from magphase.config.evaluation import DownstreamConfig
from magphase.data.subsets import stratum_counts
from magphase.errors import ConfigError, DataError
from magphase.evaluation.downstream import (
    build_compositions,
    load_downstream_data,
    plan_configurations,
    run_downstream,
    select_stage2_checkpoint,
)
from magphase.evaluation.metrics import safe_auroc


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downstream")
    rng = np.random.default_rng(5)
    real = write_patch_store(tmp / "real", rng)
    syn = write_patch_store(tmp / "syn", rng, synthetic=True, volumes_per_class={"normal": 6, "abnormal": 6})
    ext = write_patch_store(
        tmp / "ext",
        rng,
        external=True,
        sequences=("AXT1",),
        volumes_per_class={"normal": 4, "abnormal": 4},
        patches_per_volume=8,
    )
    return real, syn, ext


def test_default_plan_is_the_paper_grid_plus_ablation():
    plan = plan_configurations(DownstreamConfig())
    names = [c.name for c in plan]
    assert len(names) == len(set(names))
    assert names[0] == "real100"
    assert sum(c.condition == "real_only" for c in plan if c.input_mode == "complex") == 10  # 100 .. 10 %
    assert sum(c.condition == "real_synthetic" for c in plan if c.input_mode == "complex") == 10  # 90 .. 0 %
    assert [c.name for c in plan if c.experiment == "additive"] == [f"add{10 * k:03d}" for k in range(1, 11)]
    assert {c.name for c in plan if c.input_mode == "magnitude"} == {"real100-mag", "subst000-mag"}
    small = plan_configurations(DownstreamConfig(real_fractions=(1.0, 0.5), additive_fractions=(1.0,)))
    assert [c.name for c in small] == [
        "real100",
        "real050",
        "subst050",
        "add100",
        "real100-mag",
        "subst000-mag",
    ]


def test_compositions_constant_size_matched_and_additive_sizes(stores):
    real, syn, _ = stores
    dcfg = DownstreamConfig(real_fractions=(1.0, 0.6, 0.3, 0.0), additive_fractions=(0.5, 1.0))
    data = load_downstream_data(real, syn, None, 1 << 30)
    plan = plan_configurations(dcfg)
    comps = build_compositions(data, plan, subset_seed=0)
    n_real = len(data.train)
    full = stratum_counts(data.real_train)
    for c in plan:
        comp = comps[c.name]
        if c.condition == "real_synthetic":
            assert comp.size == n_real
            merged = stratum_counts(data.real_train, comp.real) if len(comp.real) else {}
            for key, n in stratum_counts(data.synthetic_pool, comp.synthetic).items():
                merged[key] = merged.get(key, 0) + n
            assert merged == full
        elif c.condition == "real_plus_synthetic":
            assert len(comp.real) == n_real
            assert len(comp.synthetic) == pytest.approx(c.synthetic_fraction * n_real, abs=len(full))
    assert len(comps["real030"].real) < len(comps["real060"].real) < n_real
    assert set(comps["real030"].real) <= set(comps["real060"].real)
    assert len(comps["subst000"].real) == 0
    # training rows are labelled train-split patches only
    assert set(data.real.manifest.iloc[data.train]["split"]) == {"train"}
    assert set(data.real.manifest.iloc[data.train]["label"]) == {"normal", "abnormal"}


@pytest.mark.slow
def test_run_downstream_end_to_end_resumes_and_writes_figures(stores, tmp_path, monkeypatch):
    real, syn, ext = stores
    cfg = tiny_eval_config(
        real_fractions=(1.0, 0.5, 0.0), additive_fractions=(1.0,), magnitude_only_fractions=(0.0,)
    )
    res = run_downstream(real, syn, tmp_path / "out", cfg, external_store=ext, seed=3, device="cpu")
    results = pd.read_csv(res.results_csv)
    names = ["real100", "real050", "subst050", "subst000", "add100", "subst000-mag"]
    assert list(results["config"]) == names and (results["run"] == 0).all()
    for col in ("auroc_val", "auroc_test", "auroc_external"):
        assert results[col].between(0, 1).all()
    assert (results.loc[results["config"] == "subst050", "n_total"] == results.loc[0, "n_real"]).all()
    summary = res.summary.set_index("config")
    assert summary.loc["real100", "paper_test_mean"] == 0.842
    assert summary.loc["subst000", "paper_external_mean"] == 0.843
    assert set(res.figures) == {"fig6", "fig7", "fig8"} and all(p.is_file() for p in res.figures.values())
    md = res.summary_md.read_text()
    assert "Substitution" in md and "Additive" in md and "Magnitude only" in md
    assert json.loads(res.summary_json.read_text())["guidance"] == 2.0
    volumes = pd.read_csv(tmp_path / "out" / "runs" / "real100" / "run0" / "external_volumes.csv")
    assert len(volumes) == 8 and (volumes["n_top"] == 1).all()  # 8 patches per volume -> top 1
    # train AUROC, per-run test probabilities and volume-bootstrap intervals
    assert results["auroc_train"].between(0, 1).all()
    assert (
        results.loc[results["config"] == "real050", "n_real_volumes"] < results.loc[0, "n_real_volumes"]
    ).all()
    patches = pd.read_csv(tmp_path / "out" / "runs" / "real100" / "run0" / "test_patches.csv")
    assert list(patches.columns) == ["row", "volume", "sequence", "target", "p"]
    assert safe_auroc(patches["target"], patches["p"]) == pytest.approx(results.loc[0, "auroc_test"])
    # per-sequence test AUROC: the patches of one sequence only
    for seq, sub in patches.groupby("sequence"):
        expected = safe_auroc(sub["target"], sub["p"])
        got = results.loc[0, f"auroc_test_{seq}"]
        assert (np.isnan(expected) and np.isnan(got)) or got == pytest.approx(expected)
        assert np.isnan(expected) or summary.loc["real100", f"auroc_test_{seq}_mean"] == pytest.approx(
            expected
        )
    assert "Test AUROC per sequence" in md
    for key in ("test", "external"):
        lo, hi = summary[f"auroc_{key}_lo"], summary[f"auroc_{key}_hi"]
        assert (lo <= summary[f"auroc_{key}_mean"] + 1e-12).all() and (
            summary[f"auroc_{key}_mean"] <= hi + 1e-12
        ).all()
    assert summary.loc["real100", "reference"] == "" and np.isnan(summary.loc["real100", "delta_test"])
    assert summary.loc["subst000-mag", "reference"] == "subst000"
    d = summary.loc["subst050"]
    assert d["delta_test"] == pytest.approx(d["auroc_test_mean"] - summary.loc["real100", "auroc_test_mean"])
    assert d["delta_test_lo"] <= d["delta_test"] <= d["delta_test_hi"]
    assert d["distinct_test"] in ("yes", "no")
    assert "vs real100 (test)" in md and "volume-bootstrap" in md

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded (config, run) was trained again")

    monkeypatch.setattr(classifier_train_mod, "train_classifier", no_training)
    again = run_downstream(
        real, syn, tmp_path / "out", cfg, external_store=ext, seed=3, device="cpu", figures=False
    )
    pd.testing.assert_frame_equal(again.summary, res.summary)


def test_stage2_selection_prefers_the_informative_generator(stores, tmp_path):
    real, syn, _ = stores
    # a "collapsed" generator: its abnormal samples look like normal ones (labels carry no signal)
    rng = np.random.default_rng(8)
    bad = write_patch_store(tmp_path / "bad", rng, synthetic=True, volumes_per_class={"normal": 12})
    from magphase.data.store import Store, StoreWriter

    st = Store(bad)
    m = st.manifest.copy()
    m.loc[m.index % 2 == 1, "label"] = "abnormal"
    with StoreWriter(tmp_path / "bad2", {"patches": st.arrays["patches"]}, kind="synthetic") as w:
        w.append(m.to_dict("records"), patches=st.read("patches", slice(None)))
    cfg = tiny_eval_config()
    cfg.downstream = cfg.downstream.model_copy(
        update={"train": cfg.downstream.train.model_copy(update={"steps": 60})}
    )
    sel = select_stage2_checkpoint(
        real, {"good": syn, "collapsed": tmp_path / "bad2"}, tmp_path / "sel", cfg, seed=0
    )
    assert set(sel.scores) == {"good", "collapsed"}
    assert sel.best == "good"
    assert sel.scores["good"] > sel.scores["collapsed"]


def test_missing_synthetic_data_errors(stores, tmp_path):
    real, _, _ = stores
    cfg = tiny_eval_config(real_fractions=(1.0, 0.0), additive_fractions=(1.0,))
    with pytest.raises(ConfigError, match="no synthetic store"):
        run_downstream(real, None, tmp_path / "out", cfg)
    rng = np.random.default_rng(1)
    few = write_patch_store(
        tmp_path / "few", rng, synthetic=True, volumes_per_class={"normal": 1, "abnormal": 1}
    )
    with pytest.raises(DataError, match="needs"):
        run_downstream(real, few, tmp_path / "out2", cfg)


def test_required_counts_cover_the_largest_synthetic_share(stores):
    real, _, _ = stores
    from magphase.data.store import Store

    m = Store(real).manifest
    train = m[(m["split"] == "train") & m["label"].isin(["normal", "abnormal"])]
    expected = {k: int(v) for k, v in train.groupby(["label", "sequence"]).size().items()}
    assert downstream_mod.downstream_required_counts(real, DownstreamConfig()) == expected
    half = DownstreamConfig(real_fractions=(1.0,), additive_fractions=(0.5,), magnitude_only=False)
    assert downstream_mod.downstream_required_counts(real, half) == {
        k: -(-v // 2) for k, v in expected.items()
    }


@pytest.mark.slow
def test_learning_curve_trains_nested_real_shares_and_reports_the_rise(stores, tmp_path, monkeypatch):
    from magphase.config.evaluation import LearningCurveConfig
    from magphase.evaluation.learning_curve import learning_curve_plan, run_learning_curve

    real, _, ext = stores
    cfg = tiny_eval_config()
    cfg.learning_curve = LearningCurveConfig(fractions=(0.5, 1.0), runs=2)
    assert [c.name for c in learning_curve_plan(cfg.learning_curve.fractions)] == ["real100", "real050"]
    res = run_learning_curve(real, tmp_path / "lc", cfg, external_store=ext, seed=1, device="cpu")
    results = pd.read_csv(tmp_path / "lc" / "results.csv")
    assert sorted(zip(results["config"], results["run"], strict=True)) == [
        ("real050", 0),
        ("real050", 1),
        ("real100", 0),
        ("real100", 1),
    ]
    assert set(results["experiment"]) == {"learning_curve"} and (results["n_synthetic"] == 0).all()
    s = res.summary.set_index("config")
    assert s.loc["real050", "n_real_volumes"] < s.loc["real100", "n_real_volumes"]
    rise = res.rise["test"]
    assert rise["from_fraction"] == 0.5
    assert rise["rise"] == pytest.approx(
        s.loc["real100", "auroc_test_mean"] - s.loc["real050", "auroc_test_mean"]
    )
    assert rise["lo"] <= rise["rise"] <= rise["hi"]
    assert res.figure is not None and res.figure.is_file()
    md = res.markdown.read_text()
    assert "| 50 % |" in md and "| 100 % |" in md and "Rise from 50 % to 100 %" in md
    assert json.loads(res.json.read_text())["runs"] == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded share x seed was trained again")

    monkeypatch.setattr(classifier_train_mod, "train_classifier", no_training)
    again = run_learning_curve(
        real, tmp_path / "lc", cfg, external_store=ext, seed=1, device="cpu", figures=False
    )
    pd.testing.assert_frame_equal(again.summary, res.summary)


def test_learning_curve_fractions_are_validated():
    from magphase.config.evaluation import LearningCurveConfig

    with pytest.raises(ValueError, match="1.0"):
        LearningCurveConfig(fractions=(0.25, 0.5))
    with pytest.raises(ValueError):
        LearningCurveConfig(fractions=(0.0, 1.0))
