"""Sequence-conditioned variational autoencoder of complex MRI patches (paper Sec. 2.2).

Input ``x``: float32 ``B x 2 x 96 x 96``, channels ``[real, imag]`` of a complex patch whose slice was
normalised to maximum magnitude 1. Condition ``seq``: long ``(B,)``, the acquisition sequence index
(:data:`magphase.conventions.SEQUENCE_INDEX`, 5 tokens). Latent: ``B x 2 x 48 x 48`` (``mu`` and
``logvar`` of a diagonal Gaussian posterior), compression factor 4.

Architecture (ResNet-based, every residual block FiLM-conditioned on the sequence)::

    encoder: [conv3x3 2->Cf, Nf res blocks @96]  space-to-depth 2x2  conv3x3 -> Cl  Nl res blocks @48
             GN-SiLU-conv3x3 -> 2 * latent channels (mu, logvar)
    decoder: conv3x3 latent -> Cl  Nl res blocks @48  GN-SiLU-conv3x3 -> 4 * Co  depth-to-space 2x2
             [Nf res blocks @96, GN-SiLU-conv3x3 Cf -> 2]

The 96 <-> 48 transitions are a pixel (un)shuffle followed/preceded by a 3x3 convolution: a learned
stride-2 resampling without the checkerboard artefacts of transposed convolutions. With ``Nf = 0``
(the CPU preset) the network works entirely at 48 x 48 and the full-resolution stages are skipped
(``Co = 2``), which makes a training step about four times cheaper.

A residual block is ``x + conv(SiLU(FiLM(GN(conv(SiLU(GN(x)))))))`` with the last convolution
zero-initialised, so every block starts as the identity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magphase.conventions import LATENT_SHAPE, PATCH_SIZE, SEQUENCES
from magphase.errors import DataError
from magphase.models.film import FiLM, check_tokens

#: Value written as ``model_config["kind"]`` beside exported weights.
MODEL_KIND = "magphase.autoencoder/1"
#: logvar is clamped to this range before use (exp overflow / degenerate posteriors).
LOGVAR_RANGE = (-30.0, 20.0)
#: Initial logvar of the encoder with shortcuts (sigma = 0.007: about where training settles, so the
#: posterior noise does not swamp the untrained shortcut reconstruction).
INITIAL_LOGVAR = -10.0


@dataclass(frozen=True)
class AutoencoderSpec:
    """Sizes of :class:`ConditionalVAE` (a plain, JSON-serialisable record).

    Attributes:
        in_channels: image channels (2: real, imag).
        latent_channels: latent channels (2 for the paper's 2 x 48 x 48).
        full_res_channels: width of the blocks at 96 x 96 (unused when ``full_res_blocks == 0``).
        full_res_blocks: residual blocks at 96 x 96 in the encoder (and again in the decoder).
        latent_res_channels: width of the blocks at 48 x 48.
        latent_res_blocks: residual blocks at 48 x 48 in the encoder (and again in the decoder).
        groups: group-norm groups (reduced to a divisor where a width is not divisible).
        num_sequences: FiLM vocabulary (the 5 sequences).
        patch_size: input height = width (96).
        shortcut: parameter-free resampling shortcuts around the trunk (DC-AE "residual autoencoding",
            Chen et al. 2024): ``mu = trunk(x) + mean2x2(x)``, ``x_hat = trunk(z) + bilinear_up(z)``, with
            the trunks' last convolutions zero-initialised. The untrained network is then a 2 x 2 mean
            pooling / bilinear up-sampling pair and training learns only the residual detail, which
            converges in far fewer steps; the latent stays an image-like low-pass of the patch.
    """

    in_channels: int = 2
    latent_channels: int = LATENT_SHAPE[0]
    full_res_channels: int = 32
    full_res_blocks: int = 0
    latent_res_channels: int = 64
    latent_res_blocks: int = 3
    groups: int = 8
    num_sequences: int = len(SEQUENCES)
    patch_size: int = PATCH_SIZE
    shortcut: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, self.patch_size // 2, self.patch_size // 2)


def space_to_channel_shortcut(x: Tensor, out_channels: int) -> Tensor:
    """Parameter-free 2x down-sampling shortcut (DC-AE's space-to-channel + channel averaging).

    ``B x C x H x W -> B x out_channels x H/2 x W/2``: the ``4 C`` space-to-depth channels averaged in
    ``out_channels`` consecutive groups. For ``out_channels == C`` this is 2 x 2 mean pooling of each channel.
    """
    h = F.pixel_unshuffle(x, 2)
    b, c, hh, ww = h.shape
    if c % out_channels:
        raise ValueError(f"shortcut needs 4 * {x.shape[1]} channels divisible by {out_channels}")
    return h.view(b, out_channels, c // out_channels, hh, ww).mean(dim=2)


def channel_to_space_shortcut(z: Tensor, out_channels: int) -> Tensor:
    """Parameter-free 2x up-sampling shortcut, the inverse companion of :func:`space_to_channel_shortcut`.

    ``B x Z x h x w -> B x out_channels x 2h x 2w``: bilinear up-sampling when ``Z == out_channels``,
    else DC-AE's channel duplication + depth-to-space.
    """
    if z.shape[1] == out_channels:
        return F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
    if (4 * out_channels) % z.shape[1]:
        raise ValueError(f"shortcut needs 4 * {out_channels} channels divisible by {z.shape[1]}")
    return F.pixel_shuffle(z.repeat_interleave(4 * out_channels // z.shape[1], dim=1), 2)


def _group_norm(channels: int, groups: int, affine: bool = True) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels, affine=affine)


class FiLMResBlock(nn.Module):
    """Pre-activation residual block with FiLM on its second normalisation (width preserved)."""

    def __init__(self, channels: int, groups: int, num_tokens: int):
        super().__init__()
        self.norm1 = _group_norm(channels, groups)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        # No affine parameters: the FiLM scale/shift replace them, per sequence.
        self.norm2 = _group_norm(channels, groups, affine=False)
        self.film = FiLM(num_tokens, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, seq: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = F.silu(self.film(self.norm2(h), seq))
        return x + self.conv2(h)


class Encoder(nn.Module):
    """``B x 2 x 96 x 96`` (+ sequence) -> ``mu, logvar`` each ``B x Z x 48 x 48``."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        s = spec
        if s.full_res_blocks > 0:
            self.full_in = nn.Conv2d(s.in_channels, s.full_res_channels, 3, padding=1)
            self.full_blocks = nn.ModuleList(
                FiLMResBlock(s.full_res_channels, s.groups, s.num_sequences) for _ in range(s.full_res_blocks)
            )
            pre_down = s.full_res_channels
        else:
            self.full_in = None
            self.full_blocks = nn.ModuleList()
            pre_down = s.in_channels
        self.down = nn.Conv2d(4 * pre_down, s.latent_res_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            FiLMResBlock(s.latent_res_channels, s.groups, s.num_sequences) for _ in range(s.latent_res_blocks)
        )
        self.norm_out = _group_norm(s.latent_res_channels, s.groups)
        self.conv_out = nn.Conv2d(s.latent_res_channels, 2 * s.latent_channels, 3, padding=1)
        self.shortcut = s.shortcut
        if s.shortcut:
            # Start as the pure shortcut (mu = 2x2 mean of the input) with a narrow posterior
            # (sigma = exp(INITIAL_LOGVAR / 2)); the trunk learns the residual.
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
            nn.init.constant_(self.conv_out.bias[s.latent_channels :], INITIAL_LOGVAR)

    def forward(self, x: Tensor, seq: Tensor) -> tuple[Tensor, Tensor]:
        h = x
        if self.full_in is not None:
            h = self.full_in(h)
            for block in self.full_blocks:
                h = block(h, seq)
        h = self.down(F.pixel_unshuffle(h, 2))
        for block in self.blocks:
            h = block(h, seq)
        mu, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        if self.shortcut:
            mu = mu + space_to_channel_shortcut(x, mu.shape[1])
        return mu, logvar.clamp(*LOGVAR_RANGE)


class Decoder(nn.Module):
    """``B x Z x 48 x 48`` (+ sequence) -> ``B x 2 x 96 x 96``."""

    def __init__(self, spec: AutoencoderSpec):
        super().__init__()
        s = spec
        self.conv_in = nn.Conv2d(s.latent_channels, s.latent_res_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            FiLMResBlock(s.latent_res_channels, s.groups, s.num_sequences) for _ in range(s.latent_res_blocks)
        )
        self.norm_up = _group_norm(s.latent_res_channels, s.groups)
        post_up = s.full_res_channels if s.full_res_blocks > 0 else s.in_channels
        self.up = nn.Conv2d(s.latent_res_channels, 4 * post_up, 3, padding=1)
        if s.full_res_blocks > 0:
            self.full_blocks = nn.ModuleList(
                FiLMResBlock(s.full_res_channels, s.groups, s.num_sequences) for _ in range(s.full_res_blocks)
            )
            self.norm_out: nn.Module | None = _group_norm(s.full_res_channels, s.groups)
            self.conv_out: nn.Module | None = nn.Conv2d(s.full_res_channels, s.in_channels, 3, padding=1)
        else:
            self.full_blocks = nn.ModuleList()
            self.norm_out = None
            self.conv_out = None
        self.shortcut = s.shortcut
        if s.shortcut:
            # Start as the pure shortcut (bilinear up-sampling of z); the trunk learns the residual.
            last = self.conv_out if self.conv_out is not None else self.up
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, z: Tensor, seq: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.blocks:
            h = block(h, seq)
        h = F.pixel_shuffle(self.up(F.silu(self.norm_up(h))), 2)
        if self.conv_out is not None:
            for block in self.full_blocks:
                h = block(h, seq)
            h = self.conv_out(F.silu(self.norm_out(h)))
        if self.shortcut:
            h = h + channel_to_space_shortcut(z, h.shape[1])
        return h


class ConditionalVAE(nn.Module):
    """The paper's CVAE: ``encode(x, seq) -> (mu, logvar)``, ``decode(z, seq) -> x_hat``.

    Shapes: ``x`` float32 ``B x 2 x 96 x 96`` ([real, imag]); ``seq`` long ``(B,)`` in
    ``[0, num_sequences)``; ``mu``/``logvar``/``z`` float32 ``B x 2 x 48 x 48``.
    """

    def __init__(self, spec: AutoencoderSpec | None = None):
        super().__init__()
        self.spec = spec or AutoencoderSpec()
        if self.spec.patch_size % 2:
            raise ValueError(f"patch_size must be even, got {self.spec.patch_size}")
        self.encoder = Encoder(self.spec)
        self.decoder = Decoder(self.spec)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.spec.latent_shape

    def _check(self, t: Tensor, shape: tuple[int, int, int], what: str) -> None:
        if not isinstance(t, Tensor) or t.ndim != 4 or tuple(t.shape[1:]) != shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what} must have shape (B, {', '.join(map(str, shape))}), got {got}")
        if not t.is_floating_point():
            raise ValueError(f"{what} must be a floating-point tensor ([real, imag] channels), got {t.dtype}")

    def encode(self, x: Tensor, seq: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each ``B x 2 x 48 x 48`` (logvar clamped to [-30, 20]).

        Raises:
            ValueError: ``x`` is not ``B x 2 x 96 x 96`` floating point, or ``seq`` is not a valid
                ``(B,)`` integer tensor.
        """
        s = self.spec
        self._check(x, (s.in_channels, s.patch_size, s.patch_size), "input x")
        seq = check_tokens(seq, s.num_sequences, x.shape[0])
        return self.encoder(x, seq)

    def decode(self, z: Tensor, seq: Tensor) -> Tensor:
        """Reconstruction ``B x 2 x 96 x 96`` from a latent ``B x 2 x 48 x 48``.

        Raises:
            ValueError: wrong latent shape or condition.
        """
        self._check(z, self.latent_shape, "latent z")
        seq = check_tokens(seq, self.spec.num_sequences, z.shape[0])
        return self.decoder(z, seq)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)``."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: Tensor, seq: Tensor, sample: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_hat, mu, logvar)``; ``x_hat`` decodes a posterior draw (``sample``) or ``mu``."""
        mu, logvar = self.encode(x, seq)
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z, seq), mu, logvar

    def model_config(self) -> dict[str, Any]:
        """JSON description written beside the exported weights (see :func:`load_autoencoder`)."""
        return autoencoder_model_config(self.spec)


def autoencoder_model_config(spec: AutoencoderSpec) -> dict[str, Any]:
    """The JSON model config of a network with ``spec`` (kind, sizes, sequence order)."""
    return {"kind": MODEL_KIND, "spec": spec.to_dict(), "sequences": list(SEQUENCES)}


def build_autoencoder(model_config: dict[str, Any]) -> ConditionalVAE:
    """A fresh network from a :meth:`ConditionalVAE.model_config` dict (or a bare spec dict)."""
    spec = model_config.get("spec", model_config)
    return ConditionalVAE(AutoencoderSpec.from_dict(spec))


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> ConditionalVAE:
    """The trained autoencoder (EMA weights) in ``eval()`` mode, gradients off.

    Args:
        path: the autoencoder run folder (``RUN/autoencoder``, holding ``ema.safetensors`` and
            ``ema.json``) or a ``.safetensors`` file whose metadata carries the model config
            (every file the training engine exports does).
        device: where to put the model.
    Raises:
        DataError: no weights, no model config, a config of another model kind, or weights that do
            not fit the config.
    """
    from magphase.models.weights import (
        EMA_INFO_NAME,
        EMA_WEIGHTS_NAME,
        load_ema_weights,
        read_weights_metadata,
    )

    path = Path(path)
    weights = path / EMA_WEIGHTS_NAME if path.is_dir() else path
    if not weights.is_file():
        raise DataError(
            weights, None, "autoencoder weights not found (train it with magphase train-autoencoder)"
        )
    info_path = weights.parent / EMA_INFO_NAME
    model_config: dict[str, Any] | None = None
    if path.is_dir() and info_path.is_file():
        try:
            model_config = json.loads(info_path.read_text()).get("model_config")
        except json.JSONDecodeError as exc:
            raise DataError(info_path, None, f"not valid JSON: {exc}") from exc
    if not model_config:
        model_config = read_weights_metadata(weights).get("model_config")
    if not model_config or model_config.get("kind") != MODEL_KIND:
        raise DataError(weights, "model_config", f"not a magphase autoencoder (expected kind {MODEL_KIND!r})")
    model = build_autoencoder(model_config)
    state = load_ema_weights(weights, device="cpu")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(weights, "weights", f"do not match the model config: {exc}") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return model


__all__ = [
    "LOGVAR_RANGE",
    "MODEL_KIND",
    "AutoencoderSpec",
    "ConditionalVAE",
    "Decoder",
    "Encoder",
    "FiLMResBlock",
    "autoencoder_model_config",
    "build_autoencoder",
    "load_autoencoder",
]
