"""NIfTI export of a complex volume as two float32 images: magnitude and phase (radians).

Axis mapping. magphase volumes are ``(S, H, W)`` = (slice, row, column) of the stored array
(``reconstruction_rss[slice]`` orientation). NIfTI voxel ``(i, j, k)`` is mapped as

    i = column (W), j = row (H), k = slice (S);   data_nifti = volume.transpose(2, 1, 0)

with the diagonal affine ``diag(-dx, +dy, +dz)`` (RAS+ world, mm) centred on the volume:

- k -> +z (superior): slices are axial planes, so every viewer shows them in its axial view;
- j -> +y (anterior): the stored rows run the other way from the up/down-flipped view in which
  fastMRI+ was annotated (anterior at the top); +y puts that view's top at the viewer's top;
- i -> -x: stored column 0 is drawn on the viewer's left in radiological convention (patient
  right on screen-left), as the fastMRI+ annotators saw it.

fastMRI files carry no patient position or slice direction, so this geometry is nominal: it gives
correct voxel sizes and an axial, anterior-up display, not scanner coordinates (qform/sform code 2,
"aligned"). Left/right and the slice direction cannot be recovered from fastMRI data.

:func:`read_nifti` reads one such image (or any 3-D scalar NIfTI) back to ``(S, H, W)``; every
problem with the file is a :class:`~magphase.errors.DataError` naming the file and the field
(``gzip``, ``header``, ``dim``, ``pixdim``, ``data``).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from magphase.errors import DataError
from magphase.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

#: NIfTI xform code "aligned anatomical": a nominal frame, not the scanner's.
_XFORM_ALIGNED = 2


def nifti_affine(shape: tuple[int, int, int], voxel_size_mm: tuple[float, float, float]) -> np.ndarray:
    """Voxel -> world (mm, RAS+) affine of a ``(S, H, W)`` volume exported by :func:`export_nifti`.

    Args:
        shape: ``(S, H, W)`` of the magphase volume.
        voxel_size_mm: ``(dx, dy, slice_thickness)``: column spacing, row spacing, slice spacing.

    Returns:
        float64 ``4 x 4`` affine for NIfTI voxel ``(i, j, k)`` = (column, row, slice); the volume
        centre maps to the world origin.
    """
    n_slices, height, width = shape
    dx, dy, dz = (float(v) for v in voxel_size_mm)
    affine = np.diag([-dx, dy, dz, 1.0])
    centre = np.array([(width - 1) / 2, (height - 1) / 2, (n_slices - 1) / 2])
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _save_atomic(image: nib.Nifti1Image, path: Path) -> None:
    # nibabel picks gzip from the suffix, so the temp name keeps ".nii.gz".
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
        nib.save(image, tmp)


def export_nifti(
    volume: np.ndarray,
    out_prefix: str | os.PathLike[str],
    voxel_size_mm: tuple[float, float, float],
) -> tuple[Path, Path]:
    """Write ``{out_prefix}_mag.nii.gz`` and ``{out_prefix}_phase.nii.gz``, each atomically.

    Args:
        volume: complex ``(S, H, W)`` (complex64 expected; complex128 is cast), stored-array orientation.
        out_prefix: path prefix; missing parent folders are created.
        voxel_size_mm: ``(dx, dy, slice_thickness)`` in mm: column spacing, row spacing, slice spacing.

    Returns:
        ``(magnitude_path, phase_path)``. Both float32, NIfTI axes (column, row, slice) with the
        affine of :func:`nifti_affine`; phase = ``np.angle`` in radians, in ``[-pi, pi]``.

    Raises:
        ValueError: not a finite complex 3-D array, or a non-positive voxel size.
    """
    volume = np.asarray(volume)
    if not np.iscomplexobj(volume):
        raise ValueError(f"volume must be complex (S, H, W); got dtype {volume.dtype}")
    if volume.ndim != 3 or 0 in volume.shape:
        raise ValueError(f"volume must be a non-empty (S, H, W) array; got shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume contains NaN or Inf")
    if len(voxel_size_mm) != 3 or not all(math.isfinite(v) and v > 0 for v in voxel_size_mm):
        raise ValueError(f"voxel_size_mm must be three positive sizes (dx, dy, dz); got {voxel_size_mm}")
    volume = volume.astype(np.complex64, copy=False)

    affine = nifti_affine(volume.shape, voxel_size_mm)
    # (S, H, W) -> (W, H, S): NIfTI i = column, j = row, k = slice.
    data = np.ascontiguousarray(volume.transpose(2, 1, 0))
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = (prefix.with_name(prefix.name + "_mag.nii.gz"), prefix.with_name(prefix.name + "_phase.nii.gz"))
    for path, values, description, display in (
        (paths[0], np.abs(data), "magphase magnitude", None),
        (paths[1], np.angle(data), "magphase phase (rad)", (-math.pi, math.pi)),
    ):
        image = nib.Nifti1Image(values.astype(np.float32), affine)
        header = image.header
        header.set_xyzt_units(xyz="mm")
        header["descrip"] = description.encode()
        image.set_qform(affine, code=_XFORM_ALIGNED)
        image.set_sform(affine, code=_XFORM_ALIGNED)
        if display is not None:
            header["cal_min"], header["cal_max"] = display
        _save_atomic(image, path)
    logger.info("wrote %s and %s", *paths)
    return paths


@dataclass(frozen=True)
class NiftiVolume:
    """A 3-D NIfTI image in magphase orientation.

    Attributes:
        data: float32 ``(S, H, W)`` (slice, row, column): the inverse of :func:`export_nifti`'s
            transpose, so ``read_nifti(export_nifti(v, ...)[0]).data == abs(v)``.
        voxel_size_mm: ``(dx, dy, slice_thickness)`` as given to :func:`export_nifti`.
        affine: the image's voxel -> world affine (NIfTI axes, not transposed).
    """

    data: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    affine: np.ndarray


_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_HEADER_BYTES = 348
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)


def _header_size(path: Path) -> int:
    """How many of the first 348 (decompressed) bytes the file holds."""
    opener = gzip.open if path.name.endswith(".gz") else open
    got = 0
    try:
        with opener(path, "rb") as fh:
            while got < _NIFTI1_HEADER_BYTES and (chunk := fh.read(_NIFTI1_HEADER_BYTES - got)):
                got += len(chunk)
    except (EOFError, OSError, zlib.error):
        pass
    return got


def _stored_voxel_size(path: Path, image: nib.Nifti1Image) -> tuple[float, float, float]:
    """``pixdim[1:4]`` as stored: nibabel's loader silently turns a 0 into 1 mm."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = type(image.header).from_fileobj(fh, check=False)
    return tuple(float(v) for v in raw["pixdim"][1:4])  # type: ignore[return-value]


