"""Centred, orthonormal FFTs: 2-D over the last two axes (the fastMRI convention) and 1-D along one axis.

``ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho"))`` and ``fft2c`` its inverse, for numpy
arrays and torch tensors alike (complex dtype). Orthonormal scaling keeps noise and energy
unchanged between k-space and image space (Parseval).
"""

from __future__ import annotations

import numpy as np
import torch

_AXES = (-2, -1)

ArrayLike = np.ndarray | torch.Tensor


def _centred(x: ArrayLike, axes: tuple[int, ...], inverse: bool) -> ArrayLike:
    """``fftshift(F(ifftshift(x)))`` over ``axes`` with the orthonormal (inverse) DFT ``F``."""
    if isinstance(x, torch.Tensor):
        transform = torch.fft.ifftn if inverse else torch.fft.fftn
        x = torch.fft.ifftshift(x, dim=axes)
        x = transform(x, dim=axes, norm="ortho")
        return torch.fft.fftshift(x, dim=axes)
    transform = np.fft.ifftn if inverse else np.fft.fftn
    x = np.fft.ifftshift(x, axes=axes)
    x = transform(x, axes=axes, norm="ortho")
    return np.fft.fftshift(x, axes=axes)


def fft2c(x: ArrayLike):
    """Centred orthonormal forward 2-D FFT over the last two axes (image -> k-space)."""
    return _centred(x, _AXES, inverse=False)


def ifft2c(k: ArrayLike):
    """Centred orthonormal inverse 2-D FFT over the last two axes (k-space -> image)."""
    return _centred(k, _AXES, inverse=True)


def fft1c(x: ArrayLike, axis: int):
    """Centred orthonormal forward FFT along one axis."""
    return _centred(x, (axis,), inverse=False)


def ifft1c(k: ArrayLike, axis: int):
    """Centred orthonormal inverse FFT along one axis."""
    return _centred(k, (axis,), inverse=True)
