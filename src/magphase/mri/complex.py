"""Complex <-> two-channel conversions: the one place they live.

Complex arrays are ``complex64`` in I/O and MRI maths; network tensors are float32 with the
channel axis holding ``[real, imag]`` (shape ``B x 2 x H x W`` or ``2 x H x W``).
"""

from __future__ import annotations

import numpy as np
import torch


def complex_to_channels(x: np.ndarray | torch.Tensor, axis: int = -3):
    """Stack real and imaginary parts into a new channel axis.

    Args:
        x: complex array/tensor ``(..., H, W)``.
        axis: where the channel axis goes in the output (default: before H, W).
    Returns:
        float32 array/tensor ``(..., 2, H, W)`` with channel 0 = real, 1 = imag.
    """
    if isinstance(x, torch.Tensor):
        if not torch.is_complex(x):
            raise TypeError(f"expected a complex tensor, got {x.dtype}")
        return torch.stack([x.real, x.imag], dim=axis).to(torch.float32)
    x = np.asarray(x)
    if not np.iscomplexobj(x):
        raise TypeError(f"expected a complex array, got {x.dtype}")
    return np.stack([x.real, x.imag], axis=axis).astype(np.float32)


def channels_to_complex(x: np.ndarray | torch.Tensor, axis: int = -3):
    """Inverse of :func:`complex_to_channels`: ``(..., 2, H, W)`` float -> complex64 ``(..., H, W)``."""
    if isinstance(x, torch.Tensor):
        if x.shape[axis] != 2:
            raise ValueError(f"channel axis {axis} must have size 2, got shape {tuple(x.shape)}")
        re, im = x.float().unbind(dim=axis)
        return torch.complex(re, im)
    x = np.asarray(x)
    if x.shape[axis] != 2:
        raise ValueError(f"channel axis {axis} must have size 2, got shape {x.shape}")
    re = np.take(x, 0, axis=axis)
    im = np.take(x, 1, axis=axis)
    return (re + 1j * im).astype(np.complex64)


def magnitude_phase(x: np.ndarray | torch.Tensor, axis: int = -3):
    """Magnitude and phase (radians in [-pi, pi]) of a two-channel real/imag array."""
    z = channels_to_complex(x, axis=axis)
    if isinstance(z, torch.Tensor):
        return z.abs(), z.angle()
    return np.abs(z), np.angle(z)
