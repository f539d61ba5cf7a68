"""Phase diffusion maths: schedules, noise kinds, samplers (checked with an oracle network), global phase."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from magphase.config.phasegen import DiffusionSettings
from magphase.errors import ConfigError
from magphase.generative.phase_diffusion import (
    alphas_cumprod,
    beta_schedule,
    draw_noise,
    magnitude_scale,
    sample_phase,
    sampling_timesteps,
    training_target,
)
from magphase.mri.complex import channels_to_complex
from magphase.stages.phasegen import PhaseGenTask
from phasegen_fixtures import TINY_COMPLEX_UNET, blobs


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
    task = PhaseGenTask(TINY_COMPLEX_UNET, DiffusionSettings(timesteps=timesteps))
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


def test_training_target_global_phase_modes():
    x = torch.from_numpy(blobs(3, 16, np.random.default_rng(2)))
    x = torch.stack(
        [x[:, 0] * 0.6 - x[:, 1] * 0.8, x[:, 0] * 0.8 + x[:, 1] * 0.6], dim=1
    )  # global phase != 0
    keep = training_target(x, "keep")
    z = channels_to_complex(x).unsqueeze(1)
    torch.testing.assert_close(keep, z / magnitude_scale(z.abs()))
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
