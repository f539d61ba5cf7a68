"""NIfTI export: magnitude/phase read back, axis mapping and affine, atomic output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from magphase.io.nifti import export_nifti, nifti_affine


def _volume(rng: np.random.Generator, shape: tuple[int, int, int] = (3, 10, 7)) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_export_reads_back(tmp_path: Path, rng: np.random.Generator) -> None:
    volume = _volume(rng)
    mag_path, phase_path = export_nifti(volume, tmp_path / "sub" / "vol", voxel_size_mm=(0.7, 0.8, 5.0))
    assert (mag_path.name, phase_path.name) == ("vol_mag.nii.gz", "vol_phase.nii.gz")
    assert sorted(p.name for p in mag_path.parent.iterdir()) == ["vol_mag.nii.gz", "vol_phase.nii.gz"]

    mag_img, phase_img = nib.load(mag_path), nib.load(phase_path)
    assert mag_img.get_data_dtype() == np.float32 and phase_img.get_data_dtype() == np.float32
    mag, phase = np.asarray(mag_img.dataobj), np.asarray(phase_img.dataobj)
    assert mag.shape == (7, 10, 3)  # (columns, rows, slices)
    # NIfTI voxel (i, j, k) is stored pixel [k, j, i].
    np.testing.assert_allclose(mag.transpose(2, 1, 0), np.abs(volume), rtol=1e-6)
    np.testing.assert_allclose(phase.transpose(2, 1, 0), np.angle(volume), atol=1e-6)
    assert np.all(np.abs(phase) <= np.pi + 1e-6)
    recombined = mag.transpose(2, 1, 0) * np.exp(1j * phase.transpose(2, 1, 0))
    np.testing.assert_allclose(recombined, volume, atol=1e-5)

    for image in (mag_img, phase_img):
        np.testing.assert_allclose(image.header.get_zooms(), (0.7, 0.8, 5.0), rtol=1e-6)
        np.testing.assert_allclose(image.affine, nifti_affine(volume.shape, (0.7, 0.8, 5.0)), atol=1e-5)
        assert nib.aff2axcodes(image.affine) == ("L", "A", "S")  # axial slices, anterior up
        assert image.header.get_xyzt_units()[0] == "mm"
        assert int(image.header["qform_code"]) == 2 and int(image.header["sform_code"]) == 2
    assert (float(phase_img.header["cal_min"]), float(phase_img.header["cal_max"])) == pytest.approx(
        (-np.pi, np.pi)
    )


def test_export_follows_the_umask(tmp_path: Path, rng: np.random.Generator) -> None:
    # The exporter used mkstemp once, which created 0o600 files.
    old = os.umask(0o022)
    try:
        paths = export_nifti(_volume(rng), tmp_path / "vol", voxel_size_mm=(1.0, 1.0, 1.0))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644, 0o644]


def test_affine_geometry() -> None:
    affine = nifti_affine((5, 4, 6), (1.0, 2.0, 3.0))
    centre = affine @ np.array([2.5, 1.5, 2.0, 1.0])  # voxel centre of the (W=6, H=4, S=5) grid
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-12)
    # One column right on the stored array = 1 mm towards patient left (-x); one row = +2 mm anterior;
    # one slice = +3 mm superior.
    step = affine[:3, :3] @ np.eye(3)
    np.testing.assert_allclose(step, np.diag([-1.0, 2.0, 3.0]))


@pytest.mark.parametrize(
    ("volume", "voxel"),
    [
        (np.ones((2, 3, 4), dtype=np.float32), (1.0, 1.0, 1.0)),  # not complex
        (np.ones((3, 4), dtype=np.complex64), (1.0, 1.0, 1.0)),  # not 3-D
        (np.full((1, 2, 2), np.nan, dtype=np.complex64), (1.0, 1.0, 1.0)),  # NaN
        (np.ones((1, 2, 2), dtype=np.complex64), (1.0, 0.0, 1.0)),  # zero voxel size
    ],
)
def test_bad_input(tmp_path: Path, volume: np.ndarray, voxel: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        export_nifti(volume, tmp_path / "x", voxel)
    assert list(tmp_path.iterdir()) == []
