"""Flow-matching objective (paper Eq. 4), always reduced in float32.

Under autocast the network may return bf16/fp16; the squared error and its mean are computed in
float32 so a small loss is not rounded away and gradients keep their precision.
"""

from __future__ import annotations

from torch import Tensor


def flow_matching_loss(predicted_velocity: Tensor, target_velocity: Tensor) -> Tensor:
    """Mean squared error ``mean((v_theta - (x_data - noise))^2)`` over all elements, float32 scalar."""
    if predicted_velocity.shape != target_velocity.shape:
        raise ValueError(
            f"prediction shape {tuple(predicted_velocity.shape)} != "
            f"target shape {tuple(target_velocity.shape)}"
        )
    diff = predicted_velocity.float() - target_velocity.float()
    return diff.square().mean()


def per_sample_loss(predicted_velocity: Tensor, target_velocity: Tensor) -> Tensor:
    """``(B,)`` float32 per-sample mean squared error (for diagnostics, e.g. loss per t bin)."""
    diff = predicted_velocity.float() - target_velocity.float()
    return diff.square().flatten(1).mean(dim=1)


__all__ = ["flow_matching_loss", "per_sample_loss"]
