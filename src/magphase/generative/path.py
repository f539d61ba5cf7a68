"""The probability path of flow matching (paper Eq. 3) and the training-time distribution of t.

Convention (DESIGN.md): ``x_t = (1 - t) * noise + t * x_data`` with t=0 pure noise and t=1 data;
the velocity along the path is ``d x_t / dt = x_data - noise`` (constant in t). Samplers integrate
t from 0 to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass
class PathSample:
    """One draw from the linear path.

    Attributes:
        x_t: ``(B, ...)`` point on the path at time ``t``.
        t: ``(B,)`` times in [0, 1].
        target_velocity: ``(B, ...)`` regression target ``x_data - noise``.
    """

    x_t: Tensor
    t: Tensor
    target_velocity: Tensor


def _expand_time(t: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` broadcasting against ``like``."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(noise: Tensor, data: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 - t) * noise + t * data`` for per-sample ``t`` of shape ``(B,)``."""
    tt = _expand_time(t, data)
    return (1 - tt) * noise + tt * data


def target_velocity(noise: Tensor, data: Tensor) -> Tensor:
    """The conditional velocity of the linear path, ``data - noise``."""
    return data - noise


def sample_path(data: Tensor, noise: Tensor, t: Tensor) -> PathSample:
    """Point on the path and its regression target (paper Eq. 3-4).

    Args:
        data: ``(B, ...)`` clean samples (latents ``z``).
        noise: ``(B, ...)`` standard normal noise ``eps``, same shape.
        t: ``(B,)`` times in [0, 1].
    """
    if noise.shape != data.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != data shape {tuple(data.shape)}")
    if t.shape != (data.shape[0],):
        raise ValueError(f"t must have shape ({data.shape[0]},), got {tuple(t.shape)}")
    return PathSample(x_t=interpolate(noise, data, t), t=t, target_velocity=target_velocity(noise, data))


@dataclass(frozen=True)
class TimeSampler:
    """Training distribution of t in [0, 1].

    ``uniform``: t ~ U(0, 1). ``logit_normal``: t = sigmoid(u), u ~ N(loc, scale^2) — puts more
    training signal at intermediate noise levels, where the velocity is hardest to predict
    (Esser et al., 2024).
    """

    distribution: Literal["uniform", "logit_normal"] = "logit_normal"
    loc: float = 0.0
    scale: float = 1.0

    def __call__(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``(n,)`` float32 times."""
        if self.distribution == "uniform":
            return torch.rand(n, generator=generator, device=device)
        if self.distribution == "logit_normal":
            u = torch.randn(n, generator=generator, device=device) * self.scale + self.loc
            return torch.sigmoid(u)
        raise ValueError(f"unknown time distribution {self.distribution!r}")

    def density(self, t: Tensor) -> Tensor:
        """Probability density at ``t`` in (0, 1) (used by tests to check the sampler)."""
        if self.distribution == "uniform":
            return torch.ones_like(t)
        logit = torch.log(t) - torch.log1p(-t)
        z = (logit - self.loc) / self.scale
        return torch.exp(-0.5 * z**2) / (self.scale * math.sqrt(2 * math.pi) * t * (1 - t))


__all__ = ["PathSample", "TimeSampler", "interpolate", "sample_path", "target_velocity"]
