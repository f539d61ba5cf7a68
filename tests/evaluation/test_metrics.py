"""Reconstruction metrics (Table 3) against references: analytic cases and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from magphase.evaluation.metrics import (
    gaussian_window,
    patch_phase_coherence,
    psnr,
    reconstruction_metrics,
    ssim,
    summarize,
)
from magphase.mri.complex import complex_to_channels


def _smooth_complex(rng: np.random.Generator, n: int = 3, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    out = []
    for _ in range(n):
        mag = np.exp(-((yy - rng.uniform(-0.2, 0.2)) ** 2 + xx**2) / 0.05)
        phase = rng.uniform(-3, 3) * xx + rng.uniform(-3, 3) * yy
        out.append(mag * np.exp(1j * phase))
    return np.stack(out).astype(np.complex64)


def test_phase_coherence_is_one_for_global_phase_and_scale(rng):
    z = _smooth_complex(rng)
    shifted = 0.7 * z * np.exp(1j * 2.1)  # one global phase offset and a positive scale per patch
    gamma = patch_phase_coherence(complex_to_channels(shifted)[None][0], complex_to_channels(z))
    np.testing.assert_allclose(gamma, 1.0, atol=1e-6)


def test_phase_coherence_below_one_for_phase_noise_and_symmetric(rng):
    z = _smooth_complex(rng)
    noisy = z * np.exp(1j * rng.normal(0, 0.5, z.shape))
    a, b = complex_to_channels(noisy), complex_to_channels(z)
    gamma = patch_phase_coherence(a, b)
    assert np.all(gamma < 0.95) and np.all(gamma > 0.5)
    # E[exp(i n)] = exp(-sigma^2 / 2) for Gaussian phase noise: the magnitude-weighted mean approaches it.
    np.testing.assert_allclose(gamma, np.exp(-(0.5**2) / 2), atol=0.03)
    np.testing.assert_allclose(gamma, patch_phase_coherence(b, a), rtol=1e-12)


def test_phase_coherence_matches_direct_formula(rng):
    z1 = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
    z2 = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
    expected = [abs(np.sum(a * np.conj(b))) / np.sum(abs(a) * abs(b)) for a, b in zip(z1, z2, strict=True)]
    got = patch_phase_coherence(complex_to_channels(z1), complex_to_channels(z2))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("noise", [0.01, 0.1, 0.3])
def test_ssim_matches_skimage(rng, noise):
    a = rng.random((3, 40, 52))
    b = np.clip(a + noise * rng.standard_normal(a.shape), 0, 1)
    ours = ssim(a, b)
    ref = [
        structural_similarity(
            x, y, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_ssim_identity_symmetry_and_torch_input(rng):
    a = rng.random((2, 32, 32)).astype(np.float32)
    b = a * 0.8
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-12)
    np.testing.assert_allclose(ssim(a, b), ssim(b, a), rtol=1e-12)
    np.testing.assert_allclose(ssim(torch.from_numpy(a), torch.from_numpy(b)), ssim(a, b), rtol=1e-12)
    assert ssim(a[0], b[0]).shape == (1,)
    assert gaussian_window().numel() == 11
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_psnr_analytic_and_skimage(rng):
    a = rng.random((2, 20, 20))
    b = a + 0.01  # MSE = 1e-4 -> 40 dB at data range 1
    np.testing.assert_allclose(psnr(a, b), 40.0, atol=1e-9)
    c = a + 0.05 * rng.standard_normal(a.shape)
    ref = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, c, strict=True)]
    np.testing.assert_allclose(psnr(a, c), ref, rtol=1e-12)
    assert np.isinf(psnr(a, a)).all()


def test_reconstruction_metrics_use_magnitude(rng):
    z = _smooth_complex(rng, n=2, size=32)
    x = complex_to_channels(z)
    # A global phase rotation changes [real, imag] but neither magnitude nor coherence.
    rotated = complex_to_channels(z * np.exp(1j * 1.0))
    m = reconstruction_metrics(torch.from_numpy(rotated), torch.from_numpy(x))
    assert set(m) == {"phase_coherence", "ssim", "psnr"} and m["psnr"].shape == (2,)
    np.testing.assert_allclose(m["phase_coherence"], 1.0, atol=1e-6)
    np.testing.assert_allclose(m["ssim"], 1.0, atol=1e-6)
    assert np.all(m["psnr"] > 100)
    assert "ssim" not in reconstruction_metrics(rotated, x, with_ssim=False)
    with pytest.raises(ValueError, match="B x 2 x H x W"):
        reconstruction_metrics(x[:, :1], x[:, :1])


def test_summarize_ignores_non_finite():
    mean, std = summarize(np.array([1.0, 3.0, np.inf, np.nan]))
    assert (mean, std) == (2.0, 1.0)
    assert all(np.isnan(summarize(np.array([np.nan]))))
