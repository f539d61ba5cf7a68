"""Velocity network of the latent flow model: a conditional U-Net (paper Sec. 2.3.1).

Input ``x_t`` is a float32 latent ``B x 2 x 48 x 48`` (channels as the autoencoder's latent
channels), ``t`` the flow time in ``[0, 1]`` (t=0 noise, t=1 data). The network returns the
velocity ``d x_t / dt`` with the shape of ``x_t``.

Conditioning: the noise level (sinusoidal features of t followed by an MLP), a learned sequence
token (the five sequences + ``null``) and, from stage 2 on, a learned class token (normal,
abnormal, unknown, ``null``) are embedded to the same width and SUMMED into one conditioning
vector. Every residual block receives it as a per-channel scale and shift of its second group
norm (adaptive group norm). Self-attention sits at the lower resolutions named in
``attention_resolutions`` and in the middle block.

The class embedding is zero-initialised when it is added (:meth:`VelocityUNet.add_class_embedding`),
so a stage-2 model built from stage-1 weights computes exactly the stage-1 function until it trains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magphase.conventions import CLASS_TOKENS, LATENT_SHAPE, NULL_CLASS, SEQUENCE_TOKENS
from magphase.errors import DataError
from magphase.models.weights import load_ema_weights, read_weights_metadata

#: Parameter-name prefix of the stage-2 class embedding (the "new conditioning parameters").
CLASS_EMBEDDING_PREFIX = "condition.class_embedding."


def _group_norm(channels: int, groups: int, affine: bool = True) -> nn.GroupNorm:
    # Fall back to fewer groups when the width is not divisible (small presets).
    g = math.gcd(groups, channels)
    return nn.GroupNorm(g, channels, affine=affine)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class SinusoidalTimeFeatures(nn.Module):
    """Fixed sinusoidal features of ``t`` in [0, 1]: ``(B,) -> (B, dim)``.

    ``t`` is scaled by 1000 so the frequencies span the unit interval the way DDPM-style
    embeddings span integer timesteps.
    """

    def __init__(self, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time feature dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        args = (t.float() * self.scale)[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ConditionEmbedding(nn.Module):
    """Noise level + sequence (+ class) -> one conditioning vector ``(B, emb_dim)`` (a sum)."""

    def __init__(self, emb_dim: int, time_features: int):
        super().__init__()
        self.time_features = SinusoidalTimeFeatures(time_features)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.sequence_embedding = nn.Embedding(len(SEQUENCE_TOKENS), emb_dim)
        self.class_embedding: nn.Embedding | None = None
        self.emb_dim = emb_dim

    def add_class_embedding(self) -> nn.Embedding:
        """Add the zero-initialised class embedding (normal, abnormal, unknown, null)."""
        if self.class_embedding is None:
            ref = self.sequence_embedding.weight
            self.class_embedding = nn.Embedding(len(CLASS_TOKENS), self.emb_dim).to(ref.device, ref.dtype)
            nn.init.zeros_(self.class_embedding.weight)
        return self.class_embedding

    def forward(self, t: Tensor, sequence: Tensor, label: Tensor | None = None) -> Tensor:
        emb = self.time_mlp(self.time_features(t)) + self.sequence_embedding(sequence)
        if self.class_embedding is not None:
            if label is None:
                label = torch.full_like(sequence, NULL_CLASS)
            emb = emb + self.class_embedding(label)
        return emb


class ResBlock(nn.Module):
    """GN-SiLU-conv, adaptive GN (scale/shift from the conditioning vector), SiLU-dropout-conv, skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        # No affine in the modulated norm: the scale/shift come from the condition.
        self.norm2 = _group_norm(out_ch, groups, affine=False)
        self.dropout = nn.Dropout(dropout)
        # Zero-initialised last conv: each block starts as the identity (stable deep training).
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions, pre-norm, residual."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = _group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        # (B, heads, HW, d) for scaled_dot_product_attention.
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class _Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


