"""k-space geometry: readout-oversampling removal, symmetric k-space crop/zero-fill, image crop.

Layout is fastMRI's: the last two axes are ``(rows, cols) = (readout, phase encode)``, e.g.
multi-coil k-space ``(slices, coils, H, W)``. Every function takes numpy arrays or torch tensors
(any leading axes) and returns the same type on the same device.

Centre conventions (they match :mod:`magphase.mri.fft`):

* k-space: the DC sample of an axis of length ``N`` sits at index ``N // 2``. Cropping or
  zero-filling keeps it there (``N // 2 -> n // 2``) for odd and even sizes alike, so the image
  grid stays centred and a point object at the image centre stays at the image centre.
* images: :func:`center_crop_image` uses fastMRI's ``start = (N - n) // 2`` so crops reproduce
  ``reconstruction_rss``; :func:`remove_readout_oversampling` crops with ``N // 2 - n // 2`` (the
  image centre stays the centre). The two agree unless ``N`` is even and ``n`` odd.
"""

from __future__ import annotations

import numpy as np
import torch

from magphase.mri.fft import ArrayLike, fft1c, ifft1c


def _as_complex64(x: ArrayLike) -> ArrayLike:
    if isinstance(x, torch.Tensor):
        return x.to(torch.complex64)
    return np.asarray(x).astype(np.complex64, copy=False)


def _crop_or_pad_axis(x: ArrayLike, axis: int, size: int, src_centre: int, dst_centre: int) -> ArrayLike:
    """Crop and/or zero-fill ``axis`` of ``x`` to ``size`` samples, moving src_centre to dst_centre."""
    axis = axis % x.ndim
    n = x.shape[axis]
    offset = dst_centre - src_centre  # destination index = source index + offset
    src_lo, src_hi = max(0, -offset), min(n, size - offset)
    src = [slice(None)] * x.ndim
    src[axis] = slice(src_lo, src_hi)
    if src_lo + offset == 0 and src_hi - src_lo == size:
        return x[tuple(src)]  # a pure crop needs no copy
    shape = list(x.shape)
    shape[axis] = size
    if isinstance(x, torch.Tensor):
        out = torch.zeros(shape, dtype=x.dtype, device=x.device)
    else:
        out = np.zeros(shape, dtype=x.dtype)
    dst = [slice(None)] * x.ndim
    dst[axis] = slice(src_lo + offset, src_hi + offset)
    out[tuple(dst)] = x[tuple(src)]
    return out


def remove_readout_oversampling(kspace: ArrayLike, factor: int = 2) -> ArrayLike:
    """Remove readout (row) oversampling from k-space.

    Inverse-FFT along the readout axis (-2), keep the centre ``h = H // factor`` rows of the image,
    FFT back. The crop keeps the image centre row ``H // 2`` at ``h // 2`` (start ``H // 2 - h // 2``)
    so the DC sample stays at ``h // 2`` with no phase ramp; this equals fastMRI's
    ``(H - h) // 2`` crop except when ``H`` is even and ``h`` odd (no fastMRI brain size). The
    orthonormal convention is kept: ``ifft2c`` of the result equals that centre crop of
    ``ifft2c(kspace)`` (image values unchanged; k-space values scale by ``sqrt(1 / factor)``).

    Args:
        kspace: complex ``(..., H, W)`` numpy array or torch tensor.
        factor: readout oversampling factor (fastMRI brain: 2).
    Returns:
        complex64 k-space ``(..., H // factor, W)``, same type/device as the input.
    """
    if factor < 1:
        raise ValueError(f"oversampling factor must be >= 1, got {factor}")
    kspace = _as_complex64(kspace)
    if factor == 1:
        return kspace
    rows = kspace.shape[-2]
    keep = rows // factor
    image = ifft1c(kspace, axis=-2)
    start = rows // 2 - keep // 2
    image = image[..., start : start + keep, :]
    return _as_complex64(fft1c(image, axis=-2))


def resize_kspace(kspace: ArrayLike, shape: tuple[int, int]) -> ArrayLike:
    """Symmetric crop or zero-fill of k-space around its centre sample to ``shape``.

    The DC sample ``(H // 2, W // 2)`` moves to ``(h // 2, w // 2)``; each axis is cropped or
    zero-filled independently (e.g. 256 x 256 -> 320 x 320 zero-fills, 384 -> 320 crops). Values
    are not rescaled: with the orthonormal FFT, image intensities then scale by
    ``sqrt(H * W / (h * w))`` -- call sites that need matched intensities rescale explicitly.

    Args:
        kspace: complex ``(..., H, W)`` numpy array or torch tensor.
        shape: target ``(h, w)``.
    Returns:
        complex64 ``(..., h, w)``, same type/device as the input.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"target shape must be positive, got {shape}")
    out = _as_complex64(kspace)
    rows, cols = out.shape[-2:]
    out = _crop_or_pad_axis(out, -2, h, rows // 2, h // 2)
    out = _crop_or_pad_axis(out, -1, w, cols // 2, w // 2)
    return out


def center_crop_image(image: ArrayLike, shape: tuple[int, int]) -> ArrayLike:
    """Centre crop (or symmetric zero-pad) an image's last two axes to ``shape``.

    Uses fastMRI's ``start = (N - n) // 2`` so crops of ``ifft2c`` output reproduce
    ``reconstruction_rss``. Where the target is larger than the image the axis is zero-padded with
    the mirrored convention (the image lands at ``(n - N) // 2``) instead of failing, because some
    fastMRI files have fewer phase-encode columns than the recon matrix.

    Args:
        image: ``(..., H, W)`` array or tensor (any dtype).
        shape: target ``(h, w)``.
    Returns:
        ``(..., h, w)``, same type, dtype and device.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"target shape must be positive, got {shape}")
    out = image
    for axis, size in ((-2, h), (-1, w)):
        n = out.shape[axis]
        if size <= n:
            start = (n - size) // 2
            index = [slice(None)] * out.ndim
            index[axis] = slice(start, start + size)
            out = out[tuple(index)]
        else:
            out = _crop_or_pad_axis(out, axis, size, 0, (size - n) // 2)
    return out
