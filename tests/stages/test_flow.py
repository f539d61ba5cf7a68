"""The flow1 and flow2 stages: the training tasks on tiny latent stores through the real engine."""

import json

import numpy as np
import pytest
import torch

from flow_fixtures import TINY_UNET
from magphase.config import MagphaseConfig
from magphase.config.flow import UNetConfig
from magphase.config.training import TrainSettings
from magphase.conventions import NULL_CLASS, NULL_SEQUENCE
from magphase.data.datasets import LatentFlowDataset, stage2_sample_weights
from magphase.errors import ConfigError, DataError
from magphase.generative.path import TimeSampler
from magphase.generative.sampling import SampleGroup, sample_latents
from magphase.models.unet import load_flow_model
from magphase.models.weights import load_ema_weights
from magphase.rundir import RunLayout
from magphase.stages.flow1 import Stage1Task, estimate_latent_scale, train_stage1
from magphase.stages.flow2 import (
    Stage2Task,
    is_new_conditioning_parameter,
    stage2_init_weights,
    train_stage2,
    weights_digest,
)
from magphase.training import fit

TINY = UNetConfig(**{k: v for k, v in TINY_UNET.items() if k != "input_size"})
SHAPE = (2, 8, 8)


def _settings(steps, **kw):
    base = dict(
        steps=steps,
        batch_size=16,
        lr=3e-3,
        warmup_steps=0,
        ema_decay=0.9,
        checkpoint_every=steps,
        log_every=max(1, steps // 4),
        device="cpu",
        seed=0,
    )
    base.update(kw)
    return TrainSettings(**base)


def _randomised_stage1_weights(seed=0):
    torch.manual_seed(seed)
    model = Stage1Task(TINY, TimeSampler("uniform"), SHAPE).build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_posterior_draws_are_fresh_and_mean_is_mu():
    batch = {"mu": torch.zeros(4000, 1), "logvar": torch.full((4000, 1), np.log(0.25))}
    task = Stage1Task(TINY, TimeSampler(), SHAPE, latents="posterior")
    a, b = task.draw_latents(batch), task.draw_latents(batch)
    assert not torch.equal(a, b)
    assert abs(a.std().item() - 0.5) < 0.03
    mean_task = Stage1Task(TINY, TimeSampler(), SHAPE, latents="mean")
    assert torch.equal(mean_task.draw_latents(batch), batch["mu"])
    with pytest.raises(ConfigError):
        Stage1Task(TINY, TimeSampler(), SHAPE, latents="mode")


def test_latent_scale_estimate_and_use(latent_store):
    ds = LatentFlowDataset(latent_store)
    mu = ds.store.read("mu", ds.indices)
    expected = 1 / np.sqrt(mu.var() + np.exp(-4.0))
    assert np.isclose(estimate_latent_scale(ds, "posterior"), expected, rtol=1e-4)
    assert np.isclose(estimate_latent_scale(ds, "mean"), 1 / mu.std(), rtol=1e-4)
    task = Stage1Task(TINY, TimeSampler(), SHAPE, latents="mean", latent_scale=2.5)
    batch = {"mu": torch.from_numpy(mu[:3]), "logvar": torch.zeros(3, *SHAPE)}
    torch.testing.assert_close(task.model_latents(batch), 2.5 * batch["mu"])
    assert task.build_model().latent_scale == 2.5 and task.model_config()["latent_scale"] == 2.5
    with pytest.raises(ConfigError):
        Stage1Task(TINY, TimeSampler(), SHAPE, latent_scale=0.0)


def test_condition_dropout_rates():
    torch.manual_seed(0)
    batch = {
        "sequence": torch.zeros(20000, dtype=torch.long),
        "class_token": torch.ones(20000, dtype=torch.long),
    }
    seq, label = Stage1Task(TINY, TimeSampler(), SHAPE, sequence_dropout=0.1).condition(batch)
    assert label is None and abs((seq == NULL_SEQUENCE).float().mean().item() - 0.1) < 0.01
    _, weights = _randomised_stage1_weights()
    task = Stage2Task(TINY, TimeSampler(), SHAPE, weights, 1, sequence_dropout=0.0, class_dropout=0.25)
    seq, label = task.condition(batch)
    assert (seq == 0).all() and abs((label == NULL_CLASS).float().mean().item() - 0.25) < 0.01


def test_stage2_at_init_equals_stage1():
    stage1, weights = _randomised_stage1_weights(seed=1)
    stage2 = Stage2Task(TINY, TimeSampler(), SHAPE, weights, phase=1).build_model()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, *SHAPE, generator=g), torch.rand(4, generator=g)
    seq = torch.tensor([0, 1, 2, 5])
    ref = stage1(x, t, seq)
    for token in range(4):
        torch.testing.assert_close(stage2(x, t, seq, torch.full((4,), token)), ref, rtol=0, atol=0)
    trainable = [n for n, p in stage2.named_parameters() if p.requires_grad]
    assert trainable == ["condition.class_embedding.weight"]


