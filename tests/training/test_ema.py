"""EMA maths on known parameters, buffers, and a weights_only state round trip."""

from __future__ import annotations

import io

import torch
from torch import nn

from magphase.training.ema import EMA


def _const_model(value: float) -> nn.Module:
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(value)
        m.bias.fill_(value)
    return m


def test_decay_half_on_known_values() -> None:
    model = _const_model(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    ema.update(model, step=1)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.5))
    ema.update(model, step=2)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.75))
    with torch.no_grad():
        model.weight.fill_(-1.0)
    ema.update(model, step=3)  # 0.5 * 0.75 + 0.5 * (-1)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), -0.125))
    assert torch.allclose(ema.module.bias, torch.full((1,), 0.875))
    assert ema.num_updates == 3
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_copies_until_start_step() -> None:
    model = _const_model(0.0)
    ema = EMA(model, decay=0.5, start_step=2)
    for step, value in ((1, 4.0), (2, 8.0)):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step)
        assert torch.equal(ema.module.weight, model.weight.detach())
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema.update(model, 3)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 4.0))


def test_buffers_are_copied_not_averaged() -> None:
    model = nn.BatchNorm1d(3)
    ema = EMA(model, decay=0.9)
    model.train()
    model(torch.randn(16, 3) + 5.0)
    ema.update(model, 1)
    assert torch.equal(ema.module.running_mean, model.running_mean)
    assert torch.equal(ema.module.num_batches_tracked, model.num_batches_tracked)


def test_state_dict_round_trip_weights_only() -> None:
    model = _const_model(1.0)
    ema = EMA(model, decay=0.25, start_step=3)
    ema.update(model, 1)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = EMA(_const_model(0.0), decay=0.9)
    other.load_state_dict(state)
    assert (other.decay, other.start_step, other.num_updates) == (0.25, 3, 1)
    assert torch.equal(other.module.weight, ema.module.weight)
