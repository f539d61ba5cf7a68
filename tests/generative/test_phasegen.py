"""PhaseGen: schedule, noise, sampler (checked with an oracle network), learning, stores, CLI."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from typer.testing import CliRunner

from magphase.cli import app
from magphase.config import MagphaseConfig
from magphase.config.phasegen import DiffusionSettings, PhaseGenNetwork
from magphase.data.store import Store, StoreWriter
from magphase.errors import ConfigError, DataError
from magphase.generative.phasegen import (
    PhaseGenTask,
    alphas_cumprod,
    beta_schedule,
    constant_phase,
    draw_noise,
    evaluate_phasegen,
    generate_phasegen_store,
    load_phasegen,
    magnitude_scale,
    patch_phase_smoothness,
    phase_agreement,
    phase_smoothness,
    random_phase,
    sample_phase,
    sampling_timesteps,
    to_complex,
    train_phasegen,
    training_target,
)
from magphase.models.weights import save_weights
from magphase.training import TrainSettings, fit

TINY = dict(base_channels=4, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, time_features=8, groups=2)


def test_schedules():
    for schedule in ("cosine", "linear"):
        d = DiffusionSettings(timesteps=200, schedule=schedule)
        betas, abar = beta_schedule(d), alphas_cumprod(d)
        assert betas.shape == (200,) and betas.dtype == torch.float64
        assert torch.all(betas > 0) and torch.all(betas <= 0.999)
        assert torch.all(abar[1:] < abar[:-1]) and abar[0] > 0.99 and abar[-1] < 0.01
    # Cosine: abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) pi/2) (up to the clipping at the end).
    d = DiffusionSettings(timesteps=1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert alphas_cumprod(d)[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)


def test_noise_kinds():
    g = torch.Generator().manual_seed(0)
    phase = draw_noise("phase", (4000,), g)
    torch.testing.assert_close(phase.abs(), torch.ones(4000))
    assert abs(phase.mean().abs().item()) < 0.05
    gauss = draw_noise("gaussian", (20000,), g)
    assert gauss.abs().pow(2).mean().item() == pytest.approx(1.0, abs=0.03)
    assert abs(gauss.real.var().item() - 0.5) < 0.03 and abs(gauss.imag.var().item() - 0.5) < 0.03
    with pytest.raises(ValueError):
        draw_noise("uniform", (3,))


def test_sampling_timesteps():
    assert sampling_timesteps("ddpm", 7, 20) == list(range(19, -1, -1))
    ts = sampling_timesteps("ddim", 5, 1000)
    assert ts == [999, 749, 500, 250, 0]
    assert sampling_timesteps("ddim", 5000, 10) == list(range(9, -1, -1))
    with pytest.raises(ConfigError):
        sampling_timesteps("euler", 5, 10)


class Oracle(nn.Module):
    """Predicts the exact noise of a known ``x0``: every sampler must then return ``x0``'s phase."""

    def __init__(self, x0, diffusion):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.x0 = x0
        self.diffusion = diffusion
        self.abar = alphas_cumprod(diffusion)

    def forward(self, x_t, magnitude, t):
        a = self.abar[t].view(-1, 1, 1, 1)
        return ((x_t.to(torch.complex128) - a.sqrt() * self.x0) / (1 - a).sqrt()).to(torch.complex64)


@pytest.mark.parametrize("noise", ["phase", "gaussian"])
@pytest.mark.parametrize(
    "sampler,eta,project", [("ddim", 0.0, True), ("ddim", 0.5, False), ("ddpm", 1.0, True)]
)
def test_samplers_recover_the_data_with_an_oracle_network(noise, sampler, eta, project):
    d = DiffusionSettings(timesteps=60, noise=noise)
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(3, 8, 8, generator=g) + 0.1
    phi = (torch.rand(3, 8, 8, generator=g) * 2 - 1) * math.pi
    x0 = ((mag / magnitude_scale(mag)) * torch.exp(1j * phi)).unsqueeze(1).to(torch.complex128)
    out = sample_phase(Oracle(x0, d), mag, sampler=sampler, steps=8, eta=eta, project=project)
    assert out.dtype == torch.complex64 and out.shape == mag.shape
    assert torch.angle(out * torch.exp(-1j * phi)).abs().max().item() < 1e-5
    torch.testing.assert_close(out.abs(), mag, rtol=1e-6, atol=1e-7)


def _tiny_model(timesteps=30):
    torch.manual_seed(0)
    task = PhaseGenTask(TINY, DiffusionSettings(timesteps=timesteps))
    model = task.build_model().eval()
    model.diffusion = task.diffusion
    return model


