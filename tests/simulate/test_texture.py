"""Sub-template texture and scanner phase terms: fields, boundary refinement, statistics, renders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from scipy import special

from magphase.evaluation.reconstruction import baseline_reconstruction
from magphase.simulate import texture as tx
from magphase.simulate.contrast import default_protocol, signal


@pytest.mark.parametrize("exponent", [1.5, 2.0, 2.5])
def test_power_law_field_has_unit_variance_and_the_configured_spectrum(exponent):
    field = tx.power_law_field(np.random.default_rng(0), (4, 256, 256), (0.7, 0.7), exponent=exponent)
    assert field.dtype == np.float32
    np.testing.assert_allclose(field.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(field.std(axis=(1, 2)), 1.0, rtol=1e-4)
    spectra = [tx.radial_power_spectrum(field[s, :128, :128], 0.7) for s in range(4)]
    slope = tx.spectrum_slope(spectra[0][0], np.mean([p for _, p in spectra], axis=0))
    assert slope == pytest.approx(-exponent, abs=0.3)


def test_power_law_field_is_deterministic_per_seed_and_rolls_off():
    a = tx.power_law_field(np.random.default_rng(3), (2, 64, 64), (1.0, 1.0))
    b = tx.power_law_field(np.random.default_rng(3), (2, 64, 64), (1.0, 1.0))
    c = tx.power_law_field(np.random.default_rng(4), (2, 64, 64), (1.0, 1.0))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5
    smooth = tx.power_law_field(np.random.default_rng(3), (2, 64, 64), (1.0, 1.0), shortest_mm=4.0)
    # Rolled off below 4 mm, the field varies less from pixel to pixel than the raw 1/f field.
    assert np.abs(np.diff(smooth, axis=2)).mean() < 0.7 * np.abs(np.diff(a, axis=2)).mean()


def test_refine_share_sharpens_a_blurred_step_to_the_target_width_and_moves_it():
    x = np.linspace(-5.0, 5.0, 2001)  # mm
    template = special.ndtr(x / 1.1).astype(np.float32)  # template edge, sigma 1.1 mm
    refined = tx.refine_share(template, gain=1.1 / 0.45)
    np.testing.assert_allclose(refined, special.ndtr(x / 0.45), atol=2e-3)
    shifted = tx.refine_share(template, gain=1.1 / 0.45, offset=0.5 / 0.45)
    # The 0.5 level moves by -0.5 mm (offset > 0 grows the tissue).
    assert x[np.argmin(np.abs(shifted - 0.5))] == pytest.approx(-0.5, abs=0.01)
    ends = tx.refine_share(np.array([0.0, 1.0], np.float32), gain=3.0, offset=2.0)
    np.testing.assert_array_equal(ends, [0.0, 1.0])


def test_signal_log_derivatives_match_the_spin_echo_signal_equation():
    protocol = default_protocol("AXT2", 3.0)
    pd, t1, t2 = 0.69, 1084.0, 69.0
    s = float(signal(protocol, pd, t1, t2))
    d_r1, d_r2, d_pd = tx.signal_log_derivatives(protocol, pd, t1, t2)
    assert d_pd == pytest.approx(s)
    assert d_r2 == pytest.approx(-protocol.te_ms / t2 * s, rel=1e-5)  # S ~ exp(-TE R2)
    assert d_r1 > 0  # faster recovery, more signal
    t1w = default_protocol("AXT1", 3.0)
    # T1 weighting: R1 texture dominates; T2 weighting: R2 texture dominates.
    d1 = tx.signal_log_derivatives(t1w, pd, t1, t2)
    assert abs(d1[0]) > abs(d1[1])
    assert abs(d_r2) > abs(d_r1)


def test_perivascular_spaces_follow_density_and_partial_volume():
    mask = np.zeros((20, 128, 128), bool)
    mask[:, 14:114, 14:114] = True  # 100 x 100 pixels of 0.7 mm: 4900 mm^2 per slice
    pvs = tx.perivascular_spaces(np.random.default_rng(0), [(mask, 2e-3)], (0.7, 0.7))
    again = tx.perivascular_spaces(np.random.default_rng(0), [(mask, 2e-3)], (0.7, 0.7))
    np.testing.assert_array_equal(pvs, again)
    assert pvs.dtype == np.float32 and pvs.min() >= 0.0 and pvs.max() <= 1.0
    # ~9.8 spaces per slice: count local maxima above half height.
    peaks = (pvs > 0.3) & (pvs == ndi.maximum_filter(pvs, size=(1, 5, 5)))
    assert 6.0 < peaks.sum() / 20 < 14.0
    thin = tx.perivascular_spaces(np.random.default_rng(1), [(mask, 2e-3)], (0.7, 0.7), (0.3, 0.0), 0.0)
    # 0.3 mm tubes in 0.7 mm pixels: partial volume keeps them faint (peak well below 1).
    assert 0.05 < thin.max() < 0.5


def test_numpy_reference_equals_the_evaluation_baseline():
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(96, 96)) + 1j * rng.normal(size=(96, 96))).astype(np.complex64)
    ours = tx.pool_bilinear_reference(z)
    x = torch.from_numpy(np.stack([z.real, z.imag])[None].astype(np.float32))
    theirs = baseline_reconstruction(x)[0].numpy()
    np.testing.assert_allclose(ours.real, theirs[0], atol=1e-5)
    np.testing.assert_allclose(ours.imag, theirs[1], atol=1e-5)


def test_statistics_on_known_inputs():
    flat = np.ones((40, 40))
    assert tx.local_cov(flat, np.ones((40, 40), bool)) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(2)
    noisy = 1.0 + 0.05 * rng.normal(size=(200, 200))
    assert tx.local_cov(noisy, np.ones((200, 200), bool), 5) == pytest.approx(0.05, rel=0.15)
    ramp = np.exp(1j * 0.1 * np.arange(50))[None, :].repeat(50, axis=0)
    # Row differences are 0, column differences 0.1 rad: RMS over both = 0.1 / sqrt(2).
    assert tx.neighbour_phase_difference_std(ramp, np.ones((50, 50), bool)) == pytest.approx(
        0.1 / math.sqrt(2), rel=1e-3
    )
    assert tx.brain_squares(np.ones((64, 64), bool), 64, 32) == [(0, 0)]


def test_eddy_current_phase_scales_with_tau_only_in_its_b0_term():
    from magphase.simulate.phantom import _eddy_current_phase

    shape = (3, 64, 64)
    p0 = _eddy_current_phase(np.random.default_rng(5), shape, 0.0)
    p1 = _eddy_current_phase(np.random.default_rng(5), shape, 1.0)
    p2 = _eddy_current_phase(np.random.default_rng(5), shape, 2.0)
    # tau = 0: only the echo-shift ramp, the same in every slice and linear along the readout rows.
    np.testing.assert_allclose(p0[0], p0[2], atol=1e-6)
    np.testing.assert_allclose(np.diff(p0[0], n=2, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.diff(p0[0], axis=1), 0.0, atol=1e-6)
    # The B0 term is -2 pi df tau: linear in tau.
    np.testing.assert_allclose(p2 - p1, p1 - p0, atol=1e-5)


# --- renders (need the head model) --------------------------------------------------------------


@pytest.fixture(scope="module")
def renders():
    from magphase.simulate.phantom import VolumeSpec, render_volume

    cache = {}

    def _render(seed=21, sequence="AXT2", **kwargs):
        key = (seed, sequence, tuple(sorted(kwargs.items())))
        if key not in cache:
            base = {"n_slices": 3, "slice_gap_mm": 14.0}
            cache[key] = render_volume(VolumeSpec(seed=seed, sequence=sequence, **{**base, **kwargs}))
        return cache[key]

    return _render


def _brain_statistics(volume):
    slopes, covs = [], {1: [], 2: []}
    pixel = volume.voxel_size_mm[1]
    for s in range(volume.image.shape[0]):
        mag = np.abs(volume.image[s])
        for r, c in tx.brain_squares(volume.brain_mask[s], 64, 32):
            slopes.append(tx.radial_power_spectrum(mag[r : r + 64, c : c + 64], pixel)[1])
        for code in covs:
            value = tx.local_cov(mag, volume.tissue_labels[s] == code, 5)
            if np.isfinite(value):
                covs[code].append(value)
    freq = tx.radial_power_spectrum(np.zeros((64, 64)), pixel)[0]
    return tx.spectrum_slope(freq, np.mean(slopes, axis=0)), {k: np.median(v) for k, v in covs.items()}


@pytest.mark.slow
def test_render_has_texture_with_the_configured_statistics(renders):
    volume = renders()
    assert volume.tissue_labels.shape == volume.image.shape
    assert (volume.tissue_labels == 1).sum() > 1000 and (volume.tissue_labels == 2).sum() > 1000
    slope, covs = _brain_statistics(volume)
    # Sharp boundaries and 1/f texture: steeper than natural photographs' f^-2 (5 mm slices blur
    # oblique boundaries through the plane), much shallower than the template alone (about -5.6,
    # benchmarks/texture.py), and not white (0).
    assert -4.8 < slope < -2.5
    # Local variation inside WM and GM: present (>= 1 %), but far below the GM/WM contrast.
    assert 0.01 < covs[1] < 0.12
    assert 0.01 < covs[2] < 0.12


@pytest.mark.slow
def test_texture_is_deterministic_per_seed(renders):
    from magphase.simulate.phantom import VolumeSpec, render_volume

    a = renders(seed=21)
    b = render_volume(VolumeSpec(seed=21, sequence="AXT2", n_slices=3, slice_gap_mm=14.0))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.tissue_labels, b.tissue_labels)
    c = renders(seed=22)
    assert not np.array_equal(a.tissue_labels, c.tissue_labels)


@pytest.mark.slow
def test_head_field_in_hz_scales_with_field_strength(renders):
    v3 = renders(field_strength_t=3.0)
    v15 = renders(field_strength_t=1.5)
    # Same subject and shim: the susceptibility field is the same in ppm, so in Hz it doubles.
    inside = v3.brain_mask
    np.testing.assert_allclose(v3.b0_hz[inside], 2.0 * v15.b0_hz[inside], rtol=1e-3, atol=1e-3)
    assert np.abs(v3.b0_hz[inside]).max() > 5.0  # tens of Hz near sinuses and veins at 3 T


@pytest.mark.slow
def test_ear_canals_are_air_in_the_head_model():
    from magphase.simulate import anatomy as anat

    model = anat.load_head_anatomy()
    for x_mm in (-60.0, 60.0):
        idx = tuple(int(round(v - o)) for v, o in zip((-40.0, -17.0, x_mm), anat.GRID_ORIGIN_MM, strict=True))
        assert model.maps["air"][idx] > 200  # internal air, not outside air or tissue
