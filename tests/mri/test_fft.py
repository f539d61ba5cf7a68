import numpy as np
import pytest
import torch

from magphase.mri.complex import channels_to_complex, complex_to_channels, magnitude_phase
from magphase.mri.fft import fft1c, fft2c, ifft1c, ifft2c


def _ref_ifft2c(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


@pytest.mark.parametrize("shape", [(8, 8), (3, 17, 12), (2, 4, 640, 320), (5, 213, 213)])
def test_ifft2c_matches_numpy_definition(rng, shape):
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    np.testing.assert_allclose(ifft2c(k), _ref_ifft2c(k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8), (3, 17, 12), (4, 64, 33)])
def test_torch_numpy_parity_and_round_trip(rng, shape):
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(fft2c(xt).numpy(), fft2c(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ifft2c(xt).numpy(), ifft2c(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ifft2c(fft2c(x)), x, atol=1e-5)
    np.testing.assert_allclose(ifft2c(fft2c(xt)).numpy(), x, atol=1e-5)


@pytest.mark.parametrize(("shape", "axis"), [((9,), -1), ((3, 16, 7), -2), ((2, 5, 12), 0)])
def test_fft1c_matches_numpy_definition_and_2d_is_two_1d(rng, shape, axis):
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ref = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x, axes=axis), axis=axis, norm="ortho"), axes=axis)
    np.testing.assert_allclose(fft1c(x, axis), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ifft1c(fft1c(x, axis), axis), x, atol=1e-5)
    np.testing.assert_allclose(fft1c(torch.from_numpy(x), axis).numpy(), ref, rtol=1e-4, atol=1e-4)
    if len(shape) >= 2:
        np.testing.assert_allclose(fft1c(fft1c(x, -1), -2), fft2c(x), rtol=1e-4, atol=1e-5)


def test_orthonormal_parseval_and_centre(rng):
    x = (rng.standard_normal((32, 30)) + 1j * rng.standard_normal((32, 30))).astype(np.complex64)
    k = fft2c(x)
    assert np.isclose(np.sum(np.abs(k) ** 2), np.sum(np.abs(x) ** 2), rtol=1e-4)
    # A constant image puts all its energy at the centre sample (N//2, M//2).
    const = np.ones((32, 30), np.complex64)
    kc = fft2c(const)
    assert np.unravel_index(np.argmax(np.abs(kc)), kc.shape) == (16, 15)


def test_channels_round_trip_numpy_and_torch(rng):
    z = (rng.standard_normal((4, 6, 5)) + 1j * rng.standard_normal((4, 6, 5))).astype(np.complex64)
    ch = complex_to_channels(z)
    assert ch.shape == (4, 2, 6, 5) and ch.dtype == np.float32
    np.testing.assert_array_equal(ch[:, 0], z.real)
    np.testing.assert_array_equal(ch[:, 1], z.imag)
    np.testing.assert_array_equal(channels_to_complex(ch), z)
    zt = torch.from_numpy(z)
    cht = complex_to_channels(zt)
    assert cht.dtype == torch.float32 and tuple(cht.shape) == (4, 2, 6, 5)
    assert torch.equal(channels_to_complex(cht), zt)
    mag, ph = magnitude_phase(ch)
    np.testing.assert_allclose(mag, np.abs(z), rtol=1e-6)
    np.testing.assert_allclose(ph, np.angle(z), atol=1e-6)


def test_conversion_rejects_wrong_input():
    with pytest.raises(TypeError):
        complex_to_channels(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        channels_to_complex(np.zeros((3, 4, 4), np.float32))
