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


def global_phase(x: np.ndarray | torch.Tensor):
    """The global phase of two-channel patches ``(..., 2, H, W)``: ``angle(sum of the complex pixels)``.

    The sum weights every pixel by its magnitude, so the angle is the phase of the bright tissue, not of
    the noise. Returns radians in [-pi, pi], shape ``(...)`` (0 for an all-zero patch).
    """
    if isinstance(x, torch.Tensor):
        re, im = x.double().sum(dim=(-2, -1)).unbind(dim=-1)
        return torch.atan2(im, re)
    s = np.asarray(x, dtype=np.float64).sum(axis=(-2, -1))
    return np.arctan2(s[..., 1], s[..., 0])


def rotate_phase(x: np.ndarray | torch.Tensor, angle):
    """Multiply two-channel patches ``(..., 2, H, W)`` by ``exp(i angle)`` (``angle`` scalar or ``(...)``).

    Keeps the input's type and float dtype; magnitudes are unchanged.
    """
    if isinstance(x, torch.Tensor):
        a = torch.as_tensor(angle, dtype=torch.float64, device=x.device)
        c, s = torch.cos(a)[..., None, None].to(x.dtype), torch.sin(a)[..., None, None].to(x.dtype)
        re, im = x.unbind(dim=-3)
        return torch.stack([c * re - s * im, s * re + c * im], dim=-3)
    x = np.asarray(x)
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a)[..., None, None], np.sin(a)[..., None, None]
    re, im = x[..., 0, :, :], x[..., 1, :, :]
    return np.stack([c * re - s * im, s * re + c * im], axis=-3).astype(x.dtype, copy=False)
