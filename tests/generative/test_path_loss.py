import math

import pytest
import torch

from magphase.generative.loss import flow_matching_loss, per_sample_loss
from magphase.generative.path import TimeSampler, interpolate, sample_path


def test_path_endpoints_and_target():
    g = torch.Generator().manual_seed(0)
    data, noise = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([0.0, 1.0, 0.25, 0.5])
    s = sample_path(data, noise, t)
    torch.testing.assert_close(s.x_t[0], noise[0])  # t = 0: noise
    torch.testing.assert_close(s.x_t[1], data[1])  # t = 1: data
    torch.testing.assert_close(s.x_t[2], 0.75 * noise[2] + 0.25 * data[2])
    torch.testing.assert_close(s.target_velocity, data - noise)
    # The target is the time derivative of the path.
    h = 1e-3
    tt = torch.full((4,), 0.4, dtype=torch.float64)
    d = (
        interpolate(noise.double(), data.double(), tt + h) - interpolate(noise.double(), data.double(), tt)
    ) / h
    torch.testing.assert_close(d, (data - noise).double())


def test_path_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        sample_path(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError):
        sample_path(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


@pytest.mark.parametrize("dist", ["uniform", "logit_normal"])
def test_time_sampler_range_seed_and_density(dist):
    sampler = TimeSampler(dist, loc=0.3, scale=0.8)
    a = sampler(20000, generator=torch.Generator().manual_seed(1))
    b = sampler(20000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    # Histogram agrees with the stated density.
    edges = torch.linspace(0.05, 0.95, 10)
    centres = (edges[:-1] + edges[1:]) / 2
    hist = torch.histc(a, bins=9, min=0.05, max=0.95) / (a.numel() * (edges[1] - edges[0]))
    torch.testing.assert_close(hist, sampler.density(centres), atol=0.08, rtol=0.08)
    if dist == "logit_normal":
        assert abs(torch.logit(a.double()).mean().item() - 0.3) < 0.03


def test_loss_is_float32_mse():
    pred = torch.randn(3, 2, 4, 4).to(torch.bfloat16)
    target = torch.randn(3, 2, 4, 4)
    loss = flow_matching_loss(pred, target)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    torch.testing.assert_close(loss, ((pred.float() - target) ** 2).mean())
    torch.testing.assert_close(per_sample_loss(pred, target).mean(), loss)
    assert math.isclose(flow_matching_loss(target, target).item(), 0.0)
    with pytest.raises(ValueError):
        flow_matching_loss(pred, target[:2])
