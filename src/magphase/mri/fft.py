"""Centred, orthonormal 2-D FFTs over the last two axes (the fastMRI convention).

``ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho"))`` and ``fft2c`` its inverse, for numpy
arrays and torch tensors alike (complex dtype). Orthonormal scaling keeps noise and energy
unchanged between k-space and image space (Parseval).
"""

from __future__ import annotations

import numpy as np
import torch

_AXES = (-2, -1)


def fft2c(x: np.ndarray | torch.Tensor):
    """Centred orthonormal forward 2-D FFT over the last two axes (image -> k-space)."""
    if isinstance(x, torch.Tensor):
        x = torch.fft.ifftshift(x, dim=_AXES)
        x = torch.fft.fft2(x, dim=_AXES, norm="ortho")
        return torch.fft.fftshift(x, dim=_AXES)
    x = np.fft.ifftshift(x, axes=_AXES)
    x = np.fft.fft2(x, axes=_AXES, norm="ortho")
    return np.fft.fftshift(x, axes=_AXES)


def ifft2c(k: np.ndarray | torch.Tensor):
    """Centred orthonormal inverse 2-D FFT over the last two axes (k-space -> image)."""
    if isinstance(k, torch.Tensor):
        k = torch.fft.ifftshift(k, dim=_AXES)
        k = torch.fft.ifft2(k, dim=_AXES, norm="ortho")
        return torch.fft.fftshift(k, dim=_AXES)
    k = np.fft.ifftshift(k, axes=_AXES)
    k = np.fft.ifft2(k, axes=_AXES, norm="ortho")
    return np.fft.fftshift(k, axes=_AXES)