def test_sample_phase_keeps_the_magnitude_and_is_seeded_per_sample():
    model = _tiny_model()
    mag = torch.rand(5, 16, 16)
    a = sample_phase(model, mag, steps=4, seed=1, batch_size=2)
    torch.testing.assert_close(a.abs(), mag, rtol=1e-6, atol=1e-7)
    b = sample_phase(model, mag.unsqueeze(1), steps=4, seed=1, batch_size=5)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    # Sample j of a call starting at `start` is sample start + j of the stream.
    torch.testing.assert_close(
        sample_phase(model, mag[3:], steps=4, seed=1, start=3), a[3:], rtol=1e-3, atol=1e-3
    )
    assert not torch.allclose(sample_phase(model, mag, steps=4, seed=2), a)
    stochastic = sample_phase(model, mag, sampler="ddpm", seed=1)
    torch.testing.assert_close(stochastic.abs(), mag, rtol=1e-6, atol=1e-7)
    for bad in (torch.full((1, 16, 16), float("nan")), -torch.ones(1, 16, 16)):
        with pytest.raises(ValueError, match="finite and non-negative"):
            sample_phase(model, bad, steps=2)
    with pytest.raises(ValueError, match="N x H x W"):
        sample_phase(model, torch.ones(16, 16), steps=2)


def test_bf16_sampling_runs_the_network_in_bf16():
    model = _tiny_model()
    seen = []
    hook = model.out.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        out = sample_phase(model, torch.rand(2, 16, 16), steps=3, amp="bf16")
    finally:
        hook.remove()
    assert set(seen) == {torch.bfloat16} and out.dtype == torch.complex64


def test_task_loss_is_finite_and_trains_every_parameter():
    torch.manual_seed(0)
    for loss in ("l1", "l2"):
        task = PhaseGenTask(TINY, DiffusionSettings(timesteps=20, loss=loss, noise="phase"))
        model = task.build_model()
        value, _ = task.loss(model, {"x": torch.randn(2, 2, 16, 16)}, 0)
        assert value.dtype == torch.float32 and value.ndim == 0 and torch.isfinite(value)
        value.backward()
        assert all(p.grad is not None for p in model.parameters())
    assert task.model_config()["kind"] == "phasegen_unet"
    assert task.model_config()["diffusion"]["loss"] == "l2"


def _blobs(n, size, rng):
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


class _Patches(Dataset):
    def __init__(self, x):
        self.x = torch.from_numpy(x)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]}


def _coherence(generated, real):
    """Magnitude-weighted agreement of two phases (1: equal, ~0: unrelated)."""
    w = real.abs() ** 2
    return ((w * torch.exp(1j * (generated.angle() - real.angle()))).sum((1, 2)).abs() / w.sum((1, 2))).mean()


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
        task, _Patches(_blobs(128, 32, np.random.default_rng(0))), settings.resolved(0, "cpu"), tmp_path
    )
    model = result.ema_model
    model.diffusion = diffusion
    test = to_complex(torch.from_numpy(_blobs(16, 32, np.random.default_rng(1))))[:, 0]
    generated = sample_phase(model, test.abs(), steps=10, seed=0)
    learned = _coherence(generated, test).item()
    unrelated = _coherence(torch.polar(test.abs(), torch.rand(test.shape) * 2 * math.pi), test).item()
    # Measured 0.82 (random phases: 0.06).
    assert learned > 0.5 and learned > 5 * unrelated, (learned, unrelated)


def _patch_store(path, n=6, rng=None):
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


