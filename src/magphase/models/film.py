"""Feature-wise linear modulation (FiLM, Perez et al. 2018) on a discrete condition.

The autoencoder (paper Sec. 2.2) is conditioned on the acquisition sequence: every residual block
normalises its features and then applies a learned per-channel scale and shift looked up from the
sequence index, ``h = norm(h) * (1 + scale[seq]) + shift[seq]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FiLM(nn.Module):
    """Per-token, per-channel scale and shift: ``(B, C, H, W), (B,) -> (B, C, H, W)``.

    Args:
        num_tokens: size of the condition vocabulary (5 sequences for the autoencoder).
        channels: feature channels ``C`` modulated.
        init_std: standard deviation of the initial scales and shifts. Small but non-zero, so that
            an untrained network already depends (slightly) on its condition and the conditioning
            path receives gradients from the first step; ``1 + scale`` keeps the start near identity.
    """

    def __init__(self, num_tokens: int, channels: int, init_std: float = 0.02):
        super().__init__()
        self.num_tokens = num_tokens
        self.channels = channels
        self.embedding = nn.Embedding(num_tokens, 2 * channels)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, h: Tensor, token: Tensor) -> Tensor:
        scale, shift = self.embedding(token).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        return h * (1 + scale) + shift

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, channels={self.channels}"


def check_tokens(token: Tensor, num_tokens: int, batch: int) -> Tensor:
    """Validate a condition tensor: integer ``(B,)`` with values in ``[0, num_tokens)``.

    Raises:
        ValueError: wrong dtype, shape or an out-of-range token (the message names the valid range).
    """
    if not isinstance(token, Tensor) or token.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
    ):
        raise ValueError(f"condition must be an integer tensor of shape ({batch},), got {token!r:.80}")
    if token.shape != (batch,):
        raise ValueError(f"condition must have shape ({batch},), got {tuple(token.shape)}")
    # Range check on CPU only: on a GPU it would force a host sync every forward (an out-of-range index
    # there still fails, as a device-side assert).
    if (
        token.device.type == "cpu"
        and token.numel()
        and (int(token.min()) < 0 or int(token.max()) >= num_tokens)
    ):
        raise ValueError(f"condition tokens must lie in [0, {num_tokens}), got {token.tolist()}")
    return token.long()


__all__ = ["FiLM", "check_tokens"]