def test_phase1_leaves_pretrained_weights_bit_identical(tmp_path, latent_store):
    _, weights = _randomised_stage1_weights(seed=2)
    ds = LatentFlowDataset(latent_store)
    task = Stage2Task(TINY, TimeSampler(), SHAPE, weights, phase=1, class_dropout=0.1)
    result = fit(
        task, ds, _settings(6, weight_decay=0.1), tmp_path / "p1", sample_weights=stage2_sample_weights(ds)
    )
    for model in (result.model, result.ema_model):
        state = model.state_dict()
        for name, value in weights.items():
            assert torch.equal(state[name], value), name
        assert state["condition.class_embedding.weight"].abs().sum() > 0  # the new embedding learned


def test_phase2_param_groups_lower_pretrained_lr(tmp_path, latent_store):
    _, weights = _randomised_stage1_weights(seed=3)
    task = Stage2Task(TINY, TimeSampler(), SHAPE, weights, phase=2, pretrained_lr_scale=0.1)
    model = task.build_model()
    assert all(p.requires_grad for p in model.parameters())
    groups = [g for g in task.param_groups(model) if g["params"]]
    by_name = {n: p for n, p in model.named_parameters()}
    for g in groups:
        names = [n for n, p in by_name.items() if any(p is q for q in g["params"])]
        new = {is_new_conditioning_parameter(n) for n in names}
        assert len(new) == 1
        assert g["lr_scale"] == (1.0 if new.pop() else 0.1)
    assert sum(len(g["params"]) for g in groups) == len(by_name)
    result = fit(task, LatentFlowDataset(latent_store), _settings(3), tmp_path / "p2")
    changed = [n for n, v in weights.items() if not torch.equal(result.model.state_dict()[n], v)]
    assert len(changed) > len(weights) // 2  # pretrained weights train in phase 2


def _stage1(cfg, run):
    return train_stage1(cfg, RunLayout(run).flow(1), cfg.flow.latent_store)


def _stage2(cfg, run, resume=False):
    layout = RunLayout(run)
    init = stage2_init_weights(cfg, layout)
    return train_stage2(cfg, layout.flow(2), cfg.flow.latent_store, init, resume=resume)


