"""Acquisition effects: analytic checks of truncation, partial Fourier, motion ghosts, flow ghosts, the
noise covariance with effects on, the header's encoding limits, the sidecar record and the off switch."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from pydantic import ValidationError
from tests.simulate.test_acquisition import H, W, head_volume

from magphase.config.simulate import AcquisitionEffectsConfig, SimulateConfig
from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.rss import rss
from magphase.simulate.acquisition import AcquisitionSettings, SiteProfile, acquire, sites_with_effects
from magphase.simulate.dataset import SimulatedDatasetPlan
from magphase.simulate.kspace_effects import (
    AcquisitionEffects,
    DrawnEffects,
    acquired_columns,
    column_times_ms,
    flow_modulation,
    sinus_mask,
    translate_columns,
)

#: sha256 of the k-space bytes of ``_acquire(AcquisitionEffects.off())`` computed with the simulator
#: before the effects existed (commit d5cc5c7): effects off must keep every byte.
OFF_KSPACE_SHA256 = "a2093dcb2479182d1365d11c10018ec7f1e920d3edee347ca937ffc6d1ec1ebc"


def _acquire(effects: AcquisitionEffects, seed: int = 3, snr: float = 30.0, n_slices: int = 2):
    rng = np.random.default_rng(seed)
    site = SiteProfile.simulated(203, 3.0, rng)
    settings = AcquisitionSettings(n_coils=4, snr=snr, site=site, effects=effects)
    return acquire(head_volume(n_slices), settings, rng, stem="file_brain_AXT2_203_1", patient_id="p1")


def test_effects_off_keeps_the_old_bytes():
    acq = _acquire(AcquisitionEffects.off())
    assert hashlib.sha256(acq.kspace.tobytes()).hexdigest() == OFF_KSPACE_SHA256
    assert "effects_applied" not in acq.truth.attrs


def test_zero_filled_truncation_rings_with_the_expected_period():
    """A step edge along phase encoding, keeping n of N columns: the zero-filled image is the step
    convolved with a Dirichlet kernel: the ripples next to the edge oscillate at the highest acquired
    frequency, n / 2 cycles per field of view, so successive maxima are 2 N / n pixels apart."""
    n_cols, n_lines = 256, 64
    step = np.zeros((1, n_cols), np.complex64)
    step[:, n_cols // 4 : 3 * n_cols // 4] = 1.0
    k = fft2c(step)
    left, right = acquired_columns(n_cols, n_lines, 1.0)
    assert (left, right) == (n_cols // 2 - n_lines // 2, n_cols // 2 + n_lines // 2)
    k[:, :left] = 0
    k[:, right:] = 0
    profile = np.real(ifft2c(k))[0]
    edge = n_cols // 4
    inside = profile[edge : edge + 40]
    peaks = [i for i in range(1, len(inside) - 1) if inside[i] > inside[i - 1] and inside[i] >= inside[i + 1]]
    assert np.diff(peaks).mean() == pytest.approx(2 * n_cols / n_lines, abs=0.3)
    overshoot = inside.max() - 1.0
    assert 0.07 < overshoot < 0.11  # Gibbs: ~9 % of the step


def test_partial_fourier_drops_the_low_side_only():
    left, right = acquired_columns(320, 256, 0.75)
    assert right == 320 // 2 + 128 and left == 320 // 2 - 128 + 64
    assert acquired_columns(320, 320, 1.0) == (0, 320)


def test_periodic_motion_ghosts_at_fov_over_period():
    """A point moving along the readout by a cos(2 pi j / P) while column j is acquired (one column per
    TR): every readout frequency sees a sinusoidal phase modulation across the columns, so the energy lands
    at the point and at ghosts +-N/P pixels away along phase encoding, whatever the direction of motion."""
    n = 128
    image = np.zeros((1, 64, n), np.complex64)
    image[0, 32, n // 2] = 1.0
    k = fft2c(image)[0]
    period = 8
    cols = np.arange(n)
    shifts = np.stack([1.0 * np.cos(2 * np.pi * cols / period), np.zeros(n)], axis=1)
    moved = translate_columns(k[None], shifts)[0]
    energy = (np.abs(ifft2c(moved)) ** 2).sum(axis=0)  # per column
    ghosts = sorted(int(g) - n // 2 for g in np.argsort(energy)[::-1][:3])
    assert ghosts == [-n // period, 0, n // period]
    assert energy[n // 2 + n // period] == pytest.approx(energy[n // 2 - n // period], rel=1e-3)
    # no other column picks up more than the second harmonic's share
    others = np.delete(energy, [n // 2, n // 2 + n // period, n // 2 - n // period])
    assert others.max() < 0.5 * energy[n // 2 + n // period]


def test_spin_echo_and_turbo_spin_echo_column_times():
    se = column_times_ms(8, (2, 8), 500.0, 1)
    np.testing.assert_array_equal(se[2:], np.arange(6) * 500.0)
    assert np.isnan(se[:2]).all()
    tse = column_times_ms(32, (0, 32), 4000.0, 16)  # 2 shots: even columns shot 0, odd shot 1
    np.testing.assert_array_equal(tse[:4], [0.0, 4000.0, 0.0, 4000.0])


def test_flow_ghosts_are_spaced_by_tr_over_cardiac_period():
    """A flowing point modulated at the column times of a spin echo with TR / T_RR = 1 / 8: its ghosts lie
    N / 8 pixels apart along phase encoding."""
    n = 128
    drawn = DrawnEffects(
        n_lines=n,
        partial_fourier=1.0,
        columns=(0, n),
        flow_depth=0.8,
        flow_phase0=0.0,
        cardiac_period_ms=8 * 500.0,
        total_columns=n,
    )
    times = column_times_ms(n, (0, n), 500.0, 1)
    factor = flow_modulation(times, drawn, phase_rad=0.0)
    image = np.zeros((1, 64, n), np.complex64)
    image[0, 32, n // 2] = 1.0
    profile = np.abs(ifft2c(fft2c(image) * factor[None, None, :]))[0, 32]
    ghosts = sorted(int(g) - n // 2 for g in np.argsort(profile)[::-1][:3])
    assert ghosts == [-n // 8, 0, n // 8]
    # amplitude modulation 1 - d/2 + d/2 cos: each ghost carries d/4 of the point
    assert profile[n // 2 + n // 8] == pytest.approx(0.8 / 4, rel=1e-3)


def test_effects_keep_fastmri_reader_conventions_and_the_noise_covariance():
    effects = AcquisitionEffects(
        phase_resolution=(0.8, 0.8),
        partial_fourier=((0.875, 1.0),),
        motion_fraction=1.0,
        flow_fraction=(("AXT2", 1.0),),
    )
    acq = _acquire(effects, n_slices=6)
    left, right = acq.truth.attrs["acquired_columns"]
    limits = acq.header.kspace_encoding_step_1
    assert (acq.header.padding_left, acq.header.padding_right) == (left, right)
    assert limits.maximum == right - left - 1 and limits.center == W // 2 - left
    assert not acq.kspace[..., :left].any() and not acq.kspace[..., right:].any()
    assert acq.kspace[..., left:right].all()
    assert set(acq.truth.attrs["effects_applied"].split(",")) == {
        "truncation",
        "partial_fourier",
        "motion",
        "flow",
    }
    # fastMRI's reader: ifft2c -> centre crop -> RSS of the stored k-space
    crop = ifft2c(acq.kspace)[:, :, H // 2 : H // 2 + H]
    np.testing.assert_allclose(acq.reconstruction_rss, rss(crop, coil_axis=1), rtol=1e-4, atol=1e-9)
    # noise: the same seed at an SNR of 1e6 draws the same effects and the same (scaled) noise, so the
    # difference of the two k-spaces is the noise of the first, up to 3e-5 of it
    quiet = _acquire(dataclasses.replace(effects), n_slices=6, snr=1e6)
    noise = (acq.kspace - quiet.kspace)[..., left:right]
    samples = np.moveaxis(noise, 1, -1).reshape(-1, 4)
    estimate = samples.T @ samples.conj() / samples.shape[0]
    expected = acq.truth.noise_covariance
    assert np.linalg.norm(estimate - expected) / np.linalg.norm(expected) < 0.1


def test_config_section_validates_and_reaches_the_sites():
    cfg = SimulateConfig(volumes=4, acquisition_effects={"motion_fraction": 0.5})
    plan = SimulatedDatasetPlan.build(cfg, seed=1)
    sites = sites_with_effects(plan.sites, cfg.acquisition_effects)
    assert all(s.effects.motion_fraction == 0.5 for s in sites.values())
    back = SimulatedDatasetPlan.from_json(dataclasses.replace(plan, sites=sites).to_json())
    assert back.sites == sites
    for bad in (
        {"phase_resolution": [0.9, 0.5]},
        {"partial_fourier": {0.4: 1.0}},
        {"motion_fraction": 2},
        {"flow_fraction": {"AXT3": 0.5}},
        {"cardiac_period_ms": [100, 900]},
    ):
        with pytest.raises(ValidationError) as err:
            AcquisitionEffectsConfig(**bad)
        assert len(err.value.errors()) == 1


def test_sinus_mask_finds_the_bright_sinus_at_the_posterior_midline():
    h, w, pixel = 128, 128, (1.5, 1.5)
    rr, cc = np.mgrid[:h, :w]
    brain = ((rr - 64) / 45) ** 2 + ((cc - 70) / 35) ** 2 < 1  # centred off the array middle
    image = brain * 0.3 + 0j
    sinus = (rr - 17) ** 2 + (cc - 71) ** 2 <= 4  # posterior (low rows) midline, bright
    image[sinus] = 1.0
    mask = sinus_mask(brain[None], pixel, image[None])[0]
    assert mask[17, 71] and mask.sum() < 40 and not mask[:, :60].any()
    assert not sinus_mask(np.zeros((1, h, w), bool), pixel).any()
