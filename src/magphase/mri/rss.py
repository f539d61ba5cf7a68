"""Root-sum-of-squares (RSS) coil combination, as fastMRI builds ``reconstruction_rss``.

fastMRI's multi-coil reference image of a slice is: centred orthonormal inverse FFT of every coil
(:func:`magphase.mri.fft.ifft2c`), centre crop of the complex coil images to the header's recon
matrix (which removes the 2x readout oversampling), magnitude, then the root of the sum of squares
over coils. RSS discards phase; magphase uses it only to reproduce/verify fastMRI targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from magphase.mri.fft import ifft2c


def center_crop(x: np.ndarray | torch.Tensor, shape: Sequence[int]) -> np.ndarray | torch.Tensor:
    """Centre crop over the last two axes, with fastMRI's geometry.

    Rows kept: ``[(H - h) // 2, (H - h) // 2 + h)``, columns likewise. For odd differences the
    extra row/column is dropped at the end (``H=7, h=4`` keeps rows 1..4). Returns a view.

    Args:
        x: array or tensor ``(..., H, W)``, any dtype.
        shape: ``(h, w)`` with ``0 < h <= H`` and ``0 < w <= W``.

    Raises:
        ValueError: when the crop is empty or larger than the input.
    """
    if len(shape) != 2:
        raise ValueError(f"crop shape must be (h, w), got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    height, width = x.shape[-2], x.shape[-1]
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"cannot centre-crop {height}x{width} to {h}x{w}: the crop must fit in the input")
    top = (height - h) // 2
    left = (width - w) // 2
    return x[..., top : top + h, left : left + w]


def rss(x: np.ndarray | torch.Tensor, coil_axis: int = -3) -> np.ndarray | torch.Tensor:
    """Root-sum-of-squares of ``|x|`` over ``coil_axis`` (default: the coil axis of ``(..., C, H, W)``)."""
    if isinstance(x, torch.Tensor):
        return torch.sqrt(torch.sum(x.abs() ** 2, dim=coil_axis))
    return np.sqrt(np.sum(np.abs(x) ** 2, axis=coil_axis))


def rss_reconstruction(
    kspace: np.ndarray | torch.Tensor, recon_size: Sequence[int]
) -> np.ndarray | torch.Tensor:
    """fastMRI's RSS reconstruction of multi-coil k-space.

    Args:
        kspace: complex ``(..., C, H, W)`` (e.g. a volume ``(S, C, H, W)`` or a slice ``(C, H, W)``),
            numpy array or torch tensor, centred k-space as stored in fastMRI files.
        recon_size: ``(h, w)`` or the header's ``(x, y, z)`` recon matrix (``z`` ignored): the image
            is centre-cropped to ``h x w`` before combining.

    Returns:
        float32 ``(..., h, w)``, same library as the input (numpy array or torch tensor, same device).

    Raises:
        ValueError: non-complex input, fewer than 3 dims, or a recon size larger than the image.
    """
    if kspace.ndim < 3:
        raise ValueError(f"kspace must be (..., coils, H, W), got shape {tuple(kspace.shape)}")
    is_complex = kspace.is_complex() if isinstance(kspace, torch.Tensor) else np.iscomplexobj(kspace)
    if not is_complex:
        raise ValueError(f"kspace must be complex, got dtype {kspace.dtype}")
    size = tuple(int(v) for v in recon_size)
    if len(size) == 3:
        size = size[:2]
    if isinstance(kspace, torch.Tensor):
        kspace = kspace.to(torch.complex64)
    else:
        kspace = np.asarray(kspace, dtype=np.complex64)
    images = center_crop(ifft2c(kspace), size)
    combined = rss(images, coil_axis=-3)
    if isinstance(combined, torch.Tensor):
        return combined.to(torch.float32)
    return combined.astype(np.float32, copy=False)


__all__ = ["center_crop", "rss", "rss_reconstruction"]