def test_train_export_load_and_write_a_phasegen_store(tmp_path):
    store = _patch_store(tmp_path / "patches")
    cfg = MagphaseConfig()
    pg = cfg.phasegen.model_copy(
        update=dict(
            network=PhaseGenNetwork(**TINY),
            patch_store=str(store),
            diffusion=DiffusionSettings(timesteps=20),
            train=TrainSettings(steps=3, batch_size=2, checkpoint_every=3, log_every=1),
        )
    )
    cfg = cfg.model_copy(update=dict(phasegen=pg, device="cpu"))
    result = train_phasegen(cfg, tmp_path / "run")
    assert result.step == 3
    assert json.loads((tmp_path / "run" / "phasegen" / "done.json").read_text())["step"] == 3
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
    new = to_complex(torch.from_numpy(syn.read("patches", slice(None))))
    old = to_complex(torch.from_numpy(src.read("patches", idx)))
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
        args = ["sample-phasegen", "--source", str(store), "--out", str(tmp_path / out_name), *extra]
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
    res = CliRunner().invoke(app, ["phasegen-eval", "--synthetic", str(out), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "eval" / "phasegen_phase.csv").is_file() and "agreement" in res.output
    with pytest.raises(DataError, match="source_patch_id"):
        evaluate_phasegen(store, store)
    png = tmp_path / "fig.png"
    args = ["phasegen-figure", "--source", str(store), "--out", str(png), "--run", str(tmp_path / "run")]
    res = CliRunner().invoke(app, [*args, "--k", "3", "--draws", "1", "--steps", "2", "--split", "train"])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000


def test_phase_agreement_and_baselines():
    rng = np.random.default_rng(0)
    m = rng.uniform(0.2, 1.0, size=(4, 16, 16))
    phi = rng.uniform(-np.pi, np.pi, size=(4, 16, 16))
    real = np.stack([m * np.cos(phi), m * np.sin(phi)], axis=1)
    shifted = np.stack([m * np.cos(phi + 1.0), m * np.sin(phi + 1.0)], axis=1)
    np.testing.assert_allclose(phase_agreement(shifted, real), 1.0, rtol=1e-9)
    assert phase_agreement(random_phase(real, seed=1), real).mean() < 0.15
    flat = constant_phase(real)
    np.testing.assert_allclose(np.hypot(flat[:, 0], flat[:, 1]), m)
    assert phase_agreement(flat, real).mean() < 0.15  # the real phase here is itself random


def test_phase_smoothness():
    rng = np.random.default_rng(0)
    mag = rng.uniform(0.5, 1.0, size=(3, 32, 32))
    flat = np.stack([mag * np.cos(0.7), mag * np.sin(0.7)], axis=1)
    assert phase_smoothness(flat) == pytest.approx(1.0)
    ramp_phase = np.linspace(0, 1.0, 32)[None, None, :]
    ramp = np.stack([mag * np.cos(ramp_phase), mag * np.sin(ramp_phase)], axis=1)
    assert 0.9 < phase_smoothness(ramp) < 1.0
    noise = rng.uniform(-np.pi, np.pi, size=(3, 32, 32))
    random = np.stack([mag * np.cos(noise), mag * np.sin(noise)], axis=1)
    assert phase_smoothness(random) < 0.1
    # Speckle confined to the 2-pixel edge band: the border statistic sees it, the whole-patch one barely.
    edge = np.ones((32, 32), dtype=bool)
    edge[2:-2, 2:-2] = False
    speckled = np.where(edge, random, flat)
    assert patch_phase_smoothness(speckled, border=2).max() < 0.15
    assert patch_phase_smoothness(speckled).min() > 0.6
    assert patch_phase_smoothness(flat, border=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="border"):
        patch_phase_smoothness(flat, border=16)


def test_config_overrides_keep_the_phasegen_training_defaults():
    from magphase.config import load_config

    cfg = load_config(None, ["phasegen.train.log_every=10"])
    assert cfg.phasegen.train.log_every == 10
    assert cfg.phasegen.train.steps == 2000 and cfg.phasegen.train.batch_size == 16
    assert cfg.phasegen.resolved_network().base_channels == 8
    with pytest.raises(ConfigError):
        load_config(None, ["phasegen.network.time_features=7"])


def test_training_target_global_phase_modes():
    x = torch.from_numpy(_blobs(3, 16, np.random.default_rng(2)))
    x = torch.stack(
        [x[:, 0] * 0.6 - x[:, 1] * 0.8, x[:, 0] * 0.8 + x[:, 1] * 0.6], dim=1
    )  # global phase != 0
    keep = training_target(x, "keep")
    torch.testing.assert_close(keep, to_complex(x) / magnitude_scale(to_complex(x).abs()))
    assert keep.abs().pow(2).mean(dim=(-2, -1)).sqrt().flatten().tolist() == pytest.approx(
        [1, 1, 1], rel=1e-5
    )
    canon = training_target(x, "canonical")
    torch.testing.assert_close(canon.abs(), keep.abs())
    assert torch.angle(canon.sum(dim=(-2, -1))).abs().max() < 1e-5
    # Canonical = the kept patch times one constant phase factor per patch.
    ratio = canon * keep.conj()
    assert torch.angle(ratio * ratio[..., :1, :1].conj())[keep.abs() > 1e-3].abs().max() < 1e-4
    torch.testing.assert_close(training_target(x, "random").abs(), keep.abs())
    with pytest.raises(ConfigError):
        training_target(x, "zero")


def test_canonical_model_samples_get_a_seeded_uniform_global_phase():
    model = _tiny_model()
    mag = torch.rand(4, 16, 16) + 0.1
    model.global_phase = "keep"
    plain = sample_phase(model, mag, steps=3, seed=4)
    model.global_phase = "canonical"
    rotated = sample_phase(model, mag, steps=3, seed=4)
    torch.testing.assert_close(rotated.abs(), mag, rtol=1e-6, atol=1e-7)
    ratio = rotated * plain.conj()
    angles = torch.angle(ratio[:, 0, 0])
    # One angle per sample (the same at every pixel), seeded: different samples, different angles.
    torch.testing.assert_close(
        torch.angle(ratio * torch.exp(-1j * angles)[:, None, None]), torch.zeros(4, 16, 16), atol=1e-4, rtol=0
    )
    assert len({round(a, 3) for a in angles.tolist()}) == 4
    torch.testing.assert_close(
        sample_phase(model, mag[2:], steps=3, seed=4, start=2), rotated[2:], rtol=1e-3, atol=1e-3
    )
