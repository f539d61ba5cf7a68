"""Batched, seeded patch augmentation for the evaluation classifiers (paper 2.4.2).

Operates on float32 tensors ``B x 2 x H x W`` whose channels are ``[real, imag]`` of one complex image.
Every operation acts on the complex image as a whole:

- flips and 90-degree rotations permute pixels identically in both channels, so each item keeps exactly
  its set of complex values;
- the zoom resamples real and imaginary parts with the same bilinear weights, which equals bilinear
  interpolation of the complex values (interpolation is linear);
- intensity scaling multiplies both channels by the same real, positive factor: the magnitude scales,
  the phase is unchanged.

Random parameters are drawn on the CPU from a ``torch.Generator`` (or torch's global CPU generator when
none is given, which the training engine seeds per run and restores on resume), so the result depends only
on the seed, not on the device the batch lives on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from magphase.config.evaluation import AugmentConfig
from magphase.mri.complex import channels_to_complex, complex_to_channels


@dataclass(frozen=True)
class AugmentParams:
    """Per-item random choices of one batch (all CPU tensors of length B).

    Attributes:
        hflip: bool, flip left-right (last axis).
        vflip: bool, flip up-down (second to last axis).
        rot90: int64 in {0, 1, 2, 3}, counter-clockwise quarter turns (``torch.rot90`` on the last two axes).
        zoom: float32 >= 1, zoom factor (the central ``H / zoom`` region is enlarged to ``H``).
        intensity: float32 > 0, factor multiplying both channels.
        phase: float32 radians, a constant phase offset of the complex item (0 when ``global_phase`` is off).
    """

    hflip: Tensor
    vflip: Tensor
    rot90: Tensor
    zoom: Tensor
    intensity: Tensor
    phase: Tensor


def draw_augment_params(
    batch_size: int, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> AugmentParams:
    """Draw the random choices for ``batch_size`` items (same generator state -> same choices)."""
    g = generator
    n = int(batch_size)
    # Always draw every stream, so disabling one operation does not shift the others' random numbers.
    hflip = torch.rand(n, generator=g) < 0.5
    vflip = torch.rand(n, generator=g) < 0.5
    rot90 = torch.randint(0, 4, (n,), generator=g)
    u_zoom = torch.rand(n, generator=g)
    u_int = torch.rand(n, generator=g)
    u_phase = torch.rand(n, generator=g)
    lo_z, hi_z = cfg.zoom
    lo_i, hi_i = cfg.intensity
    return AugmentParams(
        hflip=hflip & cfg.flips,
        vflip=vflip & cfg.flips,
        rot90=rot90 * int(cfg.rot90),
        zoom=(lo_z + (hi_z - lo_z) * u_zoom).float(),
        intensity=(lo_i + (hi_i - lo_i) * u_int).float(),
        phase=((2.0 * u_phase - 1.0) * math.pi * float(cfg.global_phase)).float(),
    )


def zoom_center_crop(x: Tensor, zoom: Tensor) -> Tensor:
    """Enlarge each item by ``zoom[b] >= 1`` about the image centre and crop back to ``H x W`` (bilinear).

    Args:
        x: float ``B x C x H x W``.
        zoom: ``(B,)`` factors; items with factor exactly 1 are returned unchanged (no resampling).
    Returns:
        ``B x C x H x W``; output pixel centres map to input positions ``centre + (p - centre) / zoom``,
        which always lie inside the image for ``zoom >= 1``.
    """
    zoom = zoom.to(device=x.device, dtype=torch.float32)
    if torch.any(zoom < 1):
        raise ValueError("zoom factors must be >= 1 (centre crop of an enlarged image)")
    todo = torch.nonzero(zoom != 1).flatten()
    if todo.numel() == 0:
        return x
    b = todo.numel()
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = 1.0 / zoom[todo]
    theta[:, 1, 1] = 1.0 / zoom[todo]
    sub = x[todo].float()
    grid = F.affine_grid(theta, list(sub.shape), align_corners=False)
    resampled = F.grid_sample(sub, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = x.clone()
    out[todo] = resampled.to(x.dtype)
    return out


def apply_augment(x: Tensor, params: AugmentParams) -> Tensor:
    """Apply drawn choices to ``x`` (``B x C x H x W``): flips, rotation, zoom, intensity, then phase.

    Rotations other than k = 0 and 2 need square items (``H == W``).
    """
    if x.ndim != 4:
        raise ValueError(f"expected B x C x H x W, got shape {tuple(x.shape)}")
    dev = x.device
    hflip = params.hflip.to(dev).view(-1, 1, 1, 1)
    vflip = params.vflip.to(dev).view(-1, 1, 1, 1)
    x = torch.where(hflip, x.flip(-1), x)
    x = torch.where(vflip, x.flip(-2), x)
    k = params.rot90.to(dev)
    if torch.any(k % 2 == 1) and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"quarter-turn rotations need square items, got {tuple(x.shape[-2:])}")
    out = x
    for quarter in (1, 2, 3):
        sel = k == quarter
        if torch.any(sel):
            out = torch.where(sel.view(-1, 1, 1, 1), torch.rot90(x, quarter, dims=(-2, -1)), out)
    out = zoom_center_crop(out, params.zoom)
    out = out * params.intensity.to(device=dev, dtype=out.dtype).view(-1, 1, 1, 1)
    theta = params.phase.to(device=dev, dtype=torch.float32)
    if torch.any(theta != 0):
        if out.shape[1] != 2:
            raise ValueError(f"a global phase offset needs [real, imag] items, got {out.shape[1]} channels")
        rotation = torch.polar(torch.ones_like(theta), theta).view(-1, 1, 1)
        out = complex_to_channels(channels_to_complex(out) * rotation).to(out.dtype)
    return out


def augment_batch(x: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Draw per-item choices from ``generator`` (CPU; None: torch's global generator) and apply them.

    Args:
        x: float32 ``B x 2 x H x W`` (``[real, imag]``), on any device.
        cfg: which operations and their ranges.
    Returns:
        The augmented batch, same shape, dtype and device.
    """
    return apply_augment(x, draw_augment_params(x.shape[0], cfg, generator))


__all__ = ["AugmentParams", "apply_augment", "augment_batch", "draw_augment_params", "zoom_center_crop"]
