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
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np

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


__all__ = ["export_nifti", "nifti_affine"]
