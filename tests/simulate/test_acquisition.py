"""Coil model, noise model and multi-coil acquisition of the simulator (small grids, a few coils)."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from threadpoolctl import threadpool_limits

from magphase.errors import DataError
from magphase.io.fastmri import open_volume, scan_folder
from magphase.mri.fft import ifft2c
from magphase.simulate.acquisition import (
    AcquisitionSettings,
    SiteProfile,
    acquire,
    read_truth,
    truth_path_for,
    write_acquisition,
)
from magphase.simulate.coils import (
    CoilArrayDesign,
    build_coil_array,
    correlated_noise,
    loop_field,
    noise_covariance,
)
from magphase.simulate.kspace_effects import AcquisitionEffects
from magphase.simulate.preview import combine_with_true_maps

H = W = 64
FOV = (220.0, 220.0)


def polygon_biot_savart(points, center, normal, radius, n_segments=2000):
    """Reference: Biot-Savart summed over a fine polygon (mu0 I / 4 pi = 1)."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(normal, helper)
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    t = 2 * np.pi * np.arange(n_segments + 1) / n_segments
    wire = center + radius * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
    dl, mids = np.diff(wire, axis=0), 0.5 * (wire[1:] + wire[:-1])
    field = np.zeros_like(points)
    for k in range(n_segments):
        r = points - mids[k]
        field += np.cross(dl[k], r) / np.sum(r * r, axis=1)[:, None] ** 1.5
    return field


