"""Two-channel complex helpers: global phase and rotation."""

import numpy as np
import torch

from magphase.mri.complex import channels_to_complex, complex_to_channels, global_phase, rotate_phase


def _patches(rng, n=4):
    z = rng.standard_normal((n, 16, 16)) + 1j * rng.standard_normal((n, 16, 16)) + 2.0
    return complex_to_channels(z * np.exp(1j * rng.uniform(-np.pi, np.pi, (n, 1, 1))))


def test_rotate_phase_is_multiplication_by_a_unit_phasor(rng):
    x = _patches(rng)
    a = rng.uniform(-np.pi, np.pi, len(x))
    want = channels_to_complex(x) * np.exp(1j * a)[:, None, None]
    got = rotate_phase(x, a)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(channels_to_complex(got), want, atol=1e-5)
    t = rotate_phase(torch.from_numpy(x), torch.from_numpy(a))
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), got, atol=1e-5)
    np.testing.assert_allclose(rotate_phase(x, 0.5)[1], rotate_phase(x[1], 0.5), atol=1e-6)


def test_global_phase_removes_and_restores(rng):
    x = _patches(rng)
    phi = global_phase(x)
    np.testing.assert_allclose(phi, np.angle(channels_to_complex(x).sum(axis=(-2, -1))), atol=1e-6)
    np.testing.assert_allclose(global_phase(torch.from_numpy(x)).numpy(), phi, atol=1e-6)
    canon = rotate_phase(x, -phi)
    np.testing.assert_allclose(global_phase(canon), 0.0, atol=1e-5)
    np.testing.assert_allclose(rotate_phase(canon, phi), x, atol=1e-5)
    # Adding a constant angle shifts the global phase by it (mod 2 pi); magnitudes never change.
    shifted = global_phase(rotate_phase(x, 1.0))
    np.testing.assert_allclose(np.angle(np.exp(1j * (shifted - phi - 1.0))), 0.0, atol=1e-5)
    assert global_phase(np.zeros((2, 4, 4), np.float32)) == 0.0
