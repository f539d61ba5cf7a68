"""Patch augmentation: complex-aware, batched, seeded (paper 2.4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magphase.config.evaluation import AugmentConfig
from magphase.data.augment import (
    AugmentParams,
    apply_augment,
    augment_batch,
    draw_augment_params,
    zoom_center_crop,
)
from magphase.mri.complex import channels_to_complex, magnitude_phase


def _batch(b: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, size, size, generator=g)


def _params(b: int, **kw) -> AugmentParams:
    base = dict(
        hflip=torch.zeros(b, dtype=torch.bool),
        vflip=torch.zeros(b, dtype=torch.bool),
        rot90=torch.zeros(b, dtype=torch.int64),
        zoom=torch.ones(b),
        intensity=torch.ones(b),
        phase=torch.zeros(b),
    )
    base.update(kw)
    return AugmentParams(**base)


def test_flips_and_rotations_keep_each_items_complex_values():
    x = _batch()
    cfg = AugmentConfig(zoom=(1.0, 1.0), intensity=(1.0, 1.0))
    y = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    zx, zy = channels_to_complex(x), channels_to_complex(y)
    for b in range(x.shape[0]):
        # the multiset of complex values of an item is unchanged (a pixel permutation, same in both channels)
        key = lambda z: np.sort_complex(z.numpy().ravel())  # noqa: E731
        np.testing.assert_array_equal(key(zx[b]), key(zy[b]))
    assert not torch.equal(x, y)  # something did happen with this seed


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_matches_torch_rot90_and_flips_match_flip(k):
    x = _batch(b=3)
    y = apply_augment(x, _params(3, rot90=torch.full((3,), k)))
    torch.testing.assert_close(y, torch.rot90(x, k, dims=(-2, -1)))
    y = apply_augment(x, _params(3, hflip=torch.tensor([True, False, True])))
    torch.testing.assert_close(y[0], x[0].flip(-1))
    torch.testing.assert_close(y[1], x[1])
    y = apply_augment(x, _params(3, vflip=torch.ones(3, dtype=torch.bool)))
    torch.testing.assert_close(y, x.flip(-2))


def test_intensity_scaling_keeps_phase_and_scales_magnitude():
    x = _batch(b=4)
    factors = torch.tensor([0.8, 1.0, 1.15, 1.2])
    y = apply_augment(x, _params(4, intensity=factors))
    mag_x, ph_x = magnitude_phase(x, axis=1)
    mag_y, ph_y = magnitude_phase(y, axis=1)
    torch.testing.assert_close(ph_y, ph_x, atol=1e-5, rtol=0)
    torch.testing.assert_close(mag_y, mag_x * factors.view(-1, 1, 1), atol=1e-6, rtol=1e-5)


def test_zoom_center_crop_shape_identity_and_centre():
    x = _batch(b=3, size=16)
    # factor 1: untouched, bit for bit
    assert torch.equal(zoom_center_crop(x, torch.ones(3)), x)
    y = zoom_center_crop(x, torch.tensor([1.0, 1.2, 1.1]))
    assert y.shape == x.shape
    assert torch.equal(y[0], x[0])
    # a linear ramp through the centre, f(p) = a . (p - c), becomes f / zoom: an enlargement about the
    # centre (bilinear interpolation is exact on affine functions)
    size = 16
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    ramp = (xx + 2 * yy).expand(1, 2, size, size).float()
    z = zoom_center_crop(ramp, torch.tensor([1.25]))
    torch.testing.assert_close(z, ramp / 1.25, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        zoom_center_crop(x, torch.tensor([0.9, 1.0, 1.0]))


def test_same_seed_same_output_and_different_seed_differs():
    x = _batch(b=8, size=16)
    cfg = AugmentConfig()
    a = augment_batch(x, cfg, torch.Generator().manual_seed(11))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(11))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_params_respect_config_ranges_and_switches():
    cfg = AugmentConfig(flips=False, rot90=False, zoom=(1.05, 1.1), intensity=(0.5, 0.6))
    p = draw_augment_params(200, cfg, torch.Generator().manual_seed(0))
    assert not p.hflip.any() and not p.vflip.any() and not p.rot90.any()
    assert p.zoom.min() >= 1.05 and p.zoom.max() <= 1.1
    assert p.intensity.min() >= 0.5 and p.intensity.max() <= 0.6
    full = draw_augment_params(400, AugmentConfig(), torch.Generator().manual_seed(0))
    assert set(full.rot90.tolist()) == {0, 1, 2, 3}
    assert 0.35 < full.hflip.float().mean() < 0.65


def test_quarter_turn_of_non_square_items_is_refused():
    x = torch.randn(2, 2, 8, 12)
    with pytest.raises(ValueError, match="square"):
        apply_augment(x, _params(2, rot90=torch.tensor([1, 0])))
    assert apply_augment(x, _params(2, rot90=torch.tensor([2, 0]))).shape == x.shape


def test_config_rejects_shrinking_zoom_and_non_positive_intensity():
    with pytest.raises(ValueError):
        AugmentConfig(zoom=(0.9, 1.2))
    with pytest.raises(ValueError):
        AugmentConfig(intensity=(0.0, 1.0))


def test_global_phase_offset_rotates_complex_values():
    x = _batch(b=4)
    theta = torch.tensor([0.0, 0.5, -2.0, 3.0])
    y = apply_augment(x, _params(4, phase=theta))
    zx, zy = torch.complex(x[:, 0], x[:, 1]), torch.complex(y[:, 0], y[:, 1])
    torch.testing.assert_close(
        zy, zx * torch.exp(1j * theta).view(-1, 1, 1).to(zx.dtype), atol=1e-5, rtol=1e-5
    )
    # Off by default: the drawn offset is 0; on: offsets cover [-pi, pi).
    off = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(1))
    on = augment_batch(x, AugmentConfig(global_phase=True), torch.Generator().manual_seed(1))
    # Same stream: identical up to the per-item phase offset (magnitudes agree exactly).
    torch.testing.assert_close(
        torch.hypot(on[:, 0], on[:, 1]), torch.hypot(off[:, 0], off[:, 1]), atol=1e-5, rtol=1e-5
    )
    assert not torch.allclose(on, off)
    phases = draw_augment_params(
        4000, AugmentConfig(global_phase=True), torch.Generator().manual_seed(0)
    ).phase
    assert phases.min() >= -torch.pi and phases.max() < torch.pi and abs(float(phases.mean())) < 0.1
    with pytest.raises(ValueError, match="real, imag"):
        apply_augment(torch.randn(2, 3, 8, 8), _params(2, phase=torch.ones(2)))
