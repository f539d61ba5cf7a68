"""Coil combination with sensitivity maps, and the one-call ESPIRiT combination of a volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from magphase.errors import DataError
from magphase.mri.espirit import calibration_region, espirit_maps_from_calibration, virtual_coil_weights
from magphase.mri.fft import ifft2c
from magphase.mri.kspace import center_crop_image, remove_readout_oversampling

ArrayLike = np.ndarray | torch.Tensor


def combine_coils(coil_images: ArrayLike, maps: ArrayLike) -> ArrayLike:
    """Sensitivity-weighted (SENSE R=1, Roemer without noise covariance) coil combination.

    ``x = sum_c conj(S_c) y_c / sum_c |S_c|^2``, zero where all maps are zero. With
    ``y_c = S_c x`` this returns ``x`` exactly; with unit-norm ESPIRiT maps the denominator is 1
    inside the support.

    Args:
        coil_images: complex ``(..., C, H, W)`` coil images (numpy or torch).
        maps: complex sensitivities of the same shape (same library).
    Returns:
        complex64 ``(..., H, W)``, same type/device as ``coil_images``.
    """
    if coil_images.shape != maps.shape:
        raise ValueError(
            f"coil images {tuple(coil_images.shape)} and maps {tuple(maps.shape)} differ in shape"
        )
    if isinstance(coil_images, torch.Tensor):
        maps = torch.as_tensor(maps, device=coil_images.device)
        numerator = (maps.conj() * coil_images).sum(-3)
        denominator = (maps.real.square() + maps.imag.square()).sum(-3)
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator)).to(torch.complex64)
    maps = np.asarray(maps)
    numerator = (np.conj(maps) * coil_images).sum(-3)
    denominator = (np.abs(maps) ** 2).sum(-3)
    out = np.zeros(numerator.shape, np.complex64)
    np.divide(numerator, denominator, out=out, where=denominator > 0, casting="unsafe")
    return out


def _chequerboard(rows: int, cols: int, offset: int, device: torch.device) -> torch.Tensor:
    """``(-1)**(i + j + offset)`` as a float32 ``(rows, cols)`` tensor."""
    i = torch.arange(rows, device=device)[:, None]
    j = torch.arange(cols, device=device)[None, :]
    return 1.0 - 2.0 * ((i + j + offset) % 2).to(torch.float32)


def _coil_images_without_final_shift(
    kspace: torch.Tensor, rows: slice
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``ifft2c(kspace)[..., rows, :]``, up to a per-pixel sign returned separately (even sizes).

    For even ``N`` the centring shifts are modulations: ``ifft2c(k)[n] = (-1)**(n - N/2) *
    ifft2(k * (-1)**k)[n]`` per axis. The sign after the transform is common to all coils, so it is
    applied to the combined image (1/C of the data) instead of shifting every coil image twice.

    Returns:
        coil images ``(S, C, len(rows), W)`` and the sign ``(len(rows), W)`` still to multiply by
        (``None`` when a size is odd and plain :func:`ifft2c` was used).
    """
    height, width = kspace.shape[-2:]
    if height % 2 or width % 2:
        return ifft2c(kspace)[..., rows, :], None
    images = torch.fft.ifft2(kspace * _chequerboard(height, width, 0, kspace.device), norm="ortho")
    sign = _chequerboard(height, width, (height + width) // 2, kspace.device)
    return images[..., rows, :], sign[rows]


def espirit_combine(
    kspace_volume: ArrayLike,
    *,
    oversampling: int | None = 2,
    recon_size: tuple[int, int] | None = None,
    device: str | torch.device | None = None,
    slices_per_batch: int = 8,
    reference: ArrayLike | None = None,
    source: str | Path | None = None,
    calib_size: int = 24,
    **espirit_kwargs,
) -> ArrayLike:
    """Combine one volume's multi-coil k-space into one complex image per slice with ESPIRiT.

    Steps: virtual reference coil of the whole volume -> per batch of slices: ``ifft2c`` and
    readout-oversampling removal (centre crop of the image rows) -> ESPIRiT maps on that grid, all
    slices with the one reference -> :func:`combine_coils` -> optional centre crop/pad to
    ``recon_size``. ESPIRiT needs only the calibration region of the oversampling-free k-space,
    so oversampling is removed from the calibration columns alone (the readout transform acts on
    each column independently): the result equals running
    :func:`~magphase.mri.kspace.remove_readout_oversampling` first, at a fraction of the cost.

    For fastMRI brain k-space ``640 x 320`` (2x readout oversampling) the result is on the
    ``320 x 320`` recon grid, pixel-aligned with ``reconstruction_rss``. The phase of every slice
    is the phase of the volume's virtual-coil image (see :mod:`magphase.mri.espirit`).

    Args:
        kspace_volume: complex ``(S, C, H, W)`` k-space (numpy or torch).
        oversampling: readout oversampling factor to remove, ``None`` or 1 to keep the grid.
        recon_size: ``(h, w)`` to centre-crop (fastMRI convention) or zero-pad the images to,
            e.g. the header's reconSpace matrix; ``None`` keeps the grid after oversampling removal.
        device: where to compute (e.g. ``"cuda"``); default the input's device (CPU for numpy).
        slices_per_batch: slices processed together (bounds memory; results do not depend on it).
        reference: complex ``(C,)`` virtual-coil weights; default: the first principal component
            of this volume's calibration data (:func:`~magphase.mri.espirit.virtual_coil_weights`).
        source: file the k-space came from, named in errors.
        calib_size: side of the calibration region (k-space samples of the oversampling-free grid).
        espirit_kwargs: forwarded to :func:`~magphase.mri.espirit.espirit_maps_from_calibration`
            (kernel_size, threshold, crop, eig_grid, max_iter, num_squarings).
    Returns:
        complex64 ``(S, h, w)``, numpy for numpy input, else a tensor on the input's device.
    Raises:
        DataError: (naming ``source`` and field ``kspace``) for a non-complex, wrong-rank or
        non-finite k-space. Slices without signal come out as zero images.
    """
    from_numpy = not isinstance(kspace_volume, torch.Tensor)
    k = torch.from_numpy(np.ascontiguousarray(kspace_volume)) if from_numpy else kspace_volume
    if k.ndim != 4:
        raise DataError(source, "kspace", f"expected (slices, coils, H, W), got shape {tuple(k.shape)}")
    if not torch.is_complex(k):
        raise DataError(source, "kspace", f"expected complex values, got {k.dtype}")
    output_device = k.device
    k = k.to(device=device if device is not None else k.device, dtype=torch.complex64)
    # NaN/Inf anywhere make the sum non-finite; far cheaper than an element-wise isfinite on complex.
    if not bool(torch.isfinite(torch.view_as_real(k).sum())):
        raise DataError(source, "kspace", "contains NaN or Inf")
    factor = oversampling if oversampling and oversampling > 1 else 1
    rows, cols = k.shape[-2:]
    grid_rows = rows // factor
    calib_cols = min(calib_size, cols)
    col0 = cols // 2 - calib_cols // 2
    calib = calibration_region(
        remove_readout_oversampling(k[..., col0 : col0 + calib_cols], factor), calib_size
    )
    if reference is None:
        reference = virtual_coil_weights(calib, calib_size)
    row0 = rows // 2 - grid_rows // 2  # the crop remove_readout_oversampling makes
    images = []
    for start in range(0, k.shape[0], slices_per_batch):
        stop = start + slices_per_batch
        coil_images, sign = _coil_images_without_final_shift(k[start:stop], slice(row0, row0 + grid_rows))
        maps, _ = espirit_maps_from_calibration(
            calib[start:stop], (grid_rows, cols), reference=reference, **espirit_kwargs
        )
        combined = combine_coils(coil_images, maps)
        images.append(combined if sign is None else combined * sign)
    combined = torch.cat(images)
    if recon_size is not None:
        combined = center_crop_image(combined, recon_size)
    combined = combined.to(output_device)
    return combined.numpy() if from_numpy else combined
