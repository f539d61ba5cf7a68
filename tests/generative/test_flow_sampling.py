"""Sampling latents and writing synthetic stores (tiny stand-in networks)."""

import pytest
import torch

from magphase.errors import ConfigError
from magphase.generative.sampling import SampleGroup, initial_noise, network_evaluations, sample_latents
from magphase.stages.sample import shard_range


def _sample(model, stage=1, label=None, n=5, **kw):
    args = dict(stage=stage, group=SampleGroup("AXT1", label, n), guidance=2.0, steps=3, seed=7)
    args.update(kw)
    return sample_latents(model, **args)


def test_shape_dtype_and_determinism(make_unet):
    model = make_unet()
    a = _sample(model)
    assert a.shape == (5, 2, 8, 8) and a.dtype == torch.float32 and torch.isfinite(a).all()
    torch.testing.assert_close(_sample(model), a, rtol=0, atol=0)
    assert not torch.allclose(_sample(model, seed=8), a)
    # Independent of batching and of the slice asked for.
    torch.testing.assert_close(_sample(model, batch_size=2), a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_sample(model, start=2, stop=5), a[2:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_sample(model, solver="euler"), a)


def test_latent_scale_is_undone(make_unet):
    model = make_unet()
    a = _sample(model)
    model.latent_scale = 4.0
    torch.testing.assert_close(_sample(model), a / 4.0)


def test_bf16_autocast_runs_the_network_in_bf16_and_keeps_the_state_float32(make_unet):
    model = make_unet()
    ref = _sample(model, n=4, steps=4)
    seen = []
    hook = model.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        low = _sample(model, n=4, steps=4, amp="bf16")
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert low.dtype == torch.float32 and not torch.equal(low, ref)
    # bf16 keeps ~8 bits of mantissa: the integrated latents agree to a few parts in a thousand.
    assert ((low - ref).norm() / ref.norm()).item() < 0.02
    # "auto" is full precision off CUDA; an unknown value is a config error.
    torch.testing.assert_close(_sample(model, n=4, steps=4, amp="auto"), ref, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="amp"):
        _sample(model, amp="fp8")


def test_noise_per_sample_and_per_group():
    g = SampleGroup("AXT1", "normal", 6)
    full = initial_noise(g, 2, seed=1, start=0, stop=6, shape=(2, 4, 4))
    torch.testing.assert_close(initial_noise(g, 2, seed=1, start=3, stop=5, shape=(2, 4, 4)), full[3:5])
    other = initial_noise(SampleGroup("AXT1", "abnormal", 6), 2, seed=1, start=0, stop=6, shape=(2, 4, 4))
    assert not torch.allclose(full, other)
    assert abs(full.std().item() - 1) < 0.2


def test_explicit_noise_and_stage_checks(make_unet):
    stage2 = make_unet(class_conditioning=True)
    with torch.no_grad():
        stage2.condition.class_embedding.weight.normal_()
    noise = torch.randn(3, 2, 8, 8)
    a = _sample(stage2, stage=2, label="normal", n=3, noise=noise)
    b = _sample(stage2, stage=2, label="abnormal", n=3, noise=noise)
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError):
        _sample(make_unet(), stage=2, label="normal")  # stage-1 model
    with pytest.raises(ConfigError):
        _sample(stage2, stage=2, label="unlabeled")
    with pytest.raises(ConfigError):
        _sample(make_unet(), stage=1, label="normal")
    with pytest.raises(ConfigError):
        _sample(make_unet(), group=SampleGroup("T2STAR", None, 2))


def test_evaluation_count_and_shards():
    assert network_evaluations(10) == 19 and network_evaluations(10, "euler") == 10
    pieces = [shard_range(10, r, 3) for r in range(3)]
    assert pieces == [(0, 3), (3, 6), (6, 10)]


def test_stage2_refuses_classes_of_sequences_it_saw_as_unknown(make_unet):
    model = make_unet(class_conditioning=True)
    model.unknown_sequences = ("AXT1PRE", "AXT2")
    with pytest.raises(ConfigError, match="unknown"):
        _sample(model, stage=2, label="abnormal", group=SampleGroup("AXT2", "abnormal", 2))
    assert _sample(model, stage=2, group=SampleGroup("AXT2", "unknown", 2), steps=2).shape[0] == 2
    assert _sample(model, stage=2, group=SampleGroup("AXT1", "abnormal", 2), steps=2).shape[0] == 2
