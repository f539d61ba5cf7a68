"""PhaseGen's complex-valued U-Net: layers checked against torch's complex maths and analytic signals."""

import math

import pytest
import torch

from magphase.models.complex_unet import (
    ComplexActivation,
    ComplexConv2d,
    ComplexGroupNorm,
    ComplexMeanPool,
    ComplexUNet,
    SpectralPool,
    build_complex_unet,
    complex_unet_config,
    from_split,
    split_cat,
    to_split,
)

TINY = dict(base_channels=4, channel_mults=(1, 2), num_res_blocks=1, emb_dim=16, time_features=8, groups=2)


def _cplx(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def test_split_layout_round_trip_and_concatenation():
    a, b = _cplx(2, 3, 4, 4), _cplx(2, 5, 4, 4, seed=1)
    assert torch.equal(from_split(to_split(a)), a)
    torch.testing.assert_close(from_split(split_cat(to_split(a), to_split(b))), torch.cat([a, b], dim=1))


@pytest.mark.parametrize("kernel,bias", [(3, True), (1, False)])
def test_complex_conv_is_complex_multiplication(kernel, bias):
    torch.manual_seed(0)
    conv = ComplexConv2d(3, 5, kernel_size=kernel, bias=bias)
    if bias:
        with torch.no_grad():
            conv.bias_re.normal_()
            conv.bias_im.normal_()
    z = _cplx(2, 3, 9, 9)
    weight = torch.complex(conv.weight_re, conv.weight_im)
    b = torch.complex(conv.bias_re, conv.bias_im) if bias else None
    ref = torch.nn.functional.conv2d(z, weight, b, padding=kernel // 2)
    torch.testing.assert_close(from_split(conv(to_split(z))), ref, rtol=1e-5, atol=1e-5)
    # Complex linearity: a complex scalar factors out of a bias-free convolution.
    if not bias:
        c = complex(0.3, -1.2)
        torch.testing.assert_close(from_split(conv(to_split(c * z))), c * ref, rtol=1e-4, atol=1e-4)


def test_complex_conv_initial_weight_variance():
    conv = ComplexConv2d(64, 64)
    w = torch.complex(conv.weight_re, conv.weight_im)
    assert abs(w.abs().pow(2).mean().item() * 64 * 9 - 1.0) < 0.05


def test_spectral_pool_resamples_band_limited_images_exactly():
    n = 16
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    # Frequencies below n/4 survive the crop: pooling equals taking every other sample.
    sig = (
        torch.exp(2j * math.pi * (2 * xx - 3 * yy) / n)
        + 0.5 * torch.exp(2j * math.pi * (1 * xx + 2 * yy) / n)
        + 0.2
    ).to(torch.complex64)[None, None]
    pooled = from_split(SpectralPool()(to_split(sig)))
    assert pooled.shape == (1, 1, 8, 8)
    torch.testing.assert_close(pooled[0, 0], sig[0, 0, ::2, ::2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        SpectralPool()(to_split(_cplx(1, 1, 6, 6)))


def test_mean_pool_is_the_complex_block_mean_and_has_no_wrap_around():
    z = _cplx(2, 3, 8, 6)
    pooled = from_split(ComplexMeanPool()(to_split(z)))
    expected = z.reshape(2, 3, 4, 2, 3, 2).mean(dim=(3, 5))
    torch.testing.assert_close(pooled, expected)
    # A ramp that differs between opposite borders: spectral pooling rings at the borders (it sees a
    # periodic image with a jump), the block mean reproduces the ramp.
    ramp = torch.linspace(0, 1, 16)[:, None].expand(16, 16).to(torch.complex64)[None, None]
    spectral = from_split(SpectralPool()(to_split(ramp)))[0, 0, :, 0].real
    mean = from_split(ComplexMeanPool()(to_split(ramp)))[0, 0, :, 0].real
    truth = ramp[0, 0, :, 0].real.reshape(8, 2).mean(1)
    assert (spectral - truth).abs().max() > 0.05
    torch.testing.assert_close(mean, truth)
    with pytest.raises(ValueError, match="even"):
        ComplexMeanPool()(to_split(_cplx(1, 1, 5, 6)))


def test_activations():
    z = _cplx(2, 3, 5, 5)
    crelu = from_split(ComplexActivation("crelu", 3)(to_split(z)))
    torch.testing.assert_close(crelu, torch.complex(z.real.relu(), z.imag.relu()))
    mod = ComplexActivation("modrelu", 3)
    with torch.no_grad():
        mod.bias.fill_(-0.5)
    out = from_split(mod(to_split(z)))
    kept = z.abs() > 0.5
    # modReLU keeps the phase where it passes and shrinks the modulus by the threshold.
    torch.testing.assert_close(torch.angle(out[kept]), torch.angle(z[kept]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[kept].abs(), z[kept].abs() - 0.5, rtol=1e-4, atol=1e-4)
    assert torch.all(out[~kept] == 0)
    with pytest.raises(ValueError):
        ComplexActivation("tanh", 3)


def test_group_norm_normalises_real_and_imaginary_parts_separately():
    z = torch.complex(3 + 2 * torch.randn(2, 4, 6, 6), -1 + 0.1 * torch.randn(2, 4, 6, 6))
    out = from_split(ComplexGroupNorm(4, 2)(to_split(z)))
    for part in (out.real, out.imag):
        groups = part.reshape(2, 2, -1)
        torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 2), atol=1e-5, rtol=0)
        torch.testing.assert_close(groups.std(-1, unbiased=False), torch.ones(2, 2), atol=1e-3, rtol=0)


def test_unet_shapes_conditioning_and_input_checks():
    torch.manual_seed(0)
    model = ComplexUNet(**TINY, timesteps=100)
    x = _cplx(3, 1, 32, 32)
    mag = x.abs()
    t = torch.tensor([0, 50, 99])
    out = model(x, mag, t)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.complex64 and torch.isfinite(out.real).all()
    # The magnitude condition and the timestep both change the prediction.
    assert not torch.allclose(model(x, 2 * mag, t), out)
    assert not torch.allclose(model(x, mag, torch.tensor([5, 5, 5])), out)
    # Each sample is processed independently (group norm, no batch statistics).
    torch.testing.assert_close(model(x[1:2], mag[1:2], t[1:2]), out[1:2], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError):
        model(x.real, mag, t)
    with pytest.raises(ValueError, match="divisible"):
        model(_cplx(1, 1, 30, 30), _cplx(1, 1, 30, 30).abs(), t[:1])


def test_unet_with_mean_pooling():
    torch.manual_seed(0)
    model = ComplexUNet(**TINY, timesteps=100, pooling="mean")
    x = _cplx(2, 1, 32, 32)
    t = torch.tensor([3, 70])
    out = model(x, x.abs(), t)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out.real).all()
    torch.testing.assert_close(model(x[1:], x[1:].abs(), t[1:]), out[1:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        ComplexUNet(**TINY, pooling="max")


def test_model_config_round_trip():
    cfg = complex_unet_config(**TINY, timesteps=50)
    a = build_complex_unet(cfg)
    b = build_complex_unet(cfg)
    b.load_state_dict(a.state_dict())
    assert a.timesteps == 50
    assert isinstance(a.pool, SpectralPool)  # weights exported before `pooling` existed
    assert isinstance(build_complex_unet(complex_unet_config(**TINY, pooling="mean")).pool, ComplexMeanPool)
    with pytest.raises(ValueError):
        build_complex_unet({"kind": "flow_unet"})
