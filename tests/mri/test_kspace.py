import numpy as np
import pytest
import torch

from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.kspace import center_crop_image, remove_readout_oversampling, resize_kspace


def _random_complex(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _centred_rows(x, rows):
    """Rows around the image centre row N // 2 (which lands at rows // 2)."""
    start = x.shape[-2] // 2 - rows // 2
    return x[..., start : start + rows, :]


def _fastmri_center_crop(x, shape):
    """fastMRI's transforms.center_crop, written out independently."""
    h0 = (x.shape[-2] - shape[0]) // 2
    w0 = (x.shape[-1] - shape[1]) // 2
    return x[..., h0 : h0 + shape[0], w0 : w0 + shape[1]]


@pytest.mark.parametrize("shape", [(2, 3, 40, 16), (4, 32, 9), (30, 14)])
def test_oversampling_removal_equals_image_crop(rng, shape):
    k = _random_complex(rng, shape)
    reduced = remove_readout_oversampling(k, 2)
    assert reduced.shape == (*shape[:-2], shape[-2] // 2, shape[-1]) and reduced.dtype == np.complex64
    expected = _centred_rows(ifft2c(k), shape[-2] // 2)
    if shape[-2] // 2 % 2 == 0:  # then it is also fastMRI's crop
        np.testing.assert_array_equal(expected, _fastmri_center_crop(ifft2c(k), expected.shape[-2:]))
    np.testing.assert_allclose(ifft2c(reduced), expected, atol=1e-5)


def test_oversampling_removal_torch_parity_and_factor_one(rng):
    k = _random_complex(rng, (3, 24, 10))
    out_t = remove_readout_oversampling(torch.from_numpy(k), 2)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.complex64
    np.testing.assert_allclose(out_t.numpy(), remove_readout_oversampling(k, 2), atol=1e-5)
    np.testing.assert_array_equal(remove_readout_oversampling(k, 1), k)
    with pytest.raises(ValueError):
        remove_readout_oversampling(k, 0)


@pytest.mark.parametrize("rows", [64, 62])
def test_point_object_stays_at_centre_after_oversampling_removal(rows):
    image = np.zeros((rows, 20), np.complex64)
    image[rows // 2, 10] = 1.0
    reduced = ifft2c(remove_readout_oversampling(fft2c(image), 2))
    peak = np.unravel_index(np.argmax(np.abs(reduced)), reduced.shape)
    assert peak == (rows // 4, 10)
    assert np.isclose(np.abs(reduced).max(), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "source, target",
    [
        ((16, 12), (20, 18)),
        ((15, 13), (20, 18)),
        ((16, 12), (9, 7)),
        ((15, 13), (8, 10)),
        ((10, 11), (11, 10)),
    ],
)
def test_resize_kspace_keeps_dc_at_centre(source, target):
    k = np.zeros(source, np.complex64)
    k[source[0] // 2, source[1] // 2] = 5.0  # DC only: a constant image
    out = resize_kspace(k, target)
    assert out.shape == target
    assert np.unravel_index(np.argmax(np.abs(out)), target) == (target[0] // 2, target[1] // 2)
    # A constant image stays constant (phase 0) on the new grid.
    img = ifft2c(out)
    np.testing.assert_allclose(np.angle(img), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.abs(img), np.abs(img).mean(), rtol=1e-5)


@pytest.mark.parametrize("small, big", [((15, 13), (20, 18)), ((16, 12), (21, 17)), ((320, 320), (384, 384))])
def test_zero_fill_then_crop_is_identity_and_crop_then_fill_keeps_centre(rng, small, big):
    k = _random_complex(rng, (2, *small))
    np.testing.assert_array_equal(resize_kspace(resize_kspace(k, big), small), k)
    kb = _random_complex(rng, (2, *big))
    round_trip = resize_kspace(resize_kspace(kb, small), big)
    y0, x0 = big[0] // 2 - small[0] // 2, big[1] // 2 - small[1] // 2
    window = (slice(None), slice(y0, y0 + small[0]), slice(x0, x0 + small[1]))
    np.testing.assert_array_equal(round_trip[window], kb[window])
    outside = np.ones(big, bool)
    outside[window[1:]] = False
    assert np.all(round_trip[:, outside] == 0)


def test_zero_fill_matches_np_pad_and_torch(rng):
    k = _random_complex(rng, (3, 256, 250))
    out = resize_kspace(k, (320, 320))
    expected = np.pad(k, ((0, 0), (32, 32), (35, 35)))  # DC 128 -> 160, 125 -> 160
    np.testing.assert_array_equal(out, expected)
    out_t = resize_kspace(torch.from_numpy(k), (320, 320))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_array_equal(out_t.numpy(), expected)
    # 384 -> 320 crops 32 samples from each side
    k384 = _random_complex(rng, (384, 384))
    np.testing.assert_array_equal(resize_kspace(k384, (320, 320)), k384[32:352, 32:352])


@pytest.mark.parametrize(
    "source, target", [((640, 320), (320, 320)), ((21, 17), (10, 9)), ((20, 16), (11, 9))]
)
def test_center_crop_image_matches_fastmri(rng, source, target):
    x = _random_complex(rng, (2, *source))
    np.testing.assert_array_equal(center_crop_image(x, target), _fastmri_center_crop(x, target))
    xt = torch.from_numpy(x)
    assert torch.equal(center_crop_image(xt, target), torch.from_numpy(_fastmri_center_crop(x, target)))


def test_center_crop_image_pads_when_target_is_larger(rng):
    x = rng.standard_normal((320, 272)).astype(np.float32)
    out = center_crop_image(x, (320, 320))
    assert out.shape == (320, 320) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 24:296], x)
    assert np.all(out[:, :24] == 0) and np.all(out[:, 296:] == 0)
    with pytest.raises(ValueError):
        center_crop_image(x, (0, 3))
