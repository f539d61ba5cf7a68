"""PhaseGen phase statistics: agreement with the real phase, the baselines, smoothness."""

import numpy as np
import pytest

from magphase.evaluation.phase import (
    constant_phase,
    patch_phase_smoothness,
    phase_agreement,
    phase_smoothness,
    random_phase,
)


def test_phase_agreement_and_baselines():
    rng = np.random.default_rng(0)
    m = rng.uniform(0.2, 1.0, size=(4, 16, 16))
    phi = rng.uniform(-np.pi, np.pi, size=(4, 16, 16))
    real = np.stack([m * np.cos(phi), m * np.sin(phi)], axis=1)
    shifted = np.stack([m * np.cos(phi + 1.0), m * np.sin(phi + 1.0)], axis=1)
    np.testing.assert_allclose(phase_agreement(shifted, real), 1.0, rtol=1e-9)
    assert phase_agreement(random_phase(real, seed=1), real).mean() < 0.15
    flat = constant_phase(real)
    np.testing.assert_allclose(np.hypot(flat[:, 0], flat[:, 1]), m)
    assert phase_agreement(flat, real).mean() < 0.15  # the real phase here is itself random


def test_phase_smoothness():
    rng = np.random.default_rng(0)
    mag = rng.uniform(0.5, 1.0, size=(3, 32, 32))
    flat = np.stack([mag * np.cos(0.7), mag * np.sin(0.7)], axis=1)
    assert phase_smoothness(flat) == pytest.approx(1.0)
    ramp_phase = np.linspace(0, 1.0, 32)[None, None, :]
    ramp = np.stack([mag * np.cos(ramp_phase), mag * np.sin(ramp_phase)], axis=1)
    assert 0.9 < phase_smoothness(ramp) < 1.0
    noise = rng.uniform(-np.pi, np.pi, size=(3, 32, 32))
    random = np.stack([mag * np.cos(noise), mag * np.sin(noise)], axis=1)
    assert phase_smoothness(random) < 0.1
    # Speckle confined to the 2-pixel edge band: the border statistic sees it, the whole-patch one barely.
    edge = np.ones((32, 32), dtype=bool)
    edge[2:-2, 2:-2] = False
    speckled = np.where(edge, random, flat)
    assert patch_phase_smoothness(speckled, border=2).max() < 0.15
    assert patch_phase_smoothness(speckled).min() > 0.6
    assert patch_phase_smoothness(flat, border=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="border"):
        patch_phase_smoothness(flat, border=16)