class VelocityUNet(nn.Module):
    """Conditional U-Net velocity field ``v(x_t, t, sequence[, class])``.

    Args:
        in_channels: latent channels (2).
        base_channels: width of the first level.
        channel_mults: width multiplier per level; the resolution halves between levels
            (48 -> 24 -> 12 -> 6 for four levels).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: spatial sizes (e.g. ``(12, 6)``) at which self-attention follows
            every residual block. The middle block always has attention.
        num_heads: attention heads.
        emb_dim: width of the conditioning vector.
        time_features: number of sinusoidal time features.
        groups: group-norm groups (reduced automatically where a width is not divisible).
        dropout: dropout inside residual blocks.
        class_conditioning: build with the stage-2 class embedding.
        input_size: expected spatial size (checked in ``forward``; 48 for the paper's latents).
        patch_size: side of the non-overlapping patches the input is folded into before the first
            convolution (space-to-depth, as in DiT/U-ViT patch embedding) and unfolded from after the
            last; 1 keeps full resolution. 2 runs every level at half the resolution (48 -> 24), about
            4x fewer operations per channel, so a CPU budget buys a much wider network.
    """

    def __init__(
        self,
        in_channels: int = 2,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (12,),
        num_heads: int = 4,
        emb_dim: int = 128,
        time_features: int = 64,
        groups: int = 8,
        dropout: float = 0.0,
        class_conditioning: bool = False,
        input_size: int = 48,
        patch_size: int = 1,
    ):
        super().__init__()
        levels = len(channel_mults)
        if patch_size < 1 or input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by the patch size {patch_size}")
        inner = input_size // patch_size
        if inner % (2 ** (levels - 1)):
            raise ValueError(
                f"input size {input_size} / patch size {patch_size} = {inner} is not divisible by "
                f"2^{levels - 1} ({levels} levels)"
            )
        self.in_channels = in_channels
        self.input_size = input_size
        self.patch_size = patch_size
        #: Factor the latents were multiplied by for training (unit variance); samplers divide by it.
        #: Metadata only: ``forward`` never uses it. Set from the weights' model config on loading.
        self.latent_scale = 1.0
        self.condition = ConditionEmbedding(emb_dim, time_features)
        if class_conditioning:
            self.condition.add_class_embedding()
        attn_at = set(attention_resolutions)

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, groups, dropout)

        def attn(ch: int, size: int) -> nn.Module:
            return SelfAttention(ch, num_heads, groups) if size in attn_at else nn.Identity()

        folded = in_channels * patch_size**2
        self.in_conv = nn.Conv2d(folded, base_channels, 3, padding=1)
        ch, size = base_channels, inner
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for lvl, mult in enumerate(channel_mults):
            out = base_channels * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(res(ch, out))
                attns.append(attn(out, size))
                ch = out
                skips.append(ch)
            self.down.append(_Level(blocks, attns))
            if lvl < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                size //= 2
        self.mid1 = res(ch, ch)
        self.mid_attn = SelfAttention(ch, num_heads, groups)
        self.mid2 = res(ch, ch)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mults))):
            out = base_channels * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(res(ch + skips.pop(), out))
                attns.append(attn(out, size))
                ch = out
            self.up.append(_Level(blocks, attns))
            if lvl > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
                size *= 2
        self.out_norm = _group_norm(ch, groups)
        self.out_conv = _zero(nn.Conv2d(ch, folded, 3, padding=1))

    @property
    def class_conditioned(self) -> bool:
        return self.condition.class_embedding is not None

    def add_class_embedding(self) -> nn.Embedding:
        """Turn a stage-1 model into a stage-2 one (zero-initialised class embedding)."""
        return self.condition.add_class_embedding()

    def forward(self, x: Tensor, t: Tensor, sequence: Tensor, label: Tensor | None = None) -> Tensor:
        """Velocity at ``(x_t, t)``.

        Args:
            x: float32 ``B x C x H x W`` state on the path (H = W = ``input_size``).
            t: ``(B,)`` or scalar flow time in [0, 1].
            sequence: ``(B,)`` long sequence tokens (``SEQUENCE_TOKENS``; 5 = null).
            label: ``(B,)`` long class tokens (``CLASS_TOKENS``; 3 = null), stage 2 only;
                None in a class-conditioned model means ``null``.
        Returns:
            float tensor with the shape of ``x``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (self.input_size,) * 2:
            raise ValueError(
                f"expected B x {self.in_channels} x {self.input_size} x {self.input_size}, "
                f"got {tuple(x.shape)}"
            )
        if label is not None and not self.class_conditioned:
            raise ValueError("class labels given to a model without class conditioning (stage 1)")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.condition(t, sequence, label)
        p = self.patch_size
        h = self.in_conv(F.pixel_unshuffle(x, p) if p > 1 else x)
        hs = [h]
        for lvl, level in enumerate(self.down):
            for block, att in zip(level.blocks, level.attns, strict=True):
                h = att(block(h, emb))
                hs.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for lvl, level in enumerate(self.up):
            for block, att in zip(level.blocks, level.attns, strict=True):
                h = att(block(torch.cat([h, hs.pop()], dim=1), emb))
            if lvl < len(self.upsample):
                h = self.upsample[lvl](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def build_flow_model(model_config: dict[str, Any]) -> VelocityUNet:
    """The U-Net described by a weights file's ``model_config`` (random weights)."""
    if model_config.get("kind") != "flow_unet":
        raise ValueError(f"not a flow model config: {model_config}")
    c, _, s = model_config.get("latent_shape", LATENT_SHAPE)
    model = VelocityUNet(**model_config["unet"], in_channels=c, input_size=s)
    model.latent_scale = float(model_config.get("latent_scale", 1.0))
    model.canonical_phase = bool(model_config.get("canonical_phase", False))
    if model_config.get("class_conditioning"):
        model.add_class_embedding()
        # Weights from before this was recorded: None (sampling cannot check the label).
        unknown = model_config.get("unknown_sequences")
        model.unknown_sequences = tuple(unknown) if unknown is not None else None
    return model


def load_flow_model(path: str | Path, device: str | torch.device = "cpu") -> VelocityUNet:
    """Rebuild a flow U-Net from exported EMA weights (``ema.safetensors`` or a snapshot), eval mode.

    Raises:
        DataError: missing file, not safetensors, or no flow model config in its metadata.
    """
    meta = read_weights_metadata(path)
    cfg = meta.get("model_config")
    if not isinstance(cfg, dict) or cfg.get("kind") != "flow_unet":
        raise DataError(path, "model_config", "weights metadata does not describe a flow U-Net")
    model = build_flow_model(cfg)
    model.load_state_dict(load_ema_weights(path))
    return model.to(device).eval()


def flow_stage_of(path: str | Path) -> int:
    """The stage (1 or 2) a flow weights file was trained in."""
    return int(read_weights_metadata(path)["model_config"]["stage"])
