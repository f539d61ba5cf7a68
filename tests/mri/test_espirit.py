"""ESPIRiT maps and coil combination against known coil maps, BART and sigpy."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from magphase.errors import DataError
from magphase.mri.coils import combine_coils, espirit_combine
from magphase.mri.espirit import espirit_maps, virtual_coil_weights
from magphase.mri.fft import fft2c, ifft2c
from magphase.mri.kspace import center_crop_image, remove_readout_oversampling
from magphase.mri.metrics import phase_coherence


def _grid(rows, cols):
    y = (np.arange(rows) - rows // 2) / rows
    x = (np.arange(cols) - cols // 2) / cols
    return np.meshgrid(y, x, indexing="ij")


def smooth_coil_maps(coils, rows, cols):
    """Loop coils on an ellipse around the FOV: 1/(1 + r^2)-type fall-off, smooth phase; sum |S|^2 = 1."""
    Y, X = _grid(rows, cols)
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        cy, cx = 0.35 * np.sin(angle), 0.6 * np.cos(angle)
        magnitude = 1.0 / (1.0 + ((Y - cy) ** 2 + (X - cx) ** 2) / 0.08)
        phase = angle + 1.5 * (X * np.cos(angle) + Y * np.sin(angle)) + 0.8 * (X**2 - Y**2)
        maps.append(magnitude * np.exp(1j * phase))
    maps = np.array(maps)
    return (maps / np.sqrt((np.abs(maps) ** 2).sum(0))).astype(np.complex64)


def ellipse_phantom(rows, cols, scale=1.0, shift=0.0):
    """Complex image: ellipses of different magnitude (in the central half of the rows, as with 2x
    readout oversampling) and a smooth phase; also returns the object mask."""
    Y, X = _grid(rows, cols)
    obj = (Y / (0.2 * scale)) ** 2 + ((X - shift) / (0.36 * scale)) ** 2 <= 1
    inner = (Y / 0.08) ** 2 + ((X - 0.1 - shift) / 0.12) ** 2 <= 1
    magnitude = obj * (1.0 + 0.5 * inner)
    phase = 1.2 * X - 3.0 * Y + 2.0 * (X**2 + Y**2) + 0.3
    return (magnitude * np.exp(1j * phase)).astype(np.complex64), obj


def multicoil_kspace(images, maps, noise=1e-4, seed=0):
    """k-space (S, C, H, W) of coil images S_c * image, with a little complex Gaussian noise."""
    rng = np.random.default_rng(seed)
    k = fft2c(maps[None] * images[:, None])
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return k.astype(np.complex64)


def expected_combination(image, true_maps, weights):
    """Truth under the documented phase reference: image * phase of the virtual coil map a^H S."""
    virtual = np.tensordot(np.conj(weights), true_maps, axes=1)
    return image * np.exp(1j * np.angle(virtual))


@pytest.fixture(scope="module")
def volume():
    """3 slices (objects of different size/position), 8 coils, 96 x 48 k-space (2x readout oversampling)."""
    rows, cols, coils = 96, 48, 8
    maps = smooth_coil_maps(coils, rows, cols)
    phantoms = [
        ellipse_phantom(rows, cols, scale, shift) for scale, shift in ((1.0, 0.0), (0.85, 0.05), (0.7, -0.05))
    ]
    images = np.stack([p[0] for p in phantoms])
    masks = np.stack([p[1] for p in phantoms])
    return {"kspace": multicoil_kspace(images, maps), "maps": maps, "images": images, "masks": masks}


def _assert_matches_truth(combined, expected, mask):
    assert phase_coherence(combined, expected, mask=mask) >= 0.999
    magnitude_error = np.linalg.norm(np.abs(combined[mask]) - np.abs(expected[mask])) / np.linalg.norm(
        expected[mask]
    )
    assert magnitude_error < 0.01


def test_virtual_coil_weights_are_first_principal_component(volume):
    k = volume["kspace"]
    weights = virtual_coil_weights(k, calib_size=24)
    assert weights.shape == (8,) and weights.dtype == np.complex64
    calib = k[:, :, 48 - 12 : 48 + 12, 24 - 12 : 24 + 12]
    samples = calib.transpose(1, 0, 2, 3).reshape(8, -1)
    first = np.linalg.svd(samples, full_matrices=False)[0][:, 0]
    assert abs(np.vdot(first, weights)) == pytest.approx(1.0, abs=1e-5)
    largest = np.argmax(np.abs(weights))
    assert abs(weights[largest].imag) < 1e-6 and weights[largest].real > 0


@pytest.mark.parametrize("eig_grid", [None, 16])
def test_maps_recover_true_sensitivities_up_to_pixel_phase(volume, eig_grid):
    maps, eigenvalues = espirit_maps(volume["kspace"], eig_grid=eig_grid, return_eigenvalues=True)
    assert maps.shape == volume["kspace"].shape and maps.dtype == np.complex64
    assert eigenvalues.shape == (3, 96, 48) and eigenvalues.dtype == np.float32
    for s in range(3):
        inside = volume["masks"][s]
        assert np.all(eigenvalues[s][inside] > 0.95)
        overlap = np.abs((np.conj(maps[s]) * volume["maps"]).sum(0))
        assert overlap[inside].min() > 0.999
    # Cropped where the eigenvalue is low; unit norm over coils elsewhere.
    norm = np.sqrt((np.abs(maps) ** 2).sum(1))
    np.testing.assert_allclose(norm[eigenvalues > 0.95], 1.0, atol=1e-4)
    assert np.all(norm[eigenvalues <= 0.95] == 0)
    assert np.any(eigenvalues <= 0.95)


@pytest.mark.parametrize("eig_grid", [None, 16])
def test_combined_image_equals_truth_up_to_global_phase(volume, eig_grid):
    k = volume["kspace"]
    weights = virtual_coil_weights(k)
    combined = combine_coils(ifft2c(k), espirit_maps(k, eig_grid=eig_grid))
    assert combined.shape == (3, 96, 48) and combined.dtype == np.complex64
    for s in range(3):
        expected = expected_combination(volume["images"][s], volume["maps"], weights)
        _assert_matches_truth(combined[s], expected, volume["masks"][s])


def test_phase_reference_is_the_virtual_coil_and_shared_by_all_slices(volume):
    k = volume["kspace"]
    weights = virtual_coil_weights(k)
    maps = espirit_maps(k)
    virtual = np.einsum("c,schw->shw", np.conj(weights), maps)
    supported = np.abs(virtual) > 1e-3
    assert np.abs(virtual.imag[supported]).max() < 1e-4 and virtual.real[supported].min() > 0
    # One reference for the volume: slice-by-slice calls with the volume's weights give the same maps.
    for s in range(3):
        single = espirit_maps(k[s], reference=weights)
        np.testing.assert_allclose(single, maps[s], atol=2e-4)
    # The phase the combination adds, arg(combined) - arg(truth), is one function for every slice.
    combined = combine_coils(ifft2c(k), maps)
    added = combined * np.conj(volume["images"])
    common = volume["masks"].all(0)
    for s in (1, 2):
        assert phase_coherence(added[s], added[0], mask=common) > 0.9999


def test_torch_input_gives_the_same_maps_as_numpy(volume):
    k = volume["kspace"][:2]
    maps_np, eig_np = espirit_maps(k, return_eigenvalues=True)
    maps_t, eig_t = espirit_maps(torch.from_numpy(k), return_eigenvalues=True)
    assert isinstance(maps_t, torch.Tensor) and maps_t.dtype == torch.complex64
    np.testing.assert_allclose(maps_t.numpy(), maps_np, atol=1e-5)
    np.testing.assert_allclose(eig_t.numpy(), eig_np, atol=1e-5)
    combined_t = combine_coils(ifft2c(torch.from_numpy(k)), maps_t)
    np.testing.assert_allclose(combined_t.numpy(), combine_coils(ifft2c(k), maps_np), atol=1e-5)


def test_coarse_eigen_grid_is_close_to_full_resolution(volume):
    k = volume["kspace"]
    exact = combine_coils(ifft2c(k), espirit_maps(k, eig_grid=None))
    coarse = combine_coils(ifft2c(k), espirit_maps(k, eig_grid=16))
    mask = volume["masks"]
    assert phase_coherence(coarse, exact, mask=mask) > 0.99999
    assert np.abs(coarse - exact)[mask].max() < 0.01 * np.abs(exact[mask]).max()


def test_odd_sizes_coarse_grid_matches_every_pixel():
    rows, cols = 90, 37
    maps = smooth_coil_maps(6, rows, cols)
    image, mask = ellipse_phantom(rows, cols)
    k = multicoil_kspace(image[None], maps)[0]
    exact = combine_coils(ifft2c(k), espirit_maps(k, eig_grid=None))
    coarse = combine_coils(ifft2c(k), espirit_maps(k, eig_grid=15))
    assert phase_coherence(coarse, exact, mask=mask) > 0.99999
    assert np.abs(coarse - exact)[mask].max() < 0.01 * np.abs(exact[mask]).max()
    _assert_matches_truth(exact, expected_combination(image, maps, virtual_coil_weights(k)), mask)
    # espirit_combine's odd-size path (plain ifft2c) agrees too.
    combined = espirit_combine(k[None], oversampling=None, eig_grid=None)[0]
    np.testing.assert_allclose(combined, exact, atol=1e-5)


def test_espirit_combine_volume_on_recon_grid(volume):
    k = volume["kspace"]
    combined = espirit_combine(k, oversampling=2, slices_per_batch=2)
    assert combined.shape == (3, 48, 48) and combined.dtype == np.complex64
    reduced = remove_readout_oversampling(k, 2)
    weights = virtual_coil_weights(reduced)  # the reference is defined on the recon grid's k-space
    for s in range(3):
        expected = center_crop_image(
            expected_combination(volume["images"][s], volume["maps"], weights), (48, 48)
        )
        _assert_matches_truth(combined[s], expected, center_crop_image(volume["masks"][s], (48, 48)))
    # The shortcut (oversampling removed on the calibration columns only) equals the plain path,
    # and batching does not change the result.
    plain = combine_coils(ifft2c(reduced), espirit_maps(reduced, reference=weights))
    np.testing.assert_allclose(combined, plain, atol=1e-5)
    np.testing.assert_allclose(espirit_combine(k, oversampling=2), combined, atol=1e-6)
    cropped = espirit_combine(torch.from_numpy(k), oversampling=2, recon_size=(40, 44))
    assert isinstance(cropped, torch.Tensor) and tuple(cropped.shape) == (3, 40, 44)
    np.testing.assert_allclose(cropped.numpy(), center_crop_image(combined, (40, 44)), atol=1e-4)


def test_combine_coils_is_exact_for_known_maps(rng):
    maps = smooth_coil_maps(4, 16, 12)
    maps[:, :2] = 0  # no coverage in two rows
    image = (rng.standard_normal((16, 12)) + 1j * rng.standard_normal((16, 12))).astype(np.complex64)
    combined = combine_coils(maps * image, maps)
    np.testing.assert_allclose(combined[2:], image[2:], atol=1e-5)
    assert np.all(combined[:2] == 0)
    torch_combined = combine_coils(torch.from_numpy(maps * image), torch.from_numpy(maps))
    np.testing.assert_allclose(torch_combined.numpy(), combined, atol=1e-6)
    with pytest.raises(ValueError):
        combine_coils(maps, maps[:2])


def test_bad_input_raises_documented_errors(volume):
    k = volume["kspace"]
    with pytest.raises(DataError, match="vol.h5.*kspace.*NaN"):
        bad = k.copy()
        bad[0, 0, 0, 0] = np.nan
        espirit_combine(bad, source="vol.h5")
    with pytest.raises(DataError, match="complex"):
        espirit_combine(np.abs(k), source="vol.h5")
    with pytest.raises(DataError, match="shape"):
        espirit_combine(k[0], source="vol.h5")
    with pytest.raises(TypeError):
        espirit_maps(np.abs(k))
    with pytest.raises(ValueError):
        espirit_maps(k, eig_grid=0)


def test_slice_without_signal_gives_zero_image(volume):
    k = volume["kspace"][:2].copy()
    k[1] = 0
    combined = espirit_combine(k, oversampling=2)
    assert np.all(combined[1] == 0) and np.abs(combined[0]).max() > 0


def test_phase_coherence_definition(rng):
    a = (rng.standard_normal((2, 5, 6)) + 1j * rng.standard_normal((2, 5, 6))).astype(np.complex64)
    assert phase_coherence(a, a * np.exp(1j * 0.7) * 3.0) == pytest.approx(1.0, abs=1e-6)
    assert phase_coherence(a, np.conj(a)) < 0.5
    b = np.array([1.0, 1.0j])
    assert phase_coherence(np.ones(2), b) == pytest.approx(abs(1 - 1j) / 2)
    mask = np.zeros((2, 5, 6), bool)
    mask[:, 0, 0] = True
    per_image = phase_coherence(torch.from_numpy(a), torch.from_numpy(a * 1j), dim=(-2, -1))
    assert per_image.shape == (2,) and torch.allclose(per_image, torch.ones(2))
    numpy_value = phase_coherence(a, np.roll(a, 1), mask=mask)
    torch_value = phase_coherence(
        torch.from_numpy(a), torch.from_numpy(np.roll(a, 1)), mask=torch.from_numpy(mask)
    )
    assert float(torch_value) == pytest.approx(numpy_value, abs=1e-6)


# --- external references -------------------------------------------------------------------------


def write_cfl(stem, array):
    """BART .hdr/.cfl pair: dims in the header, complex64 data column-major."""
    array = np.asarray(array, np.complex64)
    with open(f"{stem}.hdr", "w") as f:
        f.write("# Dimensions\n" + " ".join(str(d) for d in array.shape) + "\n")
    array.T.tofile(f"{stem}.cfl")  # C-order of the transpose = Fortran order of the array


def read_cfl(stem):
    with open(f"{stem}.hdr") as f:
        dims = [int(d) for d in f.read().splitlines()[1].split()]
    return np.fromfile(f"{stem}.cfl", np.complex64).reshape(dims, order="F")


@pytest.mark.external
def test_matches_bart_ecalib(volume, tmp_path):
    if shutil.which("bart") is None:
        pytest.skip("bart is not installed")
    k = volume["kspace"][0]
    threshold, crop = 0.02, 0.95
    write_cfl(tmp_path / "k", k.transpose(1, 2, 0)[:, :, None, :])  # BART dims (kx, ky, kz, coils)
    subprocess.run(
        ["bart", "ecalib", "-m1", "-k6", "-r24", f"-t{threshold**2}", f"-c{crop}", "k", "maps"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    bart_maps = read_cfl(tmp_path / "maps").reshape(96, 48, 8).transpose(2, 0, 1)
    ours = espirit_maps(k, threshold=threshold, crop=crop)
    mask = volume["masks"][0]
    overlap = np.abs((np.conj(ours) * bart_maps).sum(0))
    assert overlap[mask].min() > 0.999
    # BART also rotates to the first principal component, so even the combined phase agrees.
    images = ifft2c(k)
    assert phase_coherence(combine_coils(images, ours), combine_coils(images, bart_maps), mask=mask) > 0.9999


@pytest.mark.external
def test_matches_sigpy_espirit_calib(volume):
    app = pytest.importorskip("sigpy.mri.app")
    k = volume["kspace"][0]
    sigpy_maps = app.EspiritCalib(
        k, calib_width=24, kernel_width=6, thresh=0.02, crop=0.95, show_pbar=False
    ).run()
    ours = espirit_maps(k)
    mask = volume["masks"][0]
    # sigpy references phase to coil 0, we to the virtual coil: compare per pixel up to phase.
    overlap = np.abs((np.conj(ours) * np.asarray(sigpy_maps)).sum(0))
    assert overlap[mask].min() > 0.999
