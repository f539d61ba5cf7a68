"""Malformed NumPy and DICOM image inputs (``magphase.io.images``): one DataError naming file and field.

The readers are what a magnitude-only image arrives through when it is not fastMRI k-space (PhaseGen's
inputs). Valid inputs round-trip; every malformed one raises :class:`~magphase.errors.DataError` and
never another exception type. An object array whose unpickling would write a marker file is refused
and the marker never appears.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import Marker, truncate
from magphase.errors import DataError
from magphase.io.images import read_dicom_series, read_image_volume, read_numpy_image

VOLUME = (np.arange(3 * 8 * 6, dtype=np.float32).reshape(3, 8, 6) % 17) + 1.0


# --------------------------------------------------------------------------------------------- NumPy
def test_numpy_round_trips(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", VOLUME)
    np.savez(tmp_path / "v.npz", magnitude=VOLUME)
    np.save(tmp_path / "c.npy", VOLUME * np.exp(1j * 0.3))
    np.save(tmp_path / "s.npy", VOLUME[0])
    assert np.array_equal(read_numpy_image(tmp_path / "v.npy"), VOLUME)
    assert np.array_equal(read_image_volume(tmp_path / "v.npz"), VOLUME)
    assert np.allclose(read_numpy_image(tmp_path / "c.npy"), VOLUME, rtol=1e-6)  # complex: magnitude
    assert read_numpy_image(tmp_path / "s.npy").shape == (1, 8, 6)  # 2-D: one slice


def _npy(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write a malformed NumPy input; returns its path and the field the error must name."""
    p = tmp_path / ("x.npz" if case.startswith("npz") else "x.npy")
    if case == "empty":
        p.write_bytes(b"")
        return p, "file"
    if case == "not-numpy":
        p.write_text("this is not an array\n")
        return p, "format"
    if case.startswith("truncated-"):
        np.save(p, VOLUME)
        return truncate(p, int(case.split("-")[1]) / 100), "format"
    if case == "npz-truncated":
        np.savez(p, a=VOLUME)
        return truncate(p, 0.5), "format"
    if case == "npz-several-arrays":
        np.savez(p, a=VOLUME, b=VOLUME)
        return p, "key"
    if case == "string-dtype":
        np.save(p, np.array([["a", "b"], ["c", "d"]]))
        return p, "dtype"
    arrays = {
        "1-d": np.ones(5, np.float32),
        "4-d": np.ones((2, 2, 2, 2), np.float32),
        "empty-axis": np.ones((0, 4, 4), np.float32),
        "nan": np.where(VOLUME > 5, np.nan, VOLUME),
        "inf": np.where(VOLUME > 5, np.inf, VOLUME),
        "all-zero": np.zeros_like(VOLUME),
    }
    np.save(p, arrays[case])
    return p, "shape" if case in ("1-d", "4-d", "empty-axis") else "data"


NPY_CASES = [
    "empty",
    "not-numpy",
    "truncated-10",
    "truncated-50",
    "truncated-99",
    "npz-truncated",
    "npz-several-arrays",
    "string-dtype",
    "1-d",
    "4-d",
    "empty-axis",
    "nan",
    "inf",
    "all-zero",
]


@pytest.mark.parametrize("case", NPY_CASES)
def test_malformed_numpy_is_one_data_error(tmp_path: Path, case: str) -> None:
    path, field = _npy(tmp_path, case)
    with pytest.raises(DataError) as err:
        read_image_volume(path)
    assert err.value.path == str(path) and err.value.field == field, err.value


def test_npz_missing_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", magnitude=VOLUME)
    with pytest.raises(DataError, match="no array 'phase'") as err:
        read_numpy_image(tmp_path / "x.npz", key="phase")
    assert err.value.field == "key"


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_object_array_is_never_unpickled(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "MARKER"
    payload = np.array([Marker(marker)], dtype=object)
    path = tmp_path / f"x.{container}"
    if container == "npy":
        np.save(path, payload, allow_pickle=True)
    else:
        np.savez(path, a=payload)
    with pytest.raises(DataError) as err:
        read_image_volume(path)
    assert err.value.field == "dtype"
    assert not marker.exists()


def test_a_pickle_named_npy_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.npy"
    path.write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(DataError):
        read_image_volume(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------- DICOM
def _dicom(
    path: Path, pixels: np.ndarray, instance: int, series: str = "1.2.3.4", pixel_data: bool = True
) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, 0
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(folder: Path, volume: np.ndarray = VOLUME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in (2, 0, 1):  # written out of order: InstanceNumber decides
        _dicom(folder / f"im{i}.dcm", volume[i], instance=i + 1)
    return folder


def test_dicom_series_round_trips_in_instance_order(tmp_path: Path) -> None:
    got = read_image_volume(_series(tmp_path / "series"))
    assert np.array_equal(got, 2 * VOLUME)  # RescaleSlope 2 applied
    one = read_dicom_series(tmp_path / "series" / "im0.dcm")
    assert np.array_equal(one, 2 * VOLUME[:1])


def _bad_dicom(tmp_path: Path, case: str) -> tuple[Path, str, Path]:
    """A malformed DICOM input: (path given to the reader, field, file the error names)."""
    folder = tmp_path / "series"
    if case == "empty-folder":
        folder.mkdir()
        return folder, "file", folder
    if case == "not-dicom":
        folder.mkdir()
        (folder / "a.dcm").write_text("not dicom")
        return folder, "format", folder / "a.dcm"
    if case.startswith("truncated-"):
        _series(folder)
        f = truncate(folder / "im1.dcm", int(case.split("-")[1]) / 100)
        return folder, ("format" if case == "truncated-10" else "PixelData"), f
    if case == "no-pixel-data":
        folder.mkdir()
        f = _dicom(folder / "a.dcm", VOLUME[0], 1, pixel_data=False)
        return folder, "PixelData", f
    if case == "two-series":
        _series(folder)
        _dicom(folder / "other.dcm", VOLUME[0], 4, series="9.9.9")
        return folder, "SeriesInstanceUID", folder
    if case == "different-sizes":
        _series(folder)
        _dicom(folder / "big.dcm", np.ones((10, 6)), 4)
        return folder, "Rows/Columns", folder
    _series(folder, np.zeros_like(VOLUME))  # all-zero
    return folder, "PixelData", folder


DICOM_CASES = ["empty-folder", "not-dicom", "truncated-10", "truncated-60", "truncated-99", "no-pixel-data",
               "two-series", "different-sizes", "all-zero"]  # fmt: skip


@pytest.mark.parametrize("case", DICOM_CASES)
def test_malformed_dicom_is_one_data_error(tmp_path: Path, case: str) -> None:
    given, field, named = _bad_dicom(tmp_path, case)
    with pytest.raises(DataError) as err:
        read_image_volume(given)
    assert err.value.field == field and err.value.path == str(named), err.value


@pytest.mark.parametrize("name", ["missing.npy", "missing.dcm", "image.png"])
def test_missing_or_unknown_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError) as err:
        read_image_volume(tmp_path / name)
    assert err.value.field == "file"
