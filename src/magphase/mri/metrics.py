"""Image-comparison metrics for complex MRI data (numpy and torch)."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def phase_coherence(
    a: ArrayLike, b: ArrayLike, mask: ArrayLike | None = None, dim: tuple[int, ...] | None = None
):
    """Phase coherence ``|sum a conj(b)| / sum |a| |b|`` (paper Eq. 2).

    1 when ``a`` and ``b`` differ only by one global phase (and a non-negative real scale),
    lower as their phase difference varies over the summed pixels. Magnitude weights the sum,
    so background noise barely counts.

    Args:
        a, b: complex arrays/tensors of the same shape (numpy or torch, not mixed).
        mask: optional boolean (broadcastable) selecting the pixels summed.
        dim: axes to sum over (e.g. ``(-2, -1)`` for one value per image); default all.
    Returns:
        float for numpy input without ``dim``; otherwise an array/tensor of the remaining axes.
        0 where both sums vanish.
    """
    if isinstance(a, torch.Tensor):
        cross = a * b.conj()
        weight = a.abs() * b.abs()
        if mask is not None:
            mask = torch.as_tensor(mask, device=a.device)
            cross, weight = cross * mask, weight * mask
        axes = tuple(range(cross.ndim)) if dim is None else dim
        numerator = cross.sum(dim=axes).abs()
        denominator = weight.sum(dim=axes)
        return torch.where(
            denominator > 0, numerator / denominator.clamp_min(1e-30), torch.zeros_like(numerator)
        )
    a, b = np.asarray(a), np.asarray(b)
    cross = a * np.conj(b)
    weight = np.abs(a) * np.abs(b)
    if mask is not None:
        mask = np.asarray(mask)
        cross, weight = cross * mask, weight * mask
    axes = None if dim is None else tuple(dim)
    numerator = np.abs(cross.sum(axis=axes, dtype=np.complex128))
    denominator = weight.sum(axis=axes, dtype=np.float64)
    result = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return float(result) if dim is None else result