def read_nifti(path: str | os.PathLike[str]) -> NiftiVolume:
    """Read a 3-D scalar NIfTI image (``.nii`` or ``.nii.gz``) as float32 ``(S, H, W)``.

    Trailing singleton dimensions (``W x H x S x 1``) are dropped; the data must be finite and not
    all zero (an all-zero image is an empty export, not anatomy).

    Raises:
        DataError: ``(path, field, problem)`` with field ``file`` (missing, unreadable), ``gzip``
            (empty, or named ``.gz`` but not gzip-compressed), ``header`` (not a NIfTI header, or
            truncated inside it), ``dim`` (not 3-D), ``pixdim`` (a voxel size not positive and
            finite) or ``data`` (truncated or corrupt, NaN/Inf, all zero).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise DataError(path, "file", "file does not exist") from None
    except OSError as exc:
        raise DataError(path, "file", f"cannot read: {exc.strerror or exc}") from None
    if not magic:
        raise DataError(path, "gzip" if path.name.endswith(".gz") else "header", "file is empty (0 bytes)")
    if path.name.endswith(".gz") and magic != _GZIP_MAGIC:
        raise DataError(path, "gzip", "named .gz but not gzip-compressed (rename it to .nii or compress it)")
    try:
        image = nib.load(path)
    except (nib.filebasedimages.ImageFileError, *_READ_ERRORS) as exc:
        if _header_size(path) < _NIFTI1_HEADER_BYTES:
            raise DataError(path, "header", "truncated: the file ends inside the NIfTI header") from None
        raise DataError(path, "header", f"not a NIfTI header: {exc}") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(path, "header", f"not a NIfTI image ({type(image).__name__})")
    shape = tuple(int(v) for v in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(path, "dim", f"expected a 3-D image (columns, rows, slices), got shape {image.shape}")
    zooms = _stored_voxel_size(path, image)
    if not all(math.isfinite(v) and v > 0 for v in zooms):
        raise DataError(path, "pixdim", f"voxel size must be positive and finite, got {zooms} mm")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except _READ_ERRORS as exc:
        raise DataError(path, "data", f"cannot read the voxel data (truncated or corrupt): {exc}") from None
    finite = np.isfinite(data)
    if not finite.all():
        kinds = "/".join(
            k for k, hit in (("NaN", np.isnan(data).any()), ("Inf", np.isinf(data).any())) if hit
        )
        raise DataError(path, "data", f"contains {kinds} ({int((~finite).sum())} voxels)")
    if not data.any():
        raise DataError(path, "data", "every voxel is zero (an empty image)")
    return NiftiVolume(
        data=np.ascontiguousarray(data.transpose(2, 1, 0)),
        voxel_size_mm=zooms,
        affine=np.asarray(image.affine),
    )


__all__ = ["NiftiVolume", "export_nifti", "nifti_affine", "read_nifti"]
