"""The PhaseGen stage: the training task, learning a magnitude-dependent phase, weights export, the
phasegen store and the CLI."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from magphase.cli import app
from magphase.config import MagphaseConfig
from magphase.config.phasegen import DiffusionSettings, PhaseGenNetwork
from magphase.data.store import Store
from magphase.errors import ConfigError, DataError
from magphase.evaluation.phase import (
    evaluate_phasegen,
)
from magphase.generative.phase_diffusion import (
    sample_phase,
)
from magphase.models.complex_unet import load_phasegen
from magphase.models.weights import save_weights
from magphase.mri.complex import channels_to_complex
from magphase.stages.phasegen import PhaseGenTask, generate_phasegen_store, train_phasegen
from magphase.training import TrainSettings, fit
from phasegen_fixtures import TINY_COMPLEX_UNET, PatchesDataset, blobs, phase_coherence_of, write_patch_store


@pytest.mark.slow
def test_phasegen_learns_a_magnitude_dependent_phase(tmp_path):
    net = dict(
        base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, emb_dim=32, time_features=16, groups=4
    )
    diffusion = DiffusionSettings(timesteps=100, noise="gaussian")
    task = PhaseGenTask(net, diffusion, global_phase="keep")
    settings = TrainSettings(
        steps=200, batch_size=16, lr=3e-3, warmup_steps=10, ema_decay=0.9, checkpoint_every=200, log_every=10
    )
    result = fit(
        task, PatchesDataset(blobs(128, 32, np.random.default_rng(0))), settings.resolved(0, "cpu"), tmp_path
    )
    model = result.ema_model
    model.diffusion = diffusion
    test = channels_to_complex(torch.from_numpy(blobs(16, 32, np.random.default_rng(1))))
    generated = sample_phase(model, test.abs(), steps=10, seed=0)
    learned = phase_coherence_of(generated, test).item()
    unrelated = phase_coherence_of(torch.polar(test.abs(), torch.rand(test.shape) * 2 * math.pi), test).item()
    # Measured 0.82 (random phases: 0.06).
    assert learned > 0.5 and learned > 5 * unrelated, (learned, unrelated)


def test_train_export_load_and_write_a_phasegen_store(tmp_path):
    store = write_patch_store(tmp_path / "patches")
    cfg = MagphaseConfig()
    pg = cfg.phasegen.model_copy(
        update=dict(
            network=PhaseGenNetwork(**TINY_COMPLEX_UNET),
            patch_store=str(store),
            diffusion=DiffusionSettings(timesteps=20),
            train=TrainSettings(steps=3, batch_size=2, checkpoint_every=3, log_every=1),
        )
    )
    cfg = cfg.model_copy(update=dict(phasegen=pg, device="cpu"))
    result = train_phasegen(cfg, tmp_path / "run" / "phasegen", store)
    assert result.step == 3 and result.ema_path == tmp_path / "run" / "phasegen" / "ema.safetensors"
    model = load_phasegen(tmp_path / "run" / "phasegen")
    assert model.diffusion.timesteps == 20 and not model.training

    out = generate_phasegen_store(
        model, store, tmp_path / "syn", split="train", steps=3, seed=5, batch_size=3
    )
    syn, src = Store(out), Store(store)
    idx = src.select(split="train")
    assert len(syn) == idx.size == 4
    m = syn.manifest
    assert list(m["source_patch_id"]) == list(src.manifest["patch_id"].iloc[idx])
    assert (m["synthetic"] == 1).all() and m["patch_id"].str.startswith("pg-").all()
    assert list(m["sequence"]) == list(src.manifest["sequence"].iloc[idx])
    assert syn.meta["generator"] == "phasegen" and syn.meta["steps"] == 3
    new = channels_to_complex(torch.from_numpy(syn.read("patches", slice(None))))
    old = channels_to_complex(torch.from_numpy(src.read("patches", idx)))
    torch.testing.assert_close(new.abs(), old.abs(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(new, old)
    with pytest.raises(FileExistsError):
        generate_phasegen_store(model, store, out, steps=2)
    with pytest.raises(DataError, match="split"):
        generate_phasegen_store(model, store, tmp_path / "none", split="test", steps=2)
    with pytest.raises(DataError, match="missing.safetensors"):
        load_phasegen(tmp_path / "missing.safetensors")
    other = save_weights(
        {"w": torch.zeros(2)}, tmp_path / "o.safetensors", {"model_config": '{"kind": "cvae"}'}
    )
    with pytest.raises(DataError, match="model_config"):
        load_phasegen(other)

    # The CLI drives the same code.
    def cli(out_name, *extra):
        args = ["phasegen", "sample", "--source", str(store), "--out", str(tmp_path / out_name), *extra]
        return CliRunner().invoke(app, args)

    res = cli("cli", "--run", str(tmp_path / "run"), "--limit", "2", "--steps", "2")
    assert res.exit_code == 0, res.output
    assert len(Store(tmp_path / "cli")) == 2
    assert cli("x", "--weights", str(result.ema_path), "--sampler", "euler").exit_code != 0

    # Evaluation against the real phases of the same magnitudes, per sequence and overall.
    table = evaluate_phasegen(out)
    assert list(table["sequence"]) == ["AXFLAIR", "AXT1", "all"] and table["n"].iloc[-1] == 4
    assert (
        table["agreement_constant"].between(0, 1).all() and table["smoothness_phasegen"].between(0, 1).all()
    )
    pd.testing.assert_frame_equal(evaluate_phasegen(out, chunk=3), table)
    args = ["phasegen", "eval", "--synthetic", str(out), "--out", str(tmp_path / "eval")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "phasegen_phase.csv").is_file() and "agreement" in res.output
    with pytest.raises(DataError, match="source_patch_id"):
        evaluate_phasegen(store, store)
    png = tmp_path / "fig.png"
    args = ["phasegen", "figure", "--source", str(store), "--out", str(png), "--run", str(tmp_path / "run")]
    res = CliRunner().invoke(app, [*args, "--k", "3", "--draws", "1", "--steps", "2", "--split", "train"])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000


def test_config_overrides_keep_the_phasegen_training_defaults():
    from magphase.config import load_config

    cfg = load_config(None, ["phasegen.train.log_every=10"])
    assert cfg.phasegen.train.log_every == 10
    assert cfg.phasegen.train.steps == 2000 and cfg.phasegen.train.batch_size == 16
    assert cfg.phasegen.network.base_channels == 8
    with pytest.raises(ConfigError):
        load_config(None, ["phasegen.network.time_features=7"])


def test_task_loss_is_finite_and_trains_every_parameter():
    torch.manual_seed(0)
    for loss in ("l1", "l2"):
        task = PhaseGenTask(TINY_COMPLEX_UNET, DiffusionSettings(timesteps=20, loss=loss, noise="phase"))
        model = task.build_model()
        value, _ = task.loss(model, {"x": torch.randn(2, 2, 16, 16)}, 0)
        assert value.dtype == torch.float32 and value.ndim == 0 and torch.isfinite(value)
        value.backward()
        assert all(p.grad is not None for p in model.parameters())
    assert task.model_config()["kind"] == "phasegen_unet"
    assert task.model_config()["diffusion"]["loss"] == "l2"
