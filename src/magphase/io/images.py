"""Image volumes from other tools: NumPy arrays and DICOM series, validated like every magphase input.

These are the formats a magnitude-only image arrives in when it is not fastMRI k-space (the NIfTI
reader is :func:`magphase.io.nifti.read_nifti`). Each reader returns float32 ``(S, H, W)`` (slice,
row, column), finite and not all zero, or raises one :class:`~magphase.errors.DataError` naming the
file and the field at fault:

- :func:`read_numpy_image`: ``.npy`` or ``.npz`` (``key`` picks the array of an archive that holds
  several). Never unpickles: object arrays are refused (``allow_pickle=False``). Complex arrays give
  their magnitude; a 2-D array is one slice.
- :func:`read_dicom_series`: one ``.dcm`` file or a folder of them (one series), sorted by
  ``InstanceNumber`` (then ``ImagePositionPatient``); ``RescaleSlope``/``RescaleIntercept`` applied.

:func:`read_image_volume` picks the reader from the path.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from magphase.errors import DataError


def _checked(path: Path, data: np.ndarray, field: str = "data") -> np.ndarray:
    """``data`` as float32 ``(S, H, W)``: 2-D or 3-D, finite, not all zero."""
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise DataError(
            path, "shape", f"expected a 2-D image or a 3-D volume (S, H, W), got shape {data.shape}"
        )
    if min(data.shape) == 0:
        raise DataError(path, "shape", f"empty axis in shape {data.shape}")
    if np.iscomplexobj(data):
        data = np.abs(data)
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        kinds = "/".join(
            k for k, hit in (("NaN", np.isnan(data).any()), ("Inf", np.isinf(data).any())) if hit
        )
        raise DataError(path, field, f"contains {kinds} ({int((~finite).sum())} values)")
    if not data.any():
        raise DataError(path, field, "every value is zero (an empty image)")
    return np.ascontiguousarray(data)


def _open_check(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "file", "file does not exist")
    if not path.is_file():
        raise DataError(path, "file", "not a file")
    if path.stat().st_size == 0:
        raise DataError(path, "file", "file is empty (0 bytes)")


def read_numpy_image(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """A ``.npy`` array or one array of a ``.npz`` archive as float32 ``(S, H, W)``.

    Raises:
        DataError: field ``file`` (missing, empty, unreadable), ``format`` (not NumPy, truncated),
            ``key`` (archive without that array, or several arrays and no ``key``), ``dtype``
            (object or non-numeric arrays: refused unread, they would need unpickling), ``shape``
            or ``data`` (NaN/Inf, all zero).
    """
    path = Path(path)
    _open_check(path)
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        # np.load would take anything else for a pickle (and refuse it only for allow_pickle=False)
        raise DataError(path, "format", "not a NumPy file (no .npy or .npz signature)")
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:  # object arrays without allow_pickle, or a damaged header
        if "pickle" in str(exc).lower():
            raise DataError(path, "dtype", "an object array (would need unpickling): refused") from None
        raise DataError(path, "format", f"not a readable NumPy file: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            path, "format", f"not a readable NumPy file (truncated or another format): {exc}"
        ) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                if len(names) != 1:
                    raise DataError(
                        path, "key", f"archive holds {len(names)} arrays {names}: say which (key)"
                    )
                key = names[0]
            if key not in names:
                raise DataError(path, "key", f"no array {key!r} in the archive (has {names})")
            try:
                array = loaded[key]
            except ValueError as exc:
                raise DataError(path, "dtype", f"array {key!r} is an object array: refused ({exc})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(path, "format", f"array {key!r} cannot be read (truncated?): {exc}") from None
    else:
        array = loaded
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(path, "dtype", f"not a numeric array (dtype {array.dtype})")
    return _checked(path, array)


def _dicom_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(path, "file", "folder holds no DICOM files")
        return files
    _open_check(path)
    return [path]


def read_dicom_series(path: str | os.PathLike[str]) -> np.ndarray:
    """One DICOM file, or a folder holding one series, as float32 ``(S, H, W)``.

    Raises:
        DataError: field ``file`` (missing, empty folder), ``format`` (not DICOM, truncated),
            ``PixelData`` (no or undecodable pixel data), ``SeriesInstanceUID`` (several series),
            ``Rows/Columns`` (slices of different sizes), ``shape`` or ``data``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    slices = []
    series: set[str] = set()
    for file in _dicom_files(path):
        try:
            ds = pydicom.dcmread(file)
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as exc:
            raise DataError(file, "format", f"not a readable DICOM file: {exc}") from None
        if "PixelData" not in ds:
            raise DataError(file, "PixelData", "no pixel data (not an image)")
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises many types for truncated or compressed data
            raise DataError(file, "PixelData", f"cannot decode the pixel data: {exc}") from None
        pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0
        )
        series.add(str(getattr(ds, "SeriesInstanceUID", "")))
        position = getattr(ds, "ImagePositionPatient", None)
        order = (int(getattr(ds, "InstanceNumber", 0) or 0), float(position[2]) if position else 0.0)
        slices.append((order, file, pixels))
    if len(series) > 1:
        raise DataError(path, "SeriesInstanceUID", f"{len(series)} series in one folder: give one series")
    shapes = {s[2].shape for s in slices}
    if len(shapes) > 1:
        raise DataError(path, "Rows/Columns", f"slices of different sizes {sorted(shapes)}")
    slices.sort(key=lambda s: s[0])
    stack = np.stack([s[2] for s in slices]) if slices[0][2].ndim == 2 else slices[0][2]
    return _checked(path, stack, "PixelData")


def read_image_volume(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """float32 ``(S, H, W)`` from a NIfTI (``.nii``, ``.nii.gz``), NumPy (``.npy``, ``.npz``) or DICOM
    (``.dcm`` or a folder) path; see the readers for the errors."""
    from magphase.io.nifti import read_nifti

    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path).data
    if name.endswith((".npy", ".npz")):
        return read_numpy_image(path, key)
    if path.is_dir() or name.endswith((".dcm", ".ima")):
        return read_dicom_series(path)
    raise DataError(
        path, "file", "unknown image format (expected .nii, .nii.gz, .npy, .npz, .dcm or a DICOM folder)"
    )


__all__ = ["read_dicom_series", "read_image_volume", "read_numpy_image"]