def _tiny_config(tmp_path, store, steps=40):
    cfg = MagphaseConfig()
    flow = cfg.flow.model_copy(
        update=dict(
            unet=TINY,
            latent_store=str(store),
            time_sampling=cfg.flow.time_sampling.model_copy(update=dict(distribution="uniform")),
            stage1=cfg.flow.stage1.model_copy(update=dict(train=_settings(steps, keep_every=steps // 2))),
            stage2=cfg.flow.stage2.model_copy(
                update=dict(phase1=_settings(40, lr=1e-2), phase2=_settings(80, keep_every=40))
            ),
        )
    )
    return cfg.model_copy(update=dict(flow=flow, device="cpu"))


@pytest.mark.slow
def test_two_stages_train_reduce_loss_and_export(tmp_path, latent_store):
    cfg = _tiny_config(tmp_path, latent_store, steps=60)
    run = tmp_path / "run"
    r1 = _stage1(cfg, run)
    rows = [json.loads(line) for line in r1.metrics_path.read_text().splitlines()]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0]["loss"], rows[-1]["loss"])
    assert sorted(RunLayout(run).flow_snapshots(1)) == [30, 60]
    model1 = load_flow_model(RunLayout(run).flow_weights(1))
    assert not model1.class_conditioned
    assert np.isclose(model1.latent_scale, estimate_latent_scale(LatentFlowDataset(latent_store), seed=0))
    # Model selection: a recorded snapshot becomes the stage's weights (and stage 2's starting point).
    RunLayout(run).select_flow_snapshot(1, 30, criterion="realfake_auroc", value=0.61)
    assert RunLayout(run).flow_weights(1) == RunLayout(run).flow_snapshots(1)[30]
    with pytest.raises(ConfigError):
        RunLayout(run).select_flow_snapshot(1, 7)

    r2 = _stage2(cfg, run)
    assert r2.step == 80 and sorted(RunLayout(run).flow_snapshots(2)) == [40, 80]
    model2 = load_flow_model(RunLayout(run).flow_weights(2))
    assert model2.class_conditioned and model2.latent_scale == model1.latent_scale != 1.0
    assert model2.unknown_sequences == tuple(cfg.flow.stage2.unknown_sequences)  # sampling checks labels
    # Phase 1 started from the selected stage-1 snapshot and kept those weights.
    start = load_ema_weights(RunLayout(run).flow_snapshots(1)[30])
    phase1 = load_ema_weights(run / "flow" / "stage2" / "phase1" / "ema.safetensors")
    assert all(torch.equal(phase1[k], v) for k, v in start.items())
    # The fixture's abnormal latents sit at +1.5, normal ones at -1.5: the class condition separates them.
    means = {
        label: sample_latents(model2, stage=2, group=SampleGroup("AXT1", label, 32), guidance=2.0, steps=10)
        .mean(dim=(1, 2, 3))
        .mean()
        .item()
        for label in ("normal", "abnormal")
    }
    assert means["abnormal"] - means["normal"] > 0.8, means

    # Resuming with the same stage-1 weights continues; another stage-1 selection discards stage 2's
    # checkpoints (they belong to a model started from other weights) and trains it afresh from the new one.
    assert _stage2(cfg, run, resume=True).resumed_from == 80
    RunLayout(run).select_flow_snapshot(1, 60, criterion="realfake_auroc", value=0.55)
    again = _stage2(cfg, run, resume=True)
    assert again.resumed_from == 0 and again.step == 80
    phase1 = load_ema_weights(run / "flow" / "stage2" / "phase1" / "ema.safetensors")
    start = load_ema_weights(RunLayout(run).flow_snapshots(1)[60])
    assert all(torch.equal(phase1[k], v) for k, v in start.items())
    record = json.loads((run / "flow" / "stage2" / "init.json").read_text())
    assert record["sha256"] == weights_digest(start)


def test_loading_weights_that_are_not_a_flow_model_raises(tmp_path):
    from magphase.models.weights import save_weights

    path = save_weights(
        {"w": torch.zeros(2)}, tmp_path / "other.safetensors", {"model_config": '{"kind": "cvae"}'}
    )
    with pytest.raises(DataError, match="model_config"):
        load_flow_model(path)
    with pytest.raises(DataError):
        load_flow_model(tmp_path / "missing.safetensors")
    with pytest.raises(DataError, match="stage 1"):
        RunLayout(tmp_path / "run").flow_weights(1)


def test_canonical_phase_latents_mark_the_model_and_must_match_in_stage2(tmp_path, latent_store):
    import shutil

    canon = tmp_path / "canon"
    shutil.copytree(latent_store, canon)
    meta = json.loads((canon / "meta.json").read_text())
    (canon / "meta.json").write_text(json.dumps({**meta, "canonical_phase": True}))
    cfg = _tiny_config(tmp_path, canon, steps=4)
    run = tmp_path / "run"
    _stage1(cfg, run)
    assert load_flow_model(RunLayout(run).flow_weights(1)).canonical_phase is True
    # Stage 2 on latents that are not phase-canonical would learn another distribution: refused.
    plain = cfg.model_copy(update=dict(flow=cfg.flow.model_copy(update=dict(latent_store=str(latent_store)))))
    with pytest.raises(ConfigError, match="canonical_phase"):
        _stage2(plain, run)