def head_volume(n_slices=4, sequence="AXT2", field_t=3.0):
    """A ground-truth volume of the phantom's contract: elliptic head and brain, smooth phase."""
    rows, cols = np.mgrid[:H, :W]
    y, x = (rows - H // 2) * FOV[0] / H, (cols - W // 2) * FOV[1] / W
    head = (x / 75) ** 2 + (y / 95) ** 2 < 1
    brain = (x / 65) ** 2 + (y / 85) ** 2 < 1
    image = (0.3 * head + 0.7 * brain) * np.exp(1j * (x / 40 + (y / 60) ** 2))
    stack = lambda a: np.repeat(a[None], n_slices, axis=0)  # noqa: E731
    lesion = np.zeros((n_slices, H, W), bool)
    lesion[1, 30:36, 25:29] = True
    return SimpleNamespace(
        image=stack(image).astype(np.complex64),
        brain_mask=stack(brain),
        head_mask=stack(head),
        lesions=[SimpleNamespace(label="Mass", mask=lesion, susceptibility=True)],
        b0_hz=np.zeros((n_slices, H, W), np.float32),
        facial=np.zeros(n_slices, bool),
        sequence=sequence,
        field_strength_t=field_t,
        tr_ms=6000.0,
        te_ms=100.0,
        ti_ms=None,
        flip_deg=150.0,
        voxel_size_mm=(5.0, FOV[0] / H, FOV[1] / W),
        slice_z_mm=(np.arange(n_slices) - (n_slices - 1) / 2) * 6.0,
    )


def simulate(n_coils=4, snr=30.0, seed=0, n_slices=4):
    rng = np.random.default_rng(seed)
    site = SiteProfile.simulated(203, 3.0, rng)
    # The effect-free physics (acquisition effects: test_kspace_effects.py).
    settings = AcquisitionSettings(n_coils=n_coils, snr=snr, site=site, effects=AcquisitionEffects.off())
    return acquire(head_volume(n_slices), settings, rng, stem="file_brain_AXT2_203_1", patient_id="p1")


def test_loop_field_is_biot_savart():
    rng = np.random.default_rng(0)
    center, normal = np.array([10.0, -5.0, 3.0]), np.array([0.3, 0.5, 0.8])
    normal /= np.linalg.norm(normal)
    points = rng.uniform(-120, 120, (300, 3))
    exact = loop_field(points, center, normal, 50.0, wire_radius_mm=0.0)
    reference = polygon_biot_savart(points, center, normal, 50.0)
    rel = np.linalg.norm(exact - reference, axis=1) / np.linalg.norm(reference, axis=1)
    assert rel.max() < 1e-3
    # on the axis: B = 2 pi a^2 / (a^2 + z^2)^1.5 along the normal
    z = np.array([0.0, 20.0, 80.0])
    on_axis = loop_field(center + z[:, None] * normal, center, normal, 50.0, wire_radius_mm=0.0)
    np.testing.assert_allclose(
        on_axis, (2 * np.pi * 50.0**2 / (50.0**2 + z**2) ** 1.5)[:, None] * normal, rtol=1e-9
    )


@pytest.mark.parametrize("n_coils", [4, 8, 12, 16, 20])
def test_noise_covariance_is_valid_and_coupled(n_coils):
    rng = np.random.default_rng(n_coils)
    design = CoilArrayDesign.for_site(rng)
    psi = noise_covariance(build_coil_array(n_coils, design, rng), design, rng)
    np.testing.assert_allclose(psi, psi.conj().T)
    assert np.linalg.eigvalsh(psi).min() > 0.05
    assert np.real(np.diag(psi)).mean() == pytest.approx(1.0)
    corr = np.abs(psi) / np.sqrt(np.outer(np.real(np.diag(psi)), np.real(np.diag(psi))))
    nearest = np.sort(corr + -2 * np.eye(n_coils), axis=1)[:, -1]  # strongest coupling per coil
    assert 0.08 < np.median(nearest) < 0.35
    assert corr[~np.eye(n_coils, dtype=bool)].max() < 0.4


def test_correlated_noise_has_the_covariance():
    rng = np.random.default_rng(1)
    design = CoilArrayDesign.for_site(rng)
    psi = noise_covariance(build_coil_array(8, design, rng), design, rng)
    noise = correlated_noise((200_000, 8), psi, rng, coil_axis=1)
    assert noise.dtype == np.complex64 and noise.shape == (200_000, 8)
    estimate = noise.T @ noise.conj() / noise.shape[0]
    assert np.linalg.norm(estimate - psi) / np.linalg.norm(psi) < 0.02
    # circular: the pseudo-covariance E[n n^T] vanishes
    assert np.abs(noise.T @ noise / noise.shape[0]).max() < 0.02


def test_acquisition_layout_and_header():
    acq = simulate(n_coils=4)
    assert acq.kspace.shape == (4, 4, 2 * H, W) and acq.kspace.dtype == np.complex64
    assert acq.reconstruction_rss.shape == (4, H, W) and acq.reconstruction_rss.dtype == np.float32
    header = acq.header
    assert header.encoded_matrix == (2 * H, W, 1) and header.recon_matrix == (H, W, 1)
    assert header.encoded_fov_mm == (2 * FOV[0], FOV[1], 5.0) and header.recon_fov_mm == (*FOV, 5.0)
    assert header.kspace_encoding_step_1.center == W // 2 and header.kspace_encoding_step_1.maximum == W - 1
    assert header.n_coils == 4 and header.field_strength_t == 3.0 and header.te_ms == 100.0
    assert header.vendor == "SIEMENS" and header.institution == "magphase simulated site 203"
    assert acq.attrs == {"acquisition": "AXT2", "patient_id": "p1"}


def test_noise_outside_the_field_of_view_has_the_recorded_covariance():
    """The readout-oversampled rows outside the FOV are air: pure noise with the stored covariance."""
    acq = simulate(n_coils=4, n_slices=8)
    images = ifft2c(acq.kspace)  # (S, C, 2H, W)
    outside = np.concatenate([images[:, :, : H // 2 - 2], images[:, :, H // 2 + H + 2 :]], axis=2)
    samples = np.moveaxis(outside, 1, -1).reshape(-1, 4)
    estimate = samples.T @ samples.conj() / samples.shape[0]
    expected = acq.truth.noise_covariance
    assert np.linalg.norm(estimate - expected) / np.linalg.norm(expected) < 0.05
    sigma0 = acq.truth.attrs["noise_sigma0"]
    assert np.sqrt(np.real(np.trace(expected)) / 4) == pytest.approx(sigma0, rel=1e-6)


def test_snr_and_signal_scale_follow_the_settings():
    acq = simulate(n_coils=4, snr=25.0)
    truth = acq.truth
    combined = truth.image * truth.slice_scale[:, None, None]  # ideal combination in k-space units
    mean_brain = np.abs(combined[truth.brain_mask]).mean()
    assert mean_brain == pytest.approx(1e-4, rel=1e-4)
    assert mean_brain / truth.attrs["noise_sigma0"] == pytest.approx(25.0, rel=1e-4)


def test_high_snr_acquisition_reproduces_the_truth():
    acq = simulate(n_coils=8, snr=1e5)
    truth = acq.truth
    head = ndimage.binary_erosion(truth.head_mask, np.ones((1, 3, 3)), iterations=2)
    expected = np.abs(truth.image) * truth.slice_scale[:, None, None]
    # RSS of noise-free coil images = |rho| * RSS(maps) = |ideal combination|
    np.testing.assert_allclose(acq.reconstruction_rss[head], expected[head], rtol=2e-3)
    maps = truth.coil_maps_on_grid("recon")
    for s in range(4):
        combined = combine_with_true_maps(acq.kspace[s], maps[s], (H, W))
        ideal = truth.image[s] * truth.slice_scale[s] / np.sqrt(np.sum(np.abs(maps[s]) ** 2, axis=0))
        np.testing.assert_allclose(combined[head[s]], ideal[head[s]], rtol=2e-3, atol=1e-9)


def test_coil_maps_are_smooth_normalised_and_complex():
    truth = simulate(n_coils=8).truth
    maps = truth.coil_maps_on_grid("recon")  # (S, C, H, W)
    head = ndimage.binary_erosion(truth.head_mask, np.ones((1, 3, 3)), iterations=2)
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=1))
    assert np.median(rss[truth.head_mask]) == pytest.approx(1.0, rel=0.02)
    ratios = []
    for s in range(maps.shape[0]):
        for coil in maps[s]:
            # |laplacian| / |map| ~ (pixel / L)^2 for a map varying over a length L; an unsmooth
            # (noisy) map gives a ratio of order 1.
            curvature = np.abs(ndimage.laplace(coil.real)) + np.abs(ndimage.laplace(coil.imag))
            ratios.append(curvature[head[s]].mean() / np.abs(coil[head[s]]).mean())
            # B1- of a loop is complex: its phase varies across the head
            assert np.ptp(np.unwrap(np.angle(coil[head[s]]))) > 0.3
    # L > 6 pixels (20 mm) typically, > 3 pixels next to a wire crossing the slice plane
    assert np.median(ratios) < 0.03 and max(ratios) < 0.1
    oversampled = truth.coil_maps_on_grid("oversampled")
    np.testing.assert_array_equal(oversampled[:, :, H // 2 : H // 2 + H], maps)


def test_coil_maps_differ_between_sites():
    a = SiteProfile.simulated(200, 3.0, np.random.default_rng(1)).coil_design
    b = SiteProfile.simulated(201, 3.0, np.random.default_rng(2)).coil_design
    assert a != b and 100 < a.semi_axes_mm[0] < 130


def test_written_volume_reads_back(tmp_path):
    acq = simulate(n_coils=4)
    raw, truth_file = write_acquisition(tmp_path / "file_brain_AXT2_203_1.h5", acq, {"plan_hash": "abc"})
    assert truth_file == tmp_path / "truth" / "file_brain_AXT2_203_1.h5" == truth_path_for(raw)
    with open_volume(raw) as volume:
        assert volume.sequence == "AXT2" and volume.kspace_shape == (4, 4, 2 * H, W)
        assert volume.header.recon_matrix == (H, W, 1) and volume.n_coils == 4
        np.testing.assert_array_equal(volume.kspace_slice(2), acq.kspace[2])
        stored_rss = volume.reconstruction_rss()
        assert volume.attrs["max"] == pytest.approx(float(stored_rss.max()))
    # RSS by hand with numpy's FFT: centred orthonormal inverse FFT, centre crop, root-sum-of-squares
    k = acq.kspace.astype(np.complex128)
    coil_images = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    by_hand = np.sqrt((np.abs(coil_images[:, :, H // 2 : H // 2 + H]) ** 2).sum(axis=1))
    np.testing.assert_allclose(stored_rss, by_hand, rtol=1e-4, atol=1e-6 * by_hand.max())
    volumes, rejects = scan_folder(tmp_path)  # the sidecar folder is not mistaken for raw data
    assert [v.path.name for v in volumes] == [raw.name] and not rejects
    truth = read_truth(truth_file)
    np.testing.assert_array_equal(truth.image, acq.truth.image)
    np.testing.assert_array_equal(truth.lesion_masks, acq.truth.lesion_masks)
    np.testing.assert_array_equal(truth.coil_maps.coarse, acq.truth.coil_maps.coarse)
    assert truth.lesion_labels == ["Mass"] and truth.lesion_susceptibility.tolist() == [True]
    assert truth.attrs["plan_hash"] == "abc" and truth.attrs["sequence"] == "AXT2"
    assert np.abs(truth.image).reshape(4, -1).max(axis=1) == pytest.approx(np.ones(4))
    assert not list(tmp_path.rglob("*.tmp"))


def test_broken_truth_sidecar_raises_data_error(tmp_path):
    acq = simulate(n_coils=4)
    _, truth_file = write_acquisition(tmp_path / "file_brain_AXT2_203_1.h5", acq)
    data = truth_file.read_bytes()
    truth_file.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="truth"):
        read_truth(truth_file)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["image"] = np.zeros((1, 2, 2), np.complex64)
    with pytest.raises(DataError, match="brain_mask"):
        read_truth(tmp_path / "other.h5")


def test_same_seed_same_bytes_whatever_the_threads():
    a = simulate(seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            b = simulate(seed=5)
    finally:
        torch.set_num_threads(threads)
    assert a.kspace.tobytes() == b.kspace.tobytes()
    assert simulate(seed=6).kspace.tobytes() != a.kspace.tobytes()
